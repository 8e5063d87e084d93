"""Users and their API tokens. Tokens are random, shown once, and stored only as SHA-256 digests,
with a short non-secret prefix that names them. A token may expire; `users revoke` ends it at once."""
from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, List, Optional, Tuple

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine

from .schema import api_tokens, users

TOKEN_PREFIX = "jl_"
#: Characters of a token kept in clear to name it: TOKEN_PREFIX + 8 (48 random bits).
PREFIX_LENGTH = len(TOKEN_PREFIX) + 8
#: User names: printable, no spaces or line breaks (they appear in logs and tables).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
#: A token's last use is written at most this often per process: one UPDATE a minute, not one a request.
LAST_USED_EVERY_SECONDS = 60.0
#: The shortest prefix `users revoke` takes: TOKEN_PREFIX alone would name every token.
MIN_PREFIX_GIVEN = len(TOKEN_PREFIX) + 4


def utcnow() -> datetime:
    """Naive UTC (SQL Server's DATETIME2 has no zone), in whole milliseconds: the precision every
    supported store keeps exactly (pymssql sends no finer) and the API shows, so a time the app
    hands out - in a 202, say - is what every later read returns, on every store."""
    now = datetime.now(timezone.utc)
    return now.replace(tzinfo=None, microsecond=now.microsecond // 1000 * 1000)


def hash_token(token: str) -> str:
    """A fast hash is right here: tokens carry 256 random bits, so there is nothing to brute-force."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def valid_name(name: str) -> bool:
    return NAME_PATTERN.fullmatch(name) is not None


def issue_token(engine: Engine, name: str, expires_in: Optional[timedelta] = None,
                admin: bool = False) -> Tuple[int, str, bool]:
    """Create user ``name`` if missing and give it a new token (expiring after ``expires_in``, or
    never); with ``admin``, the user is an admin from now on (an existing one too). Returns
    (user id, token, created)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    with engine.begin() as conn:
        user_id = conn.execute(select(users.c.id).where(users.c.name == name)).scalar()
        created = user_id is None
        if created:
            user_id = conn.execute(insert(users).values(name=name, created_at=now, is_admin=admin)).inserted_primary_key[0]
        elif admin:
            conn.execute(update(users).where(users.c.id == user_id).values(is_admin=True))
        conn.execute(insert(api_tokens).values(
            user_id=user_id, token_hash=hash_token(token), prefix=token[:PREFIX_LENGTH], created_at=now,
            expires_at=None if expires_in is None else now + expires_in,
        ))
    return int(user_id), token, created


def is_admin(engine: Engine, user_id: int) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(select(users.c.is_admin).where(users.c.id == user_id)).scalar())


@dataclass(frozen=True)
class TokenCheck:
    """What a presented token is; ``problem`` is None for a usable one (now), else why not."""

    user_id: int
    name: str
    token_id: int
    expires_at: Optional[datetime]
    revoked: bool

    @property
    def problem(self) -> Optional[str]:
        if self.revoked:
            return "token revoked"
        if self.expires_at is not None and self.expires_at <= utcnow():
            return "token expired"
        return None


def _lookup(engine: Engine, digest: str) -> Optional[TokenCheck]:
    query = (
        select(users.c.id, users.c.name, api_tokens.c.id.label("token_id"), api_tokens.c.expires_at,
               api_tokens.c.revoked_at)
        .select_from(api_tokens.join(users, api_tokens.c.user_id == users.c.id))
        .where(api_tokens.c.token_hash == digest)
    )
    with engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        return None
    return TokenCheck(int(row.id), row.name, int(row.token_id), row.expires_at, row.revoked_at is not None)


def check_token(engine: Engine, token: str) -> Optional[TokenCheck]:
    """The token's owner and whether it may be used now; None for a token that was never issued."""
    return _lookup(engine, hash_token(token))


class TokenCache:
    """check_token with a memory of ``seconds`` per process: most requests need no query. Expiry
    is still exact (checked at each use); a revocation takes effect within ``seconds``. Unknown
    tokens are not remembered (nothing for a client to fill), and at most ``size`` known ones are."""

    def __init__(self, seconds: float, size: int = 10000, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.size = size
        self.clock = clock
        self._entries: "OrderedDict[str, Tuple[TokenCheck, float]]" = OrderedDict()
        self._lock = threading.Lock()

    def check(self, engine: Engine, token: str) -> Optional[TokenCheck]:
        digest = hash_token(token)
        if self.seconds > 0:
            with self._lock:
                hit = self._entries.get(digest)
            if hit is not None and self.clock() - hit[1] < self.seconds:
                return hit[0]
        found = _lookup(engine, digest)
        if found is not None and self.seconds > 0:
            with self._lock:
                self._entries[digest] = (found, self.clock())
                self._entries.move_to_end(digest)
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
        return found


def user_for_token(engine: Engine, token: str) -> Optional[Tuple[int, str]]:
    """(user id, name) for a usable token (issued, not expired, not revoked), else None."""
    found = check_token(engine, token)
    return (found.user_id, found.name) if found is not None and found.problem is None else None


class LastUsed:
    """Records tokens' last use, throttled per process (the table is for people, not for auth)."""

    def __init__(self, every: float = LAST_USED_EVERY_SECONDS) -> None:
        self.every = every
        self._written: Dict[int, float] = {}
        self._lock = threading.Lock()

    def seen(self, engine: Engine, token_id: int) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._written.get(token_id, -self.every) < self.every:
                return
            self._written[token_id] = now
        with engine.begin() as conn:
            conn.execute(update(api_tokens).where(api_tokens.c.id == token_id).values(last_used_at=utcnow()))


class UnknownUser(LookupError):
    """No user of that name."""


def revoke_tokens(engine: Engine, name: str, prefix: Optional[str] = None) -> int:
    """Revoke all of user ``name``'s live tokens, or the one whose prefix (or whole token) is
    ``prefix``. Returns how many were revoked; raises UnknownUser, or ValueError when ``prefix``
    names no live token of the user or more than one."""
    now = utcnow()
    with engine.begin() as conn:
        user_id = conn.execute(select(users.c.id).where(users.c.name == name)).scalar()
        if user_id is None:
            raise UnknownUser(name)
        live = api_tokens.c.user_id == user_id, api_tokens.c.revoked_at.is_(None)
        if prefix is None:
            return conn.execute(update(api_tokens).where(*live).values(revoked_at=now)).rowcount
        rows = conn.execute(select(api_tokens.c.id, api_tokens.c.prefix, api_tokens.c.token_hash).where(*live)).all()
        # A whole token matches by its digest; anything shorter must be the start of a stored prefix.
        given = prefix.strip()
        matches = [r.id for r in rows if r.token_hash == hash_token(given) or (
            r.prefix and MIN_PREFIX_GIVEN <= len(given) <= len(r.prefix) and r.prefix.startswith(given))]
        if not matches:
            raise ValueError("user %s has no live token starting %r" % (name, prefix))
        if len(matches) > 1:
            raise ValueError("%d live tokens of user %s start %r; give more of the prefix" % (len(matches), name, prefix))
        conn.execute(update(api_tokens).where(api_tokens.c.id == matches[0]).values(revoked_at=now))
        return 1


def list_tokens(engine: Engine) -> List[Dict[str, Any]]:
    """Every user's tokens (users without one too): never the secret, only its prefix."""
    query = (
        select(users.c.name, api_tokens.c.prefix, api_tokens.c.created_at, api_tokens.c.expires_at,
               api_tokens.c.last_used_at, api_tokens.c.revoked_at)
        .select_from(users.outerjoin(api_tokens, api_tokens.c.user_id == users.c.id))
        .order_by(users.c.name, api_tokens.c.id)
    )
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]
