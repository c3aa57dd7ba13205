"""Adapters: the journal and its projections, nmap, apprise, files."""
