"""Alembic environment: runs migrations against the URL app.migrate passes in."""
from alembic import context

from app.store.db import make_engine
from app.store.schema import metadata

url = context.config.attributes["url"]


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
            context.configure(
                connection=conn, target_metadata=metadata, render_as_batch=conn.dialect.name == "sqlite"
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
