"""Users and their API tokens. Tokens are random, shown once, and stored only as SHA-256 digests."""
from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timezone
from typing import Optional, Tuple

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from .schema import api_tokens, users

TOKEN_PREFIX = "jl_"


def utcnow() -> datetime:
    """Naive UTC: every backend stores it the same way (MSSQL DATETIME has no zone)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def hash_token(token: str) -> str:
    """A fast hash is right here: tokens carry 256 random bits, so there is nothing to brute-force."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_token(engine: Engine, name: str) -> Tuple[int, str, bool]:
    """Create user ``name`` if missing and give it a new token. Returns (user id, token, created)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    with engine.begin() as conn:
        user_id = conn.execute(select(users.c.id).where(users.c.name == name)).scalar()
        created = user_id is None
        if created:
            user_id = conn.execute(insert(users).values(name=name, created_at=now)).inserted_primary_key[0]
        conn.execute(
            insert(api_tokens).values(user_id=user_id, token_hash=hash_token(token), created_at=now)
        )
    return int(user_id), token, created


def user_for_token(engine: Engine, token: str) -> Optional[Tuple[int, str]]:
    """(user id, name) for a valid token, else None."""
    query = (
        select(users.c.id, users.c.name)
        .select_from(api_tokens.join(users, api_tokens.c.user_id == users.c.id))
        .where(api_tokens.c.token_hash == hash_token(token))
    )
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return (int(row.id), row.name) if row else None
