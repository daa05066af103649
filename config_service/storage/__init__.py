"""ConfigService tables and repositories."""
