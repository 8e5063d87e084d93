"""GET /metrics (Prometheus text format, no token: nginx lets only the lab's machines reach it)
and the request counts and latencies behind it (app/metrics.py)."""
from __future__ import annotations

import time
from typing import Any, Dict, Tuple

from flask import Flask, Response, current_app, g, request

from .. import metrics
from ..kafkastate import KafkaState
from ..store import window
from ..topics import Topics


def _store_figures() -> Dict[str, Any]:
    engine = current_app.extensions["joblab_db"].engine
    return {"by_state": window.jobs_by_state_and_type(engine), "oldest_queued": window.oldest_queued_age(engine)}


def kafka_state(app: Flask) -> KafkaState:
    """One per app: the consumer lag and the workers' group (app/kafkastate.py)."""
    state = app.extensions.get("joblab_kafka_state")
    if state is None:
        cfg = app.config
        topics = Topics.with_prefix(cfg["KAFKA_TOPIC_PREFIX"])
        state = app.extensions.setdefault("joblab_kafka_state", KafkaState(
            cfg["KAFKA_BOOTSTRAP"], cfg["KAFKA_GROUP"], [topics.jobs, topics.retry]))
    return state


def figures(app: Flask) -> Tuple[metrics.Cached, metrics.Cached]:
    """The store's and Kafka's figures, each asked at most once per METRICS_CACHE_SECONDS in this
    process, whoever asks (a scrape, a dashboard page)."""
    found = app.extensions.get("joblab_figures")
    if found is None:
        seconds = float(app.config["METRICS_CACHE_SECONDS"])

        def store() -> Dict[str, Any]:
            with app.app_context():
                return _store_figures()

        found = app.extensions.setdefault("joblab_figures", (
            metrics.Cached(store, seconds), metrics.Cached(lambda: kafka_state(app).read(), seconds)))
    return found


def _window(app: Flask) -> metrics.WindowCollector:
    found = app.extensions.get("joblab_window")
    if found is None:
        store, kafka = figures(app)
        found = app.extensions.setdefault("joblab_window", metrics.WindowCollector(store.get, kafka.get))
    return found


def get_metrics() -> Response:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    body = metrics.exposition(app.config["METRICS_DIR"], _window(app))
    return Response(body, mimetype="text/plain", headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8",
                                                          "Cache-Control": "no-store"})


def _started() -> None:
    g.joblab_started = time.perf_counter()


def _answered(response: Response) -> Response:
    started = getattr(g, "joblab_started", None)
    if started is not None:
        # The route's template, not the path: job ids must not become label values.
        route = request.url_rule.rule if request.url_rule is not None else "(no route)"
        took = time.perf_counter() - started
        status = str(response.status_code)

        method = request.method if request.method in metrics.METHODS else "other"

        def record() -> None:
            found = metrics.web()
            found.requests.labels(route, method, status).inc()
            found.latency.labels(route).observe(took)

        metrics.safely(record)
    return response


def init_app(app: Flask) -> None:
    metrics.configure(app.config["METRICS_DIR"], "web")
    app.add_url_rule("/metrics", "get_metrics", get_metrics, methods=["GET"])
    app.before_request(_started)
    app.after_request(_answered)
