"""`python -m worker` as a real process: crashes, graceful and forced stops."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from kafka import KafkaConsumer
from kafka.structs import TopicPartition
from sqlalchemy import func, select

from app.store import jobs as js
from app.store.schema import results
from app.store.users import utcnow

pytestmark = pytest.mark.integration


def spawn_worker(stack, log_path):
    with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "worker"], env=stack.env(), cwd=stack.env()["PYTHONPATH"],
                                stdout=log, stderr=subprocess.STDOUT)


def result_rows(stack, job_id):
    with stack.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(results).where(results.c.job_id == job_id)).scalar()


def committed_lag(stack):
    """Messages of the jobs topic not yet committed by the stack's group."""
    consumer = KafkaConsumer(bootstrap_servers=stack.settings["KAFKA_BOOTSTRAP"],
                             group_id=stack.settings["KAFKA_GROUP"], enable_auto_commit=False)
    try:
        parts = [TopicPartition(stack.topics.jobs, p) for p in consumer.partitions_for_topic(stack.topics.jobs)]
        end = consumer.end_offsets(parts)
        return sum(end[tp] - (consumer.committed(tp) or 0) for tp in parts)
    finally:
        consumer.close(autocommit=False)


def wait_lag(stack, lag, seconds=30):
    """Committed lag reaching ``lag``: the worker commits just after storing the outcome."""
    deadline = time.monotonic() + seconds
    while committed_lag(stack) != lag:
        assert time.monotonic() < deadline, "committed lag is %d, not %d" % (committed_lag(stack), lag)
        time.sleep(0.2)
    return True


def wait_log(path, text, seconds=30):
    """Until ``text`` appears in the log file at ``path`` (the process has reached that point)."""
    deadline = time.monotonic() + seconds
    while text not in path.read_text(errors="replace"):
        assert time.monotonic() < deadline, "%r never appeared in %s" % (text, path)
        time.sleep(0.05)


def worker_running_a_job(stack, seconds, log_path):
    """A `python -m worker` process caught in the middle of a `sleep` job: (process, job id)."""
    job_id = stack.submit("sleep", {"seconds": seconds})
    proc = spawn_worker(stack, log_path)
    try:
        stack.wait_status(job_id, "running", timeout=60)
    except BaseException:
        proc.kill()
        raise
    return proc, job_id


def test_worker_killed_mid_job_loses_and_duplicates_nothing(make_stack, db_url, tmp_path):
    stack = make_stack(db_url)
    # Long enough that the kill lands mid-job on a loaded machine (asserted below).
    first, job_id = worker_running_a_job(stack, 6, tmp_path / "w1.log")
    try:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        first.kill()
    assert stack.job(job_id)["status"] == "running"  # the crash left it mid-flight
    second = spawn_worker(stack, tmp_path / "w2.log")
    try:
        job = stack.wait_status(job_id, "succeeded", timeout=90)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    assert job["attempts"] == 2  # ran twice (at-least-once) ...
    assert result_rows(stack, job_id) == 1  # ... stored once
    assert wait_lag(stack, 0)


def test_first_sigterm_finishes_the_current_job_and_commits(make_stack, db_url, tmp_path):
    stack = make_stack(db_url)
    proc, job_id = worker_running_a_job(stack, 4, tmp_path / "w.log")
    try:
        signalled = utcnow()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        proc.kill()
    job = js.get_job(stack.engine, job_id)
    assert job["status"].value == "succeeded"
    assert job["finished_at"] > signalled  # it was mid-job when the signal came, and finished it
    assert committed_lag(stack) == 0  # committed before leaving: no redelivery


def test_second_sigterm_exits_at_once_and_the_job_is_redelivered(make_stack, db_url, tmp_path):
    stack = make_stack(db_url)
    proc, job_id = worker_running_a_job(stack, 20, tmp_path / "w.log")
    try:
        proc.send_signal(signal.SIGTERM)
        wait_log(tmp_path / "w.log", "finishing the current job")  # the first one was handled
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 3  # worker.defaults.EXIT_FORCED
        assert time.monotonic() - started < 5
    finally:
        proc.kill()
    assert stack.job(job_id)["status"] == "running"
    assert committed_lag(stack) == 1  # not committed: another worker will get it


def test_a_job_longer_than_the_session_timeout_does_not_cost_the_worker_its_partitions(make_stack, sqlite_url):
    from worker.defaults import SESSION_TIMEOUT_MS

    stack = make_stack(sqlite_url)
    seconds = SESSION_TIMEOUT_MS / 1000 + 2
    job_id = stack.submit("sleep", {"seconds": seconds})
    wt = stack.start_worker()
    job = stack.wait_status(job_id, "succeeded", timeout=seconds + 60)
    # Evicted mid-job, the worker's commit would fail and the job would run a second time.
    assert job["attempts"] == 1 and wt.worker.executions == 1
    assert wait_lag(stack, 0)


def wait_attempts(stack, job_id, attempts, seconds=60):
    deadline = time.monotonic() + seconds
    while stack.job(job_id)["attempts"] < attempts:
        assert time.monotonic() < deadline, "job %s never reached attempt %d" % (job_id, attempts)
        time.sleep(0.1)


def test_a_job_that_keeps_killing_its_worker_is_failed_not_run_again(make_stack, sqlite_url, tmp_path):
    """The worker dies mid-job every time (SIGKILL here; OOM in life): after MAX_ATTEMPTS such
    deaths the next worker fails the job instead of running it, and goes on with the rest."""
    stack = make_stack(sqlite_url, MAX_ATTEMPTS=2)
    first, job_id = worker_running_a_job(stack, 30, tmp_path / "w1.log")
    first.kill()
    first.wait(10)
    second = spawn_worker(stack, tmp_path / "w2.log")
    try:
        wait_attempts(stack, job_id, 2)
    finally:
        second.kill()
        second.wait(10)
    third = spawn_worker(stack, tmp_path / "w3.log")
    try:
        job = stack.wait_status(job_id, "failed", timeout=90)
        assert job["error"] == "crashed the worker 2 times" and job["attempts"] == 2
        after = stack.submit("sum", {"numbers": [1]})
        stack.wait_status(after, "succeeded", timeout=30)
        assert third.poll() is None  # alive
    finally:
        third.send_signal(signal.SIGTERM)
        assert third.wait(30) == 0
    dead = [r for r in stack.read_topic(stack.topics.dead) if r.key == job_id.encode()]
    assert [dict(r.headers)["error"] for r in dead] == [b"crashed the worker 2 times"]
    assert committed_lag(stack) == 0
