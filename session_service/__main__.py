"""`python -m session_service [serve|migrate]`."""

from session_service import app
from session_service.settings import SessionServiceSettings
from session_service.storage import migrate
from shared.app import run_cli

if __name__ == "__main__":
    run_cli(
        "python -m session_service",
        SessionServiceSettings,
        app.build,
        lambda settings: migrate.upgrade(settings.database),
    )
