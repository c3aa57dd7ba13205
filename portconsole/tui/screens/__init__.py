"""The console's screens: overview, host detail, triage, history, audit, and dialogs."""
