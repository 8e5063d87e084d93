"""The dashboard's browser sessions (app/dashboard): opened with an admin's API token, named by a
random id that only the browser's cookie holds (the store keeps its SHA-256, as for tokens).
A session is valid until it expires or is closed (logout), and only while its token is neither
revoked nor expired and its user is still an admin."""
from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Optional

from sqlalchemy import and_, delete, insert, or_, select
from sqlalchemy.engine import Engine

from .schema import api_tokens, dashboard_sessions, users
from .users import hash_token, utcnow


def open_session(engine: Engine, token_id: int, lasts: timedelta) -> str:
    """A new session for the token ``token_id``: its id (to the browser, never stored)."""
    session_id = secrets.token_urlsafe(32)
    now = utcnow()
    with engine.begin() as conn:
        # Expired sessions go as new ones come: the table holds the live ones and a few more.
        conn.execute(delete(dashboard_sessions).where(dashboard_sessions.c.expires_at <= now))
        conn.execute(insert(dashboard_sessions).values(id_hash=hash_token(session_id), token_id=token_id,
                                                       created_at=now, expires_at=now + lasts))
    return session_id


def session_admin(engine: Engine, session_id: str) -> Optional[str]:
    """The admin's name when ``session_id`` is a live session of a valid admin token, else None."""
    now = utcnow()
    query = (select(users.c.name)
             .select_from(dashboard_sessions.join(api_tokens, api_tokens.c.id == dashboard_sessions.c.token_id)
                          .join(users, users.c.id == api_tokens.c.user_id))
             .where(dashboard_sessions.c.id_hash == hash_token(session_id), dashboard_sessions.c.expires_at > now,
                    api_tokens.c.revoked_at.is_(None),
                    or_(api_tokens.c.expires_at.is_(None), api_tokens.c.expires_at > now),
                    and_(users.c.is_admin.is_(True))))
    with engine.connect() as conn:
        return conn.execute(query).scalar()


def close_session(engine: Engine, session_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(delete(dashboard_sessions).where(dashboard_sessions.c.id_hash == hash_token(session_id)))
