"""Bundle documents: split, hardened YAML loading, schema checks and a summary (no I/O)."""
