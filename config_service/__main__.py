"""`python -m config_service [serve|migrate]`."""

from config_service import app
from config_service.settings import ConfigServiceSettings
from config_service.storage import migrate
from shared.app import run_cli

if __name__ == "__main__":
    run_cli(
        "python -m config_service",
        ConfigServiceSettings,
        app.build,
        lambda settings: migrate.upgrade(settings.database),
    )
