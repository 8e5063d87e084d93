"""GET /metrics (app/metrics.py, app/api/monitoring.py) in one process: the counters, the store's
figures, and Kafka's absence reported as a figure rather than a failed scrape."""
from prometheus_client.parser import text_string_to_metric_families

from app import metrics
from tests.unit.test_history import placed  # noqa: F401 (fixture)


def scrape(client):
    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.content_type.startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(answer.get_data(as_text=True)) for s in f.samples}


def test_submits_requests_and_the_stores_figures_are_scraped(client, alice, placed):  # noqa: F811
    before = scrape(client)
    for _ in range(3):
        assert client.post("/v1/jobs", json={"type": "noop", "args": {}}, headers=alice).status_code == 202
    assert client.post("/v1/jobs", json={"type": "nope", "args": {}}, headers=alice).status_code == 400
    after = scrape(client)

    def grew(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert grew("joblab_jobs_submitted_total", type="noop") == 3
    assert grew("joblab_http_requests_total", route="/v1/jobs", method="POST", status="202") == 3
    assert grew("joblab_http_requests_total", route="/v1/jobs", method="POST", status="400") == 1
    assert grew("joblab_http_request_duration_seconds_count", route="/v1/jobs") == 4
    assert after[("joblab_store_up", ())] == 1
    # The store's figures are cached for METRICS_CACHE_SECONDS: the first scrape saw no job yet.
    assert after.get(("joblab_jobs", (("state", "queued"), ("type", "noop"))), 0) in (0, 3)
    # No broker here: said by a figure, the scrape itself succeeds.
    assert after[("joblab_kafka_up", ())] == 0 and ("joblab_workers", ()) not in after


def test_a_jobs_id_never_becomes_a_label(client, alice):
    client.get("/v1/jobs/0f9c7b5e-1111-4222-8333-944445555666", headers=alice)
    routes = {dict(labels)["route"] for name, labels in scrape(client) if name == "joblab_http_requests_total"}
    assert "/v1/jobs/<job_id>" in routes and not any("0f9c7b5e" in r for r in routes)


def test_figures_are_asked_at_most_once_per_period():
    asked = []
    now = [0.0]
    cached = metrics.Cached(lambda: asked.append(1) or len(asked), 5.0, clock=lambda: now[0])
    assert [cached.get(), cached.get()] == [1, 1]
    now[0] = 5.0
    assert cached.get() == 2

    def broken():
        raise OSError("down")

    failing = metrics.Cached(broken, 5.0, clock=lambda: now[0])
    assert failing.get() is None
