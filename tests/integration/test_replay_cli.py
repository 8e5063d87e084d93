"""`flask --app app jobs replay` against a real broker: dead letters read from the topic, jobs sent
again with a fresh attempt budget (their history says so), filters, --dry-run, poison letters
listed and skipped, and a second replay that changes nothing."""
from __future__ import annotations

import pytest

from app.store import history

pytestmark = pytest.mark.integration


def replay(stack, *args):
    result = stack.app.test_cli_runner().invoke(args=["jobs", "replay", *args])
    assert result.exit_code == 0, result.output
    return result.output


def starting(out, word):
    """Lines of the per-job report (not the summary line) that start with ``word``."""
    return sum(1 for line in out.splitlines() if line.startswith(word + " "))


def kinds(stack, job_id):
    return [e["kind"] for e in history.events_of(stack.engine, job_id)]


def test_replay_sends_dead_letters_again_once(stack, job_type):
    flaky = {"fail": True}

    def sometimes():
        if flaky["fail"]:
            raise RuntimeError("not yet")
        return {"ok": True}

    job_type("sometimes", sometimes)
    dead = [stack.submit("sometimes", {}) for _ in range(2)]
    other = stack.submit("fail", {"message": "always"})
    stack.produce_raw(stack.topics.jobs, "junk", b"\xff not a job")  # a poison record
    worker = stack.start_worker()
    for job_id in dead + [other]:
        stack.wait_status(job_id, "failed")

    dry = replay(stack, "--type", "sometimes", "--dry-run")
    assert starting(dry, "would replay") == 2 and "dry run: nothing changed" in dry
    assert all(stack.job(i)["status"] == "failed" for i in dead)

    everything = replay(stack, "--dry-run")
    assert "poison" in everything and "skipped: not a job message" in everything

    flaky["fail"] = False
    out = replay(stack, "--type", "sometimes")
    assert starting(out, "replayed") == 2, out
    for job_id in dead:
        job = stack.wait_status(job_id, "succeeded")
        assert job["attempts"] == 1  # a fresh budget: this run was attempt 1 again
        steps = kinds(stack, job_id)
        assert steps[-4:] == ["replayed", "enqueued", "claimed", "succeeded"], steps
    assert stack.job(other)["status"] == "failed"  # not of that type

    again = replay(stack, "--id", dead[0], "--id", dead[1])
    assert starting(again, "skipped") == 2 and starting(again, "replayed") == 0, again
    assert all(kinds(stack, i).count("replayed") == 1 for i in dead)
    worker.check_alive()


def test_replay_refuses_bad_filters_with_a_reason(stack):
    runner = stack.app.test_cli_runner()
    bad_id = runner.invoke(args=["jobs", "replay", "--id", "no/such id"])
    assert bad_id.exit_code != 0 and "not a job id" in bad_id.output
    bad_time = runner.invoke(args=["jobs", "replay", "--since", "yesterday"])
    assert bad_time.exit_code != 0 and "ISO 8601" in bad_time.output
