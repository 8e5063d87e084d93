"""The dashboard's pages and actions (on app/dashboard's ``bp``)."""
from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any, Dict, List, Optional, Tuple

from flask import current_app, g, make_response, redirect, render_template, request, url_for

from ..api.jobs import _iso
from ..api.monitoring import figures
from ..messages import JOB_ID_PATTERN
from ..replay import replay_jobs, summary
from ..states import JobStatus
from ..store import history, jobs as job_store, window
from ..store.sessions import close_session, open_session
from . import COOKIE, LOGIN_SECONDS, admin_token, bp

log = logging.getLogger("dashboard")

#: Most jobs one "replay all of a type" click sends again.
REPLAY_ALL_MAX = 200
#: How often the main page reloads itself (s): a <meta> refresh, no JavaScript.
REFRESH_SECONDS = 10


def _engine() -> Any:
    return current_app.extensions["joblab_db"].engine


def _figures() -> Tuple[Optional[Dict[str, Any]], Optional[Dict[str, Any]]]:
    """The store's jobs per state and type, and Kafka's lag and group: shared with /metrics,
    asked at most once per METRICS_CACHE_SECONDS in this process."""
    store, kafka = figures(current_app._get_current_object())  # type: ignore[attr-defined]
    return store.get(), kafka.get()


def _chart(minutes: List[Any], width: int = 600, height: int = 120) -> Dict[str, Any]:
    """Bars of the last hour (succeeded below, failed stacked on top), as SVG coordinates."""
    top = max([s + f for _m, s, f in minutes] + [1])
    step = width / max(1, len(minutes))
    bars = []
    for i, (ago, ok, bad) in enumerate(minutes):
        h_ok = height * ok / top
        h_bad = height * bad / top
        bars.append({"x": round(i * step, 1), "w": round(max(1.0, step - 1), 1), "ago": ago, "ok": ok, "bad": bad,
                     "y_ok": round(height - h_ok, 1), "h_ok": round(h_ok, 1),
                     "y_bad": round(height - h_ok - h_bad, 1), "h_bad": round(h_bad, 1)})
    return {"bars": bars, "top": top, "width": width, "height": height,
            "total_ok": sum(b["ok"] for b in bars), "total_bad": sum(b["bad"] for b in bars)}


@bp.route("", methods=["GET"])
def index():
    engine = _engine()
    store, kafka = _figures()
    by = store["by_state"] if store is not None else window.jobs_by_state_and_type(engine)
    oldest = store["oldest_queued"] if store is not None else window.oldest_queued_age(engine)
    states = [s.value for s in JobStatus]
    types = sorted({t for _s, t in by})
    per_state = {s: sum(n for (st, _t), n in by.items() if st == s) for s in states}
    per_type = {t: {s: by.get((s, t), 0) for s in states} for t in types}
    failed_types = sorted({t for (s, t), n in by.items() if s == JobStatus.FAILED.value and n})
    return render_template(
        "dashboard/index.html", states=states, per_state=per_state, per_type=per_type, types=types,
        chart=_chart(window.finished_per_minute(engine)), oldest=oldest,
        kafka=kafka, cache_seconds=current_app.config["METRICS_CACHE_SECONDS"], seen=window.workers_seen(engine), attempts=window.failed_attempts(engine),
        dead=window.latest_failures(engine, limit=50, job_type=request.args.get("type") or None),
        failed_types=failed_types, notice=request.args.get("notice"), iso=_iso, refresh=REFRESH_SECONDS)


@bp.route("/jobs/<job_id>", methods=["GET"])
def job_page(job_id: str):
    # The history first, then the job: the state shown is never older than the last step shown
    # (two reads, each its own snapshot).
    events = history.events_of(_engine(), job_id) if JOB_ID_PATTERN.fullmatch(job_id) else []
    job = window.find_job(_engine(), job_id) if JOB_ID_PATTERN.fullmatch(job_id) else None
    if job is None:
        return render_template("dashboard/missing.html", job_id=job_id[:64]), 404
    result = job_store.get_result_json(_engine(), job_id) if job["status"] == JobStatus.SUCCEEDED.value else None
    return render_template("dashboard/job.html", job=job, args=json.dumps(json.loads(job["args"]), indent=1),
                           result=None if result is None else result[:4000], iso=_iso,
                           events=events, notice=request.args.get("notice"))


@bp.route("/replay", methods=["POST"])
def replay():
    """Replay one dead letter (job_id) or every failed job of a type (job_type): queued again with
    a fresh attempt budget, the admin named in each job's history and in the log."""
    job_id = request.form.get("job_id", "").strip()
    job_type = request.form.get("job_type", "").strip()
    if job_id:
        if not JOB_ID_PATTERN.fullmatch(job_id):
            return redirect(url_for("dashboard.index", notice="not a job id"), 303)
        ids = [job_id]
    elif job_type:
        ids = window.failed_ids(_engine(), job_type, REPLAY_ALL_MAX)
    else:
        return redirect(url_for("dashboard.index", notice="nothing to replay: give a job or a type"), 303)
    results = replay_jobs(_engine(), current_app.extensions["joblab_queue"], ids, "admin:%s" % g.admin)
    counts = summary(results)
    said = ", ".join("%s %d" % kv for kv in sorted(counts.items())) or "nothing to replay"
    log.info("dashboard: admin %r replayed %s: %s", g.admin, "job %s" % job_id if job_id else "type %r" % job_type,
             said)
    if job_id:
        return redirect(url_for("dashboard.job_page", job_id=job_id, notice=said), 303)
    return redirect(url_for("dashboard.index", notice="%s: %s" % (job_type, said)), 303)


@bp.route("/login", methods=["GET"])
def login_form():
    return render_template("dashboard/login.html", problem=None)


@bp.route("/login", methods=["POST"])
def login():
    found = admin_token(request.form.get("token", "").strip())
    if found is None:
        log.warning("dashboard: refused a login from %s", request.remote_addr)
        return render_template("dashboard/login.html", problem="That token does not open the dashboard."), 403
    session_id = open_session(_engine(), found.token_id, timedelta(seconds=LOGIN_SECONDS))
    log.info("dashboard: admin %r logged in", found.name)
    answer = make_response(redirect(url_for("dashboard.index"), 303))
    answer.set_cookie(COOKIE, session_id, max_age=LOGIN_SECONDS, path=url_for("dashboard.index"), httponly=True,
                      secure=bool(current_app.config["DASHBOARD_SECURE_COOKIE"]), samesite="Strict")
    return answer


@bp.route("/logout", methods=["POST"])
def logout():
    log.info("dashboard: admin %r logged out", g.admin)
    if request.cookies.get(COOKIE) == g.secret:
        close_session(_engine(), g.secret)
    answer = make_response(redirect(url_for("dashboard.login_form"), 303))
    answer.delete_cookie(COOKIE, path=url_for("dashboard.index"), httponly=True,
                         secure=bool(current_app.config["DASHBOARD_SECURE_COOKIE"]), samesite="Strict")
    return answer


@bp.after_request
def _headers(response: Any) -> Any:
    """No script may run on these pages at all, nor may another site frame them; nothing cached."""
    response.headers["Content-Security-Policy"] = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
                                                   "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response
