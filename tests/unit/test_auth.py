"""Tokens over HTTP: expiry and revocation take effect on the next request; last use is recorded
without a write per request."""
from datetime import timedelta

from sqlalchemy import select, update

from app.store.schema import api_tokens
from app.store.users import issue_token, revoke_tokens, utcnow
from tests.unit.test_api import assert_error, engine


def bearer(token):
    return {"Authorization": "Bearer " + token}


def test_expired_token_is_401_naming_why(client, app, monkeypatch):
    from app.store import users

    _uid, token, _ = issue_token(engine(app), "eve", expires_in=timedelta(days=30))
    assert client.get("/v1/jobs", headers=bearer(token)).status_code == 200
    later = utcnow() + timedelta(days=30, seconds=1)
    monkeypatch.setattr(users, "utcnow", lambda: later)  # thirty days on: expiry is checked at each use
    resp = client.get("/v1/jobs", headers=bearer(token))
    assert assert_error(resp, 401)["message"] == "token expired"
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]


def test_revocation_takes_effect_on_the_next_request_without_a_token_cache(make_app, sqlite_url):
    app = make_app(sqlite_url, TOKEN_CACHE_SECONDS=0)
    client = app.test_client()
    _uid, token, _ = issue_token(engine(app), "eve")
    _uid, kept, _ = issue_token(engine(app), "eve")
    assert client.get("/v1/jobs", headers=bearer(token)).status_code == 200
    assert revoke_tokens(engine(app), "eve", token[:11]) == 1
    assert assert_error(client.get("/v1/jobs", headers=bearer(token)), 401)["message"] == "token revoked"
    assert client.get("/v1/jobs", headers=bearer(kept)).status_code == 200  # only that one
    assert revoke_tokens(engine(app), "eve") == 1
    assert assert_error(client.get("/v1/jobs", headers=bearer(kept)), 401)["message"] == "token revoked"


def test_revocation_takes_effect_within_the_token_cache_bound(client, app):
    from app.store.users import TokenCache

    now = [1000.0]
    app.extensions["joblab_tokens"] = TokenCache(2.0, clock=lambda: now[0])
    _uid, token, _ = issue_token(engine(app), "eve")
    assert client.get("/v1/jobs", headers=bearer(token)).status_code == 200
    revoke_tokens(engine(app), "eve")
    now[0] += 1.9
    assert client.get("/v1/jobs", headers=bearer(token)).status_code == 200  # remembered, within the bound
    now[0] += 0.2
    assert assert_error(client.get("/v1/jobs", headers=bearer(token)), 401)["message"] == "token revoked"


def test_unknown_token_is_still_just_invalid(client):
    assert assert_error(client.get("/v1/jobs", headers=bearer("jl_never-issued")), 401)["message"] == "invalid token"


def last_used(app):
    with engine(app).connect() as conn:
        return conn.execute(select(api_tokens.c.last_used_at)).scalar()


def test_last_use_is_recorded_once_a_minute_not_per_request(client, app):
    _uid, token, _ = issue_token(engine(app), "eve")
    assert last_used(app) is None
    assert client.get("/v1/jobs", headers=bearer(token)).status_code == 200
    assert last_used(app) is not None
    with engine(app).begin() as conn:
        conn.execute(update(api_tokens).values(last_used_at=None))
    for _ in range(4):  # within the minute: no further writes
        assert client.get("/v1/jobs", headers=bearer(token)).status_code == 200
    assert last_used(app) is None
