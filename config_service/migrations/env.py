"""Alembic environment for ConfigService's tables."""

from typing import cast

from alembic import context
from alembic.runtime.environment import EnvironmentContext

from config_service.storage.models import Base
from shared.db.migrate import run_env

run_env(cast(EnvironmentContext, context), Base.metadata)
