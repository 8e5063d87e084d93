"""/dashboard: the operators' window, server-rendered (Flask templates, no JavaScript), for admin
users only (`flask --app app users create NAME --admin`); anyone else gets 404 there.

A browser gets in through /dashboard/login, which takes an admin's API token and keeps it in a
cookie (HttpOnly, SameSite=Strict, Secure unless DASHBOARD_SECURE_COOKIE is off, Path=/dashboard).
API clients may send the token as `Authorization: Bearer` instead. Every form that changes
something carries a CSRF token derived from the session's token (an HMAC no other site can
compute), and every such action is logged with the admin's name."""
from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any, Optional

from flask import Blueprint, abort, current_app, g, redirect, request, url_for

from ..api.auth import check
from ..store.users import is_admin

log = logging.getLogger("dashboard")

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard")

#: The cookie holding a browser's token.
COOKIE = "joblab_dashboard"
#: How long a login lasts (s).
LOGIN_SECONDS = 8 * 3600


def token_of_request() -> Optional[str]:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.cookies.get(COOKIE) or None


def admin_token(token: Optional[str]) -> Optional[str]:
    """The admin's name when ``token`` is a valid admin's token, else None."""
    if not token or len(token) > 256:
        return None
    found = check(token)
    if found is None or found.problem is not None:
        return None
    if not is_admin(current_app.extensions["joblab_db"].engine, found.user_id):
        return None
    return found.name


def csrf_token(token: str) -> str:
    """Bound to the session's token: a page of another site can neither read nor compute it."""
    return hmac.new(hashlib.sha256(token.encode()).digest(), b"joblab-dashboard-csrf", hashlib.sha256).hexdigest()


@bp.before_request
def require_admin() -> Any:
    """Sets ``g.admin`` (name) and ``g.csrf``; anyone who is not an admin gets 404, as if there
    were no dashboard. The login form is open to all."""
    if request.endpoint in ("dashboard.login", "dashboard.login_form"):
        return None
    token = token_of_request()
    name = admin_token(token)
    if name is None or token is None:
        if token is None and request.method == "GET" and request.endpoint == "dashboard.index":
            return redirect(url_for("dashboard.login_form"), 303)  # no session yet: log in first
        abort(404)
    g.admin, g.csrf = name, csrf_token(token)
    if request.method == "POST" and not hmac.compare_digest(request.form.get("csrf", ""), g.csrf):
        log.warning("dashboard: %s %s by admin %r refused: bad or missing CSRF token", request.method, request.path,
                    name)
        abort(403)
    return None


from . import views  # noqa: E402,F401  (the routes, on bp)
