"""/dashboard through Flask's test client: admins only (everyone else 404), the login cookie's
flags, CSRF on every action, replay from a job's page and by type, history on the job page.
(The same pages in a real browser: tests/integration/test_dashboard_browser.py.)"""
import logging
import re

import pytest

from app.states import JobStatus
from app.store import history
from app.store import jobs as js
from app.store.users import issue_token
from tests.unit.doubles import handle, next_retry
from tests.unit.test_history import placed  # noqa: F401 (fixture)


@pytest.fixture
def admin(app):
    _uid, token, _ = issue_token(app.extensions["joblab_db"].engine, "root-admin", admin=True)
    return token


def login(client, token):
    return client.post("/dashboard/login", data={"token": token})


def csrf_of(page):
    return re.search(r'name="csrf" value="([0-9a-f]+)"', page.get_data(as_text=True)).group(1)


def test_only_admins_see_the_dashboard(client, alice, admin):
    assert client.get("/dashboard").status_code == 303  # no session: to the login form
    assert client.get("/dashboard", headers=alice).status_code == 404
    assert client.get("/dashboard/jobs/0f9c7b5e-1111-4222-8333-944445555666", headers=alice).status_code == 404
    assert client.get("/dashboard", headers={"Authorization": "Bearer jl_nope"}).status_code == 404
    refused = login(client, alice["Authorization"].split()[1])
    assert refused.status_code == 403 and "set-cookie" not in {k.lower() for k in refused.headers.keys()}
    page = client.get("/dashboard", headers={"Authorization": "Bearer " + admin})
    assert page.status_code == 200 and "Jobs by state" in page.get_data(as_text=True)
    assert "script" not in page.headers["Content-Security-Policy"] and "<script" not in page.get_data(as_text=True)


def test_login_sets_a_cookie_only_this_site_and_no_script_can_use(client, admin):
    answer = login(client, admin)
    assert answer.status_code == 303 and answer.headers["Location"].endswith("/dashboard")
    cookie = answer.headers["Set-Cookie"]
    for flag in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/dashboard"):
        assert flag in cookie, cookie
    session_id = cookie.split(";")[0].split("=", 1)[1]
    assert admin not in cookie and len(session_id) >= 40  # a session of its own, not the API token
    assert client.get("/dashboard").status_code == 200  # the cookie is the session
    out = client.post("/dashboard/logout", data={"csrf": csrf_of(client.get("/dashboard"))})
    assert out.status_code == 303
    # Closed in the store: the old cookie, sent again, opens nothing.
    client.set_cookie("joblab_dashboard", session_id, path="/dashboard")
    assert client.get("/dashboard").status_code == 404


def test_a_session_ends_when_its_token_is_revoked(app, client, admin):
    from app.store.users import revoke_tokens

    login(client, admin)
    assert client.get("/dashboard").status_code == 200
    revoke_tokens(app.extensions["joblab_db"].engine, "root-admin")
    assert client.get("/dashboard").status_code == 404


def test_every_action_needs_the_sessions_csrf_token(client, admin, caplog):
    login(client, admin)
    assert client.post("/dashboard/replay", data={"job_type": "fail"}).status_code == 403
    assert client.post("/dashboard/replay", data={"job_type": "fail", "csrf": "0" * 64}).status_code == 403
    assert client.post("/dashboard/logout").status_code == 403
    assert "CSRF" in caplog.text and "root-admin" in caplog.text


def test_replay_from_the_dashboard_queues_the_job_again_and_says_who(app, client, admin, worker, placed, caplog):  # noqa: F811
    caplog.set_level(logging.INFO, logger="dashboard")
    engine = app.extensions["joblab_db"].engine
    owner, _t, _ = issue_token(engine, "carol")
    failed = js.create_job(engine, owner, "fail", {"message": "boom"})
    from app.messages import encode_job
    handle(worker, encode_job(failed["id"], "fail", {"message": "boom"}))
    next_retry(worker, 1)
    next_retry(worker, 2)
    assert js.get_job(engine, failed["id"])["status"] is JobStatus.FAILED
    login(client, admin)
    board = client.get("/dashboard").get_data(as_text=True)
    assert failed["id"][:8] in board and "boom" in board
    page = client.get("/dashboard/jobs/%s" % failed["id"])
    text = page.get_data(as_text=True)
    assert "event-claimed" in text and "event-failed" in text and 'id="replay"' in text
    again = client.post("/dashboard/replay", data={"csrf": csrf_of(page), "job_id": failed["id"]})
    assert again.status_code == 303 and "notice=replayed+1" in again.headers["Location"]
    job = js.get_job(engine, failed["id"])
    assert (job["status"], job["attempts"], job["error"]) == (JobStatus.QUEUED, 0, None)
    replayed = history.events_of(engine, failed["id"])[-1]
    assert replayed["kind"] == "replayed" and replayed["actor"] == "admin:root-admin" and "boom" in replayed["detail"]
    assert "admin 'root-admin' replayed job %s" % failed["id"] in caplog.text
    # Twice is harmless: the job is queued, not failed; nothing is sent again.
    client.post("/dashboard/replay", data={"csrf": csrf_of(page), "job_id": failed["id"]})
    assert [e["kind"] for e in history.events_of(engine, failed["id"])].count("replayed") == 1


def test_replay_all_of_a_type(app, client, admin, placed):  # noqa: F811
    engine = app.extensions["joblab_db"].engine
    owner, _t, _ = issue_token(engine, "carol")
    ids = []
    for job_type in ("fail", "fail", "noop"):
        job = js.create_job(engine, owner, job_type, {"message": "x"} if job_type == "fail" else {})
        js.reject_job(engine, job["id"], "bad")
        ids.append(job["id"])
    login(client, admin)
    csrf = csrf_of(client.get("/dashboard"))
    answer = client.post("/dashboard/replay", data={"csrf": csrf, "job_type": "fail"})
    assert "replayed+2" in answer.headers["Location"]
    assert [js.get_job(engine, i)["status"] for i in ids] == [JobStatus.QUEUED, JobStatus.QUEUED, JobStatus.FAILED]


def test_the_chart_and_counts_follow_the_store(app, client, admin, worker):
    from tests.unit.test_worker_batch import batch_of

    engine = app.extensions["joblab_db"].engine
    owner, _t, _ = issue_token(engine, "carol")
    batch, _ids = batch_of(engine, owner, per_partition=5)
    worker.handle_batch(batch)
    login(client, admin)
    text = client.get("/dashboard").get_data(as_text=True)
    assert re.search(r'id="count-succeeded">5<', text)
    assert "(5 succeeded, 0 failed)" in text
    assert "0 min ago: 5 succeeded" in text


def test_a_job_kafka_never_took_is_no_dead_letter(app, client, admin, placed):  # noqa: F811
    engine = app.extensions["joblab_db"].engine
    owner, _t, _ = issue_token(engine, "carol")
    job = js.create_job(engine, owner, "fail", {"message": "x"})
    js.mark_enqueue_failed(engine, job["id"], "kafka: KafkaTimeoutError")  # its submit was a 503
    login(client, admin)
    page = client.get("/dashboard").get_data(as_text=True)
    dead = page[page.index('id="dead"'):]
    assert job["id"][:8] in page and job["id"][:8] not in dead  # a failure, but no dead letter
    answer = client.post("/dashboard/replay", data={"csrf": csrf_of(client.get("/dashboard")), "job_id": job["id"]})
    assert "skipped" in answer.headers["Location"]
    assert js.get_job(engine, job["id"])["status"] is JobStatus.FAILED
