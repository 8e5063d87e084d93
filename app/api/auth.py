"""Bearer-token authentication for the /v1/jobs routes."""
from __future__ import annotations

from flask import current_app, g, request

from ..store.users import user_for_token
from .errors import api_abort

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="joblab"'}


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
    found = user_for_token(current_app.extensions["joblab_db"].engine, token.strip())
    if found is None:
        api_abort(401, "invalid token", headers=CHALLENGE)
    g.user_id, g.user_name = found
