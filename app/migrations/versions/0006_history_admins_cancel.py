"""job history, admin users and their dashboard sessions, cancel requests of running jobs

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 07:00:00
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mssql


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

# As app/store/schema.py: DATETIME2 on SQL Server (see 0005).
Timestamp = sa.DateTime().with_variant(mssql.DATETIME2(), 'mssql')
BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('job_events',
    sa.Column('seq', BigId, autoincrement=True, nullable=False),
    sa.Column('job_id', sa.String(length=36), nullable=False),
    sa.Column('at', Timestamp, nullable=False),
    sa.Column('kind', sa.String(length=24), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=True),
    sa.Column('actor', sa.String(length=128), nullable=True),
    sa.Column('kafka_topic', sa.String(length=255), nullable=True),
    sa.Column('kafka_partition', sa.Integer(), nullable=True),
    sa.Column('kafka_offset', sa.BigInteger(), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_job_events'))
    )
    op.create_index('ix_job_events_job_seq', 'job_events', ['job_id', 'seq'], unique=False)
    op.create_index('ix_job_events_kind_at', 'job_events', ['kind', 'at'], unique=False)
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('is_admin', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_table('dashboard_sessions',
    sa.Column('id_hash', sa.String(length=64), nullable=False),
    sa.Column('token_id', BigId, nullable=False),
    sa.Column('created_at', Timestamp, nullable=False),
    sa.Column('expires_at', Timestamp, nullable=False),
    sa.ForeignKeyConstraint(['token_id'], ['api_tokens.id'], name=op.f('fk_dashboard_sessions_token_id_api_tokens')),
    sa.PrimaryKeyConstraint('id_hash', name=op.f('pk_dashboard_sessions'))
    )
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('cancel_requested_at', Timestamp, nullable=True))
    # (status) becomes (status, finished_at): still every lookup by state, and the latest failures.
    op.create_index('ix_jobs_status_finished', 'jobs', ['status', 'finished_at'], unique=False)
    op.drop_index('ix_jobs_status', table_name='jobs')


def downgrade() -> None:
    op.create_index('ix_jobs_status', 'jobs', ['status'], unique=False)
    op.drop_index('ix_jobs_status_finished', table_name='jobs')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('cancel_requested_at')
    op.drop_table('dashboard_sessions')
    with op.batch_alter_table('users') as batch:
        batch.drop_column('is_admin', mssql_drop_default=True)
    op.drop_index('ix_job_events_kind_at', table_name='job_events')
    op.drop_index('ix_job_events_job_seq', table_name='job_events')
    op.drop_table('job_events')
