"""Tables of the results store. Alembic migrations in app/migrations are generated from these."""
from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    false,
)
from sqlalchemy.dialects import mssql

# Named constraints so Alembic can alter them on every backend (MSSQL and PostgreSQL need names).
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only auto-increments INTEGER PRIMARY KEY, so BIGINT becomes INTEGER there.
BigId = BigInteger().with_variant(Integer(), "sqlite")
# Naive UTC times. DateTime is DATETIME on SQL Server, which keeps time in steps of 1/300 s (a value
# written as ...42.022 reads back as ...42.023): DATETIME2 keeps what the app writes (milliseconds,
# app/store/users.py utcnow) exactly, as PostgreSQL's and SQLite's types do (migration 0005).
Timestamp = DateTime().with_variant(mssql.DATETIME2(), "mssql")

users = Table(
    "users",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("created_at", Timestamp, nullable=False),
    # Admins see /dashboard (every user's jobs) and may replay dead letters: `users create NAME --admin`.
    Column("is_admin", Boolean, nullable=False, default=False, server_default=false()),
)

# API tokens are stored as SHA-256 hex digests: a leaked table does not leak usable tokens.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("user_id", BigId, ForeignKey("users.id"), nullable=False, index=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    # The token's first characters (TOKEN_PREFIX + 8): names a token in `users list` and `users revoke`
    # without revealing it (48 random bits: useless to a guesser). NULL for tokens made before 0002.
    Column("prefix", String(16), nullable=True),
    Column("created_at", Timestamp, nullable=False),
    # NULL: never expires.
    Column("expires_at", Timestamp, nullable=True),
    # Set by `users revoke`: the token answers 401 from then on.
    Column("revoked_at", Timestamp, nullable=True),
    # Written at most once a minute per process (app/store/users.py), not on every request.
    Column("last_used_at", Timestamp, nullable=True),
)

# `seq` orders jobs (newest first, cursor pagination); `id` is the public job token.
jobs = Table(
    "jobs",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False, unique=True),
    Column("user_id", BigId, ForeignKey("users.id"), nullable=False),
    Column("type", String(64), nullable=False),
    Column("args", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    # Claims that found the job still `running`: its worker died mid-job (SIGKILL, OOM) or another
    # delivery is running it. Once the attempts are used up, such a job is failed, never run again.
    Column("crashes", Integer, nullable=False, default=0, server_default="0"),
    # The attempt number of the message behind the current claim: a redelivery of an older
    # attempt's message must not take (or give up) a job a newer attempt is running.
    Column("claim_attempt", Integer, nullable=False, default=0, server_default="0"),
    Column("error", Text, nullable=True),
    Column("created_at", Timestamp, nullable=False),
    Column("started_at", Timestamp, nullable=True),
    Column("finished_at", Timestamp, nullable=True),
    Column("updated_at", Timestamp, nullable=False),
    # Set by POST /v1/jobs/<id>/cancel on a running job: the job may look (worker/context.py), its
    # timeout ends it at the latest, and its attempt then ends `cancelled`.
    Column("cancel_requested_at", Timestamp, nullable=True),
    Index("ix_jobs_user_seq", "user_id", "seq"),
    # Jobs by state (the sweep's queued, the running count); the dashboard's latest failures.
    Index("ix_jobs_status_finished", "status", "finished_at"),
    # The per-user quota counts a user's queued + running jobs on every submit.
    Index("ix_jobs_user_status", "user_id", "status"),
)

# One row per job at most: the primary key is what makes a re-delivered job harmless.
results = Table(
    "results",
    metadata,
    Column("job_id", String(36), ForeignKey("jobs.id"), primary_key=True),
    Column("result", Text, nullable=False),
    Column("created_at", Timestamp, nullable=False),
)

# Messages a worker decided to publish (retry, status event, dead letter), written in the same
# transaction as the job's state change, deleted once Kafka acknowledged them. A worker that dies
# in between leaves them here; after `lease_until` any worker publishes them (app/store/outbox.py).
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("topic", String(255), nullable=False),
    Column("key", String(64), nullable=False),
    # Raw bytes: a dead letter carries the original record as it was, UTF-8 or not.
    Column("value", LargeBinary, nullable=True),
    # JSON list of [name, text] pairs (every header we write is text).
    Column("headers", Text, nullable=True),
    Column("job_id", String(36), nullable=True, index=True),
    Column("owner", String(64), nullable=False),
    Column("lease_until", Timestamp, nullable=False),
    Column("created_at", Timestamp, nullable=False),
)

# A client's Idempotency-Key (per user): a retried submit with the same key gets the jobs the
# first one made, not new ones. `request_hash` tells a retry from a different request reusing
# the key. Keys expire (app.store.jobs.IDEMPOTENCY_TTL).
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("user_id", BigId, ForeignKey("users.id"), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("job_ids", Text, nullable=False),
    Column("created_at", Timestamp, nullable=False),
)

# Each job's life, append-only (app/store/history.py): one row per step, written in the same
# transaction as the state change it records. `seq` orders a job's rows.
job_events = Table(
    "job_events",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=True),
    Column("job_id", String(36), nullable=False),
    Column("at", Timestamp, nullable=False),
    # submitted, enqueued, claimed, released, retried, succeeded, failed, cancel_requested,
    # cancelled, resent, replayed (app/store/history.py EVENTS).
    Column("kind", String(24), nullable=False),
    Column("attempt", Integer, nullable=True),
    # Who: a worker (host:pid), or the user/admin behind a cancel or a replay.
    Column("actor", String(128), nullable=True),
    # Where the claimed record was (topic, partition, offset).
    Column("kafka_topic", String(255), nullable=True),
    Column("kafka_partition", Integer, nullable=True),
    Column("kafka_offset", BigInteger, nullable=True),
    # The error, the retry's delay, what a replay reset: short text for people.
    Column("detail", Text, nullable=True),
    Index("ix_job_events_job_seq", "job_id", "seq"),
    # The dashboard's "last hour" chart and latest failures read by time.
    Index("ix_job_events_kind_at", "kind", "at"),
)

# The dashboard's browser sessions: a random id in the browser's cookie, its SHA-256 here. A session
# lasts until it expires or its admin logs out, and only while the token it was opened with is
# valid and its user is still an admin (app/store/sessions.py).
dashboard_sessions = Table(
    "dashboard_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("token_id", BigId, ForeignKey("api_tokens.id"), nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("expires_at", Timestamp, nullable=False),
)
