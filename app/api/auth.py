"""Bearer-token authentication for the /v1/jobs routes. A process remembers the tokens it looked up
for TOKEN_CACHE_SECONDS (2 s): an expired token is refused at once (expiry is checked at every
use), a revoked one within that bound."""
from __future__ import annotations

import logging
from typing import Optional

from flask import current_app, g, request
from sqlalchemy.exc import SQLAlchemyError

from ..store.users import LastUsed, TokenCache, TokenCheck
from .errors import api_abort

log = logging.getLogger(__name__)

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="joblab"'}


def check(token: str) -> Optional[TokenCheck]:
    """What the store says of ``token`` (through this process's cache); None when unknown.
    Also marks its use (for `users list`)."""
    engine = current_app.extensions["joblab_db"].engine
    cache = current_app.extensions.get("joblab_tokens")
    if cache is None:  # one per app (hence per store and process)
        cache = current_app.extensions.setdefault(
            "joblab_tokens", TokenCache(float(current_app.config["TOKEN_CACHE_SECONDS"])))
    found = cache.check(engine, token)
    if found is not None and found.problem is None:
        try:
            # One per app (hence per store and process): token ids are only unique within a store.
            current_app.extensions.setdefault("joblab_last_used", LastUsed()).seen(engine, found.token_id)
        except SQLAlchemyError as exc:  # bookkeeping for `users list`: never a reason to refuse a request
            log.warning("recording the last use of token %d failed: %s", found.token_id, exc.__class__.__name__)
    return found


def require_user() -> None:
    """before_request hook: sets ``g.user_id``/``g.user_name`` or answers 401."""
    if request.method == "OPTIONS":
        return
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        api_abort(401, "missing Authorization header (expected: Bearer <token>)", headers=CHALLENGE)
    if scheme.lower() != "bearer" or not token.strip():
        api_abort(401, "Authorization header must be: Bearer <token>", headers=CHALLENGE)
    found = check(token.strip())
    if found is None:
        api_abort(401, "invalid token", headers=CHALLENGE)
    if found.problem is not None:
        # RFC 6750 §3: say why, so a client knows to get a new token rather than retry.
        api_abort(401, found.problem, headers={
            "WWW-Authenticate": 'Bearer realm="joblab", error="invalid_token", error_description="%s"' % found.problem})
    g.user_id, g.user_name = found.user_id, found.name
