"""timestamps as DATETIME2 on SQL Server

sa.DateTime is DATETIME on SQL Server, which keeps time in steps of 1/300 s: a job created at
...42.022 read back as ...42.023, so the 202 and every later GET disagreed. DATETIME2 keeps what the
app writes (whole milliseconds) exactly. PostgreSQL's and SQLite's types keep microseconds already:
nothing to do there. None of these columns is indexed or has a default, so SQL Server alters each in
place (existing values convert exactly: DATETIME2 is finer than DATETIME).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 18:00:00
"""
from alembic import op
from sqlalchemy.dialects import mssql


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

# table -> [(column, nullable)]: every timestamp of the schema (app/store/schema.py, Timestamp).
COLUMNS = {
    'users': [('created_at', False)],
    'api_tokens': [('created_at', False), ('expires_at', True), ('revoked_at', True), ('last_used_at', True)],
    'jobs': [('created_at', False), ('started_at', True), ('finished_at', True), ('updated_at', False)],
    'results': [('created_at', False)],
    'outbox': [('lease_until', False), ('created_at', False)],
    'idempotency_keys': [('created_at', False)],
}


def _alter(from_type, to_type) -> None:
    if op.get_bind().dialect.name != 'mssql':
        return
    for table, columns in COLUMNS.items():
        for name, nullable in columns:
            op.alter_column(table, name, existing_type=from_type, type_=to_type, existing_nullable=nullable)


def upgrade() -> None:
    _alter(mssql.DATETIME(), mssql.DATETIME2())


def downgrade() -> None:
    _alter(mssql.DATETIME2(), mssql.DATETIME())
