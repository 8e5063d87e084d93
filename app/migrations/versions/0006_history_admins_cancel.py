"""job history, admin users, cancel requests of running jobs

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
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('cancel_requested_at', Timestamp, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('cancel_requested_at')
    with op.batch_alter_table('users') as batch:
        batch.drop_column('is_admin')
    op.drop_index('ix_job_events_kind_at', table_name='job_events')
    op.drop_index('ix_job_events_job_seq', table_name='job_events')
    op.drop_table('job_events')
