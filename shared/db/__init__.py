"""Storage plumbing: engines, units of work, column types and migrations."""
