"""Services: the scan cycle, supervision, queries and evidence, over the adapters."""
