"""The results store: SQLAlchemy Core tables, an engine per URL, and the queries app and worker share."""
from .db import Database, make_engine, store_unavailable
from .schema import metadata

__all__ = ["Database", "make_engine", "metadata", "store_unavailable"]
