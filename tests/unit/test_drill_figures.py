"""The drill's arithmetic and partitioner mirror (the drill itself runs in `make drills`)."""
from kafka.partitioner.default import DefaultPartitioner

from tests.drills.client import Ledger, job_for
from tests.support.figures import latency_summary, percentile
from app.published import partition_of


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99 and percentile(values, 100) == 100
    assert percentile([3.0], 99) == 3.0


def test_latency_summary_in_ms():
    s = latency_summary([0.2, 0.1, 0.3])
    assert s["count"] == 3 and s["p50"] == 200 and s["max"] == 300


class FourPartitions:
    """The part of kafka-python's ClusterMetadata the partitioner reads."""

    def topics(self):
        return {"jobs"}

    def partitions_for_topic(self, _topic):
        return {0, 1, 2, 3}

    available_partitions_for_topic = partitions_for_topic


def test_partition_of_matches_the_producer():
    for key in ["a", "3f2c1e9a-0000-4000-8000-000000000001", "drill"]:
        raw = key.encode()
        assert partition_of(key, 4) == DefaultPartitioner().partition("jobs", key, raw, None, None, FourPartitions())


def test_job_mix():
    import random

    kinds = [job_for(n, random.Random(1))[0] for n in range(1, 201)]
    assert kinds.count("fail") == 10 and kinds.count("sleep") == 30 and kinds.count("sum") == 160


# -- the drills' verdict on processes and duplicates ----------------------------------------------
def test_log_lines_that_mean_a_process_died():
    from tests.drills.targets import GUNICORN_WORKER_DIED, SUPERVISOR_EXIT

    died = ["[2026-11-28 10:00:00 +0000] [12] [ERROR] Worker (pid:34) exited with code 1.",
            "[2026-11-28 10:00:00 +0000] [12] [ERROR] Worker (pid:34) was sent SIGKILL! Perhaps out of memory?",
            "[2026-11-28 10:00:00 +0000] [12] [WARNING] Worker (pid:34) was sent SIGSEGV!"]
    graceful = ["[2026-11-28 10:00:00 +0000] [12] [INFO] Worker (pid:34) was sent SIGTERM!",
                "[2026-11-28 10:00:00 +0000] [34] [INFO] Worker exiting (pid: 34)"]
    assert all(GUNICORN_WORKER_DIED.search(line) for line in died)
    assert not any(GUNICORN_WORKER_DIED.search(line) for line in graceful)
    m = SUPERVISOR_EXIT.search("2026-11-28 10:00:00,000 WARN exited: joblab-worker-0 (exit status 1; not expected)")
    assert m.groups() == ("joblab-worker-0", "exit status 1")
    assert SUPERVISOR_EXIT.search("... INFO exited: joblab-worker-0 (terminated by SIGKILL; not expected)")
    assert not SUPERVISOR_EXIT.search("2026-11-28 10:00:00,000 INFO exited: joblab-worker-0 (exit status 0; expected)")


def test_duplicate_execution_bound_counts_the_faults_that_can_cut_a_job_short():
    from tests.drills.__main__ import dup_execution_bound, fault_plan

    class Target:
        def __getattr__(self, name):
            return lambda: name

    # 5 worker SIGKILLs, each leaving at most a batch claimed, + a join + a leave
    assert dup_execution_bound(fault_plan(Target()), batch=100) == 5 * 100 + 2
    assert dup_execution_bound(fault_plan(Target()), batch=1) == 7


def test_the_cluster_bound_counts_a_lost_node_as_its_workers_killed(monkeypatch):
    from tests.drills import __main__ as drills
    from tests.drills.cluster import ClusterTarget

    monkeypatch.setattr(drills, "workers_per_node", lambda: 2)
    monkeypatch.setattr(drills, "app_nodes", lambda: 3)
    target = ClusterTarget.__new__(ClusterTarget)  # its plan only: no lab needed
    plan = drills.fault_plan(target)
    names = [name for name, _inject in plan]
    assert names[:1] == ["worker SIGKILL 1"] and "app node loss" in names and "rolling deploy" in names
    # 1 SIGKILL + a node's 2 workers, each a batch; 6 cluster faults (the node loss too) move
    # partitions at most once per node; the rolling deploy twice per worker (3 nodes x 2).
    assert drills.dup_execution_bound(plan, batch=10) == 3 * 10 + 6 * 3 + 2 * 2 * 3


def test_an_exit_report_shows_the_traceback_that_ended_the_process():
    from tests.drills.targets import trouble

    log = "\n".join(["2026 INFO worker[1]: job a: -> running"] * 50 + [
        "Traceback (most recent call last):", '  File "x.py", line 1, in <module>', "KeyError: 'boom'"] + [
        "2026 INFO worker[2]: worker 2: group workers"] * 40)
    assert trouble(log).splitlines()[:3] == ["Traceback (most recent call last):", '  File "x.py", line 1, in <module>',
                                              "KeyError: 'boom'"]
    assert trouble("a\nb\nc", lines=2) == "b\nc"


class Dropping:
    """A client whose first ``drops`` requests lose their connection; then 202 (a replay after the first)."""

    def __init__(self, drops: int) -> None:
        self.drops, self.sent = drops, []

    def raw(self, method, path, data, headers=None):
        self.sent.append(dict(headers or {}))
        if len(self.sent) <= self.drops:
            return 0, "RemoteDisconnected", {}
        return 202, {"id": "job-1"}, {"idempotent-replayed": "true"} if len(self.sent) > 1 else {}


def test_a_keyed_submit_is_resent_with_its_key_and_a_plain_one_is_refused():
    ledger = Ledger()
    client = Dropping(1)
    assert ledger.submit(client, "sum", {"numbers": [1]}, keyed=True).id == "job-1"
    keys = {h["Idempotency-Key"] for h in client.sent}
    assert len(client.sent) == 2 and len(keys) == 1  # the same key both times
    assert ledger.resent_total() == 1 and ledger.replayed == 1 and ledger.refused_total() == 0

    assert ledger.submit(Dropping(1), "sum", {"numbers": [1]}) is None  # no key: never sent twice
    assert ledger.submit(Dropping(3), "sum", {"numbers": [1]}, keyed=True) is None  # bounded: 1 + 2 sends
    assert ledger.refused_total() == 2 and ledger.resent_total() == 3
