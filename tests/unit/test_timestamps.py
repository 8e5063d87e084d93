"""Timestamps on SQL Server are DATETIME2 (DATETIME rounds to 1/300 s: a time the app handed out
read back changed), in the schema and through migration 0005 for stores made before it; the app
makes times in whole milliseconds, which every store keeps exactly. (The 202-versus-GET round
trip on real stores: tests/integration/test_time_roundtrip.py.)"""
from __future__ import annotations

import importlib.util
import io
import os
import re

from alembic import command
from sqlalchemy.dialects import mssql
from sqlalchemy.schema import CreateTable

from app.migrate import MIGRATIONS, alembic_config
from app.store import schema
from app.store.users import utcnow

MIGRATION = os.path.join(MIGRATIONS, "versions", "0005_mssql_datetime2.py")


#: Time columns added after 0005, created as DATETIME2 by their own migration.
LATER = {("job_events", "at"), ("jobs", "cancel_requested_at"), ("dashboard_sessions", "created_at"),
         ("dashboard_sessions", "expires_at")}


def timestamp_columns(before_0006=False):
    found = {}
    for t in schema.metadata.sorted_tables:
        cols = sorted((c.name, c.nullable) for c in t.columns if c.type is schema.Timestamp
                      and not (before_0006 and (t.name, c.name) in LATER))
        if cols:
            found[t.name] = cols
    return found


def test_every_time_column_is_datetime2_on_sql_server():
    ddl = "\n".join(str(CreateTable(t).compile(dialect=mssql.dialect())) for t in schema.metadata.sorted_tables)
    assert re.findall(r"\bDATETIME\b(?!2)", ddl) == []
    assert ddl.count("DATETIME2") == sum(len(cols) for cols in timestamp_columns().values()) == 17


def test_migration_0005_converts_every_time_column_of_the_schema():
    spec = importlib.util.spec_from_file_location("m0005", MIGRATION)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert {t: sorted(cols) for t, cols in module.COLUMNS.items()} == timestamp_columns(before_0006=True)


def test_migration_0005_alters_them_on_sql_server_only(tmp_path):
    def offline_sql(url):
        cfg = alembic_config(url)
        cfg.output_buffer = io.StringIO()
        command.upgrade(cfg, "0004:0005", sql=True)
        return cfg.output_buffer.getvalue()

    sql = offline_sql("mssql+pymssql://u:p@127.0.0.1:1/db")
    alters = re.findall(r"ALTER TABLE (\w+) ALTER COLUMN (\w+) DATETIME2( NOT NULL| NULL)", sql)
    assert sorted((t, c, n.strip() == "NULL") for t, c, n in alters) == sorted(
        (t, c, nullable) for t, cols in timestamp_columns(before_0006=True).items() for c, nullable in cols)
    assert "ALTER" not in offline_sql("postgresql+psycopg://u:p@127.0.0.1:1/db")


def test_the_app_makes_times_in_whole_milliseconds():
    assert all(utcnow().microsecond % 1000 == 0 for _ in range(200))
