"""SessionService tables and repositories."""
