"""Alembic, configured in code: the migrations ship inside the package, no alembic.ini to deploy."""
from __future__ import annotations

import os

from alembic import command
from alembic.config import Config

MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS)
    # Passed as an attribute, not an option: ConfigParser would choke on the '%' of encoded passwords.
    cfg.attributes["url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Create or upgrade the schema of the store at ``url`` (idempotent)."""
    command.upgrade(alembic_config(url), revision)


def current(url: str) -> None:
    command.current(alembic_config(url))
