"""PortConsole: continuous port monitoring that proves compliance."""

__version__ = "0.1.0"
