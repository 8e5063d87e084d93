"""One log format for the app and the worker: ``time level logger: message``."""
from __future__ import annotations

import logging
import os


def configure_logging() -> None:
    """Set up root logging once (gunicorn's own handlers are left alone when present)."""
    level = os.environ.get("JOBLAB_LOG_LEVEL", "INFO").upper()
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    # kafka-python logs every reconnect attempt at INFO; keep its warnings and errors only.
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLogger().level))
    # Alembic announces each of its plugins at INFO on every run.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
