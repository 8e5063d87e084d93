"""/dashboard: the operators' window, server-rendered (Flask templates, no JavaScript), for admin
users only (`flask --app app users create NAME --admin`); anyone else gets 404 there.

A browser gets in through /dashboard/login, which takes an admin's API token and opens a session
(app/store/sessions.py): a random id in a cookie (HttpOnly, SameSite=Strict, Secure unless
DASHBOARD_SECURE_COOKIE is off, Path=/dashboard), its hash in the store; it ends at logout, after
LOGIN_SECONDS, or when the token is revoked or the user is no longer an admin. API clients may
send the token as `Authorization: Bearer` instead. Every form that changes something carries a
CSRF token derived from the session id (an HMAC nobody without the cookie can compute; the store
keeps only the id's hash), and every such action is logged with the admin's name."""
from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any, Optional, Tuple

from flask import Blueprint, abort, current_app, g, redirect, request, url_for

from ..api.auth import check
from ..store.sessions import session_admin
from ..store.users import TokenCheck, is_admin

log = logging.getLogger("dashboard")

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard")

#: The cookie holding a browser's session id.
COOKIE = "joblab_dashboard"
#: How long a session lasts (s).
LOGIN_SECONDS = 8 * 3600


def _engine() -> Any:
    return current_app.extensions["joblab_db"].engine


def admin_token(token: Optional[str]) -> Optional[TokenCheck]:
    """The token's check when ``token`` is a valid admin's token, else None."""
    if not token or len(token) > 256:
        return None
    found = check(token)
    if found is None or found.problem is not None or not is_admin(_engine(), found.user_id):
        return None
    return found


def who() -> Tuple[Optional[str], Optional[str]]:
    """(admin name, the secret the CSRF token derives from) of this request, or (None, None): a
    bearer token, else the session cookie."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        found = admin_token(token.strip())
        return (found.name, token.strip()) if found is not None else (None, None)
    session_id = request.cookies.get(COOKIE, "")
    if not session_id or len(session_id) > 128:
        return None, None
    name = session_admin(_engine(), session_id)
    return (name, session_id) if name is not None else (None, None)


def csrf_token(secret: str) -> str:
    return hmac.new(secret.encode(), b"joblab-dashboard-csrf", hashlib.sha256).hexdigest()


@bp.before_request
def require_admin() -> Any:
    """Sets ``g.admin`` (name), ``g.secret`` and ``g.csrf``; anyone who is not an admin gets 404,
    as if there were no dashboard. The login form is open to all."""
    if request.endpoint in ("dashboard.login", "dashboard.login_form"):
        return None
    name, secret = who()
    if name is None or secret is None:
        nothing = not request.cookies.get(COOKIE) and not request.headers.get("Authorization")
        if nothing and request.method == "GET" and request.endpoint == "dashboard.index":
            return redirect(url_for("dashboard.login_form"), 303)  # no session yet: log in first
        abort(404)
    g.admin, g.secret, g.csrf = name, secret, csrf_token(secret)
    if request.method == "POST" and not hmac.compare_digest(request.form.get("csrf", ""), g.csrf):
        log.warning("dashboard: %s %s by admin %r refused: bad or missing CSRF token", request.method, request.path,
                    name)
        abort(403)
    return None


from . import views  # noqa: E402,F401  (the routes, on bp)
