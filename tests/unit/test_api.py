"""The HTTP API without a broker: auth, validation, isolation, cancel, errors are all decided
before anything is produced. Kafka points at a closed port; the store is a real SQLite file."""
import pytest

from app.api.schemas import JobCreateSchema
from app.jobtypes import REGISTRY
from app.store import jobs as js
from tests.conftest import auth


def engine(app):
    return app.extensions["joblab_db"].engine


def user_id(app, headers):
    from app.store.users import user_for_token
    return user_for_token(engine(app), headers["Authorization"].split()[1])[0]


def assert_error(resp, status, field=None):
    assert resp.status_code == status, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["status"] == status and body["message"]
    assert "Traceback" not in resp.get_data(as_text=True)
    if field is not None:
        assert field in body["fields"], body
        assert body["message"].startswith(field)
    return body


# -- authentication --------------------------------------------------------------------------
@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer", "Bearer wrong-token", "bearer  "])
def test_missing_or_bad_token_is_401_json(client, header):
    headers = {} if header is None else {"Authorization": header}
    for method, url in (("get", "/v1/jobs"), ("post", "/v1/jobs"), ("get", "/v1/jobs/x"),
                        ("get", "/v1/jobs/x/result"), ("post", "/v1/jobs/x/cancel")):
        resp = getattr(client, method)(url, headers=headers)
        assert_error(resp, 401)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_auth_comes_before_validation(client):
    assert_error(client.post("/v1/jobs", json={"type": "nope"}), 401)


# -- validation ------------------------------------------------------------------------------
@pytest.mark.parametrize("body, field", [
    ({"type": "nope", "args": {}}, "type"),
    ({"args": {"numbers": [1]}}, "type"),
    ({"type": "sum"}, "args"),
    ({"type": "sum", "args": {}}, "args.numbers"),
    ({"type": "sum", "args": {"numbers": "12"}}, "args.numbers"),
    ({"type": "sum", "args": {"numbers": [1, "2"]}}, "args.numbers.1"),
    ({"type": "sum", "args": {"numbers": [1], "extra": 1}}, "args.extra"),
    ({"type": "sum", "args": {"numbers": [1]}, "priority": 1}, "priority"),
    ({"type": "sleep", "args": {"seconds": 3600}}, "args.seconds"),
    ({"type": "fail", "args": {"message": ""}}, "args.message"),
    ({"type": 5, "args": {}}, "type"),
    ([1, 2], "body"),
    ("just a string", "body"),
])
def test_invalid_body_is_400_naming_the_field(client, alice, body, field):
    assert_error(client.post("/v1/jobs", json=body, headers=alice), 400, field)


def test_malformed_json_is_400(client, alice):
    resp = client.post("/v1/jobs", data="{bad", content_type="application/json", headers=alice)
    assert_error(resp, 400)


@pytest.mark.parametrize("kwargs", [{"data": "type=sum"}, {"data": "x", "content_type": "text/plain"}, {}])
def test_non_json_is_415(client, alice, kwargs):
    assert_error(client.post("/v1/jobs", headers=alice, **kwargs), 415)


def test_oversize_body_is_413(client, alice):
    body = {"type": "sum", "args": {"numbers": [1] * 40000}}
    assert_error(client.post("/v1/jobs", json=body, headers=alice), 413)


@pytest.mark.parametrize("query, field", [("limit=0", "limit"), ("limit=abc", "limit"), ("limit=1000", "limit"),
                                          ("status=done", "status"), ("cursor=zz", "cursor"),
                                          # found by the OpenAPI fuzz: both were 500s
                                          ("cursor=%C2%B2", "cursor"),  # "²".isdigit(), but int() refuses it
                                          ("cursor=9223372036854775808", "cursor")])  # > SQL BIGINT
def test_bad_list_query_is_400(client, alice, query, field):
    assert_error(client.get("/v1/jobs?" + query, headers=alice), 400, field)


def test_nothing_is_stored_for_an_invalid_job(client, app, alice):
    client.post("/v1/jobs", json={"type": "sum", "args": {"numbers": ["x"]}}, headers=alice)
    assert js.list_jobs(engine(app), user_id(app, alice), limit=10)[0] == []


# -- Kafka down -------------------------------------------------------------------------------
def test_kafka_down_is_503_and_the_job_is_not_left_queued(client, app, alice):
    resp = client.post("/v1/jobs", json={"type": "sum", "args": {"numbers": [1]}}, headers=alice)
    body = assert_error(resp, 503)
    row = js.get_job(engine(app), body["id"])
    assert row["status"].value == "failed" and row["error"].startswith("not enqueued")


def test_readyz_names_kafka_when_it_is_down(client):
    resp = client.get("/readyz")
    assert resp.status_code == 503
    body = resp.get_json()
    assert body["failed"] == ["kafka"] and body["checks"]["database"] == "ok"


def test_readyz_names_the_database_when_it_is_down(make_app, tmp_path):
    app = make_app("sqlite:///%s/missing/dir/x.db" % tmp_path, KAFKA_BOOTSTRAP="127.0.0.1:1")
    # A directory where the database file should be: SQLite cannot open it.
    (tmp_path / "missing" / "dir" / "x.db").mkdir(parents=True)
    body = app.test_client().get("/readyz").get_json()
    assert "database" in body["failed"]


# -- isolation, reads, cancel -------------------------------------------------------------------
def test_another_users_job_answers_like_an_unknown_one(client, app, alice):
    bob = auth(app, "bob")
    job = js.create_job(engine(app), user_id(app, alice), "sum", {"numbers": [1]})
    for url, method in ((f"/v1/jobs/{job['id']}", "get"), (f"/v1/jobs/{job['id']}/result", "get"),
                        (f"/v1/jobs/{job['id']}/cancel", "post")):
        theirs = getattr(client, method)(url, headers=bob)
        unknown = getattr(client, method)(url.replace(job["id"], "00000000-0000-0000-0000-000000000000"),
                                          headers=bob)
        assert theirs.status_code == unknown.status_code == 404
        assert theirs.get_json()["message"].replace(job["id"], "ID") == \
            unknown.get_json()["message"].replace("00000000-0000-0000-0000-000000000000", "ID")
    assert client.get("/v1/jobs", headers=bob).get_json()["jobs"] == []
    assert [j["id"] for j in client.get("/v1/jobs", headers=alice).get_json()["jobs"]] == [job["id"]]
    assert js.get_job(engine(app), job["id"])["status"].value == "queued"  # bob's cancel did nothing


def test_job_view_and_result_before_success(client, app, alice):
    job = js.create_job(engine(app), user_id(app, alice), "sum", {"numbers": [1, 2]})
    body = client.get(f"/v1/jobs/{job['id']}", headers=alice).get_json()
    assert body["status"] == "queued" and body["attempts"] == 0 and body["created_at"].endswith("Z")
    assert set(body) >= {"id", "type", "status", "attempts", "created_at", "started_at", "finished_at", "error"}
    assert assert_error(client.get(f"/v1/jobs/{job['id']}/result", headers=alice), 409)["job_status"] == "queued"
    js.claim_job(engine(app), job["id"])
    js.store_success(engine(app), job["id"], '{"sum":3}')
    assert client.get(f"/v1/jobs/{job['id']}/result", headers=alice).get_json() == {
        "id": job["id"], "result": {"sum": 3}}


def test_cancel_queued_then_409(client, app, alice):
    job = js.create_job(engine(app), user_id(app, alice), "sleep", {"seconds": 1})
    resp = client.post(f"/v1/jobs/{job['id']}/cancel", headers=alice)
    assert resp.status_code == 200 and resp.get_json()["status"] == "cancelled"
    assert_error(client.post(f"/v1/jobs/{job['id']}/cancel", headers=alice), 409)


def test_list_pagination_over_http(client, app, alice):
    ids = [js.create_job(engine(app), user_id(app, alice), "sum", {"numbers": [i]})["id"] for i in range(3)]
    page = client.get("/v1/jobs?limit=2", headers=alice).get_json()
    rest = client.get("/v1/jobs?limit=2&cursor=" + page["next_cursor"], headers=alice).get_json()
    assert [j["id"] for j in page["jobs"] + rest["jobs"]] == ids[::-1] and rest["next_cursor"] is None


# -- probes and spec ---------------------------------------------------------------------------
def test_healthz_and_info_need_no_auth(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    info = client.get("/v1/info").get_json()
    assert info["rss_bytes"] > 0 and info["shared_bytes"] >= 0 and info["pid"] > 0 and info["version"]


def test_openapi_is_generated_and_declares_bearer_auth(client):
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result", "/v1/jobs/{job_id}/cancel",
            "/healthz", "/readyz", "/v1/info"} <= set(spec["paths"])
    assert spec["paths"]["/v1/jobs"]["post"]["security"] == [{"bearer": []}]
    assert "202" in spec["paths"]["/v1/jobs"]["post"]["responses"]


def test_openapi_documents_what_the_api_checks(client):
    """What the OpenAPI fuzz relies on: a valid example body, the job types, the cursor's shape."""
    spec = client.get("/openapi.json").get_json()
    post = spec["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]
    assert JobCreateSchema().validate(post["example"]) == {}
    assert spec["components"]["schemas"]["JobCreate"]["properties"]["type"]["enum"] == sorted(REGISTRY)
    cursor = [p for p in spec["paths"]["/v1/jobs"]["get"]["parameters"] if p["name"] == "cursor"][0]
    assert cursor["schema"]["pattern"] == "^[0-9]{1,18}$"
    for path in ("/healthz", "/readyz", "/v1/info"):
        assert "schema" in spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]


def test_unknown_route_is_json_404(client):
    assert_error(client.get("/nope"), 404)


def test_wrong_method_is_json_405_with_allow(client, alice):
    # RFC 9110: a 405 names the methods that would work.
    resp = client.delete("/v1/jobs", headers=alice)
    assert_error(resp, 405)
    assert {"GET", "POST"} <= {m.strip() for m in resp.headers["Allow"].split(",")}
    assert resp.headers["Content-Type"] == "application/json"


def test_debug_stays_off_and_a_crash_is_a_json_500(make_app, store_url, monkeypatch):
    # FLASK_DEBUG=1 in the environment (a leftover from development) must not turn on the
    # debugger: a failing request still gets the JSON 500, no traceback.
    monkeypatch.setenv("FLASK_DEBUG", "1")
    app = make_app(store_url)
    assert not app.debug

    @app.route("/boom")
    def boom():
        raise RuntimeError("secret detail")

    resp = app.test_client().get("/boom")
    body = assert_error(resp, 500)
    assert "secret detail" not in resp.get_data(as_text=True) and body["message"] == "internal error"


# -- quota -------------------------------------------------------------------------------------
def test_over_quota_is_429_with_retry_after_and_nothing_stored(make_app, store_url):
    app = make_app(store_url, USER_MAX_ACTIVE=3, QUOTA_RETRY_AFTER=7, KAFKA_SEND_TIMEOUT=0.3)
    client, alice, bob = app.test_client(), auth(app, "alice"), auth(app, "bob")
    mine = [js.create_job(engine(app), user_id(app, alice), "sleep", {"seconds": 60})["id"] for _ in range(3)]
    js.claim_job(engine(app), mine[0])  # running counts too
    resp = client.post("/v1/jobs", json={"type": "sum", "args": {"numbers": [1]}}, headers=alice)
    body = assert_error(resp, 429)
    assert resp.headers["Retry-After"] == "7" and body["active"] == 3
    assert len(js.list_jobs(engine(app), user_id(app, alice), limit=10)[0]) == 3
    # Another user is not held back (their submit goes on to Kafka, down here: 503, not 429).
    assert client.post("/v1/jobs", json={"type": "noop", "args": {}}, headers=bob).status_code == 503
    # Finished jobs free the quota.
    js.cancel_job(engine(app), mine[1], user_id(app, alice))
    assert client.post("/v1/jobs", json={"type": "noop", "args": {}}, headers=alice).status_code == 503


def test_quota_zero_means_no_limit(make_app, store_url):
    app = make_app(store_url, USER_MAX_ACTIVE=0, KAFKA_SEND_TIMEOUT=0.3)
    alice = auth(app, "alice")
    for _ in range(3):
        js.create_job(engine(app), user_id(app, alice), "sleep", {"seconds": 1})
    assert app.test_client().post("/v1/jobs", json={"type": "noop", "args": {}}, headers=alice).status_code == 503


def test_openapi_documents_bounds_and_quota(client):
    spec = client.get("/openapi.json").get_json()
    schemas = spec["components"]["schemas"]
    numbers = schemas["SumArgs"]["properties"]["numbers"]
    assert numbers["maxItems"] == 1000 and numbers["items"]["maximum"] == 2 ** 53
    assert schemas["SleepArgs"]["properties"]["seconds"]["maximum"] == 60
    assert {"$ref": "#/components/schemas/SumArgs"} in schemas["JobCreate"]["properties"]["args"]["anyOf"]
    responses = spec["paths"]["/v1/jobs"]["post"]["responses"]
    assert {"400", "413", "429", "503"} <= set(responses)


# -- the store failing under a request ----------------------------------------------------------
def test_exhausted_pool_is_503_not_500(client, alice, monkeypatch):
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    from app.store import users

    def saturated(*_a):
        raise PoolTimeout("QueuePool limit of size 5 overflow 5 reached, connection timed out")

    monkeypatch.setattr(users, "_lookup", saturated)
    resp = client.get("/v1/jobs", headers=alice)
    assert_error(resp, 503)
    assert resp.headers["Retry-After"] == "1"


def test_refused_submit_answers_503_with_the_id_even_when_it_cannot_be_marked(client, app, alice, monkeypatch):
    from sqlalchemy.exc import OperationalError

    def down(*_a):
        raise OperationalError("UPDATE jobs", {}, Exception("server closed the connection"))

    monkeypatch.setattr(js, "mark_enqueue_failed", down)
    body = assert_error(client.post("/v1/jobs", json={"type": "noop", "args": {}}, headers=alice), 503)
    assert body["id"] and js.get_job(engine(app), body["id"])["status"].value == "queued"  # for the sweep
