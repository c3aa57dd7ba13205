"""The domain: pure rules and types, no I/O (no files, no processes, no network)."""
