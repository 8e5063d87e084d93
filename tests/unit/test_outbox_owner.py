"""Outbox rows of a writer seen dead on its own host are taken over at once (worker/owner.py)."""
import subprocess
import sys

from app.store import outbox as outbox_store
from tests.unit.doubles import Queue
from worker import owner
from worker.publisher import Publisher


def a_dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # exited and reaped: no process has its pid (until the kernel hands it out again)
    return child.pid


def test_an_owner_names_its_host_and_pid():
    name = owner.new_owner(host="app1", pid=4242)
    assert owner.parse(name) == ("app1", 4242) and len(name) <= 64
    assert owner.parse(owner.new_owner(host="h" * 200, pid=1))[0] == "h" * owner.HOST_MAX
    for other in ("worker-0123456789abcdef", "w1", "", "a:b:c", ":1:x"):  # older rows, tests' names
        assert owner.parse(other) is None


def test_dead_only_on_this_host_and_only_without_a_process():
    me = owner.new_owner()
    gone = a_dead_pid()
    assert owner.dead_here(owner.new_owner(pid=gone), me)
    assert not owner.dead_here(owner.new_owner(host="elsewhere", pid=gone), me)  # cannot be seen from here
    assert not owner.dead_here(owner.new_owner(pid=1), me)  # alive (init)
    assert not owner.dead_here(owner.new_owner(), me)  # another worker of this process: alive
    assert not owner.dead_here(me, me) and not owner.dead_here("worker-abc", me)


def test_rows_of_a_dead_writer_here_are_published_before_their_lease_runs_out(engine):
    kafka = []
    dead, alive, far = owner.new_owner(pid=a_dead_pid()), owner.new_owner(pid=1), owner.new_owner(host="far", pid=9)
    with engine.begin() as conn:
        for who, key in ((dead, "k-dead"), (alive, "k-alive"), (far, "k-far")):
            outbox_store.add(conn, who, [outbox_store.Message("jobs.dead", key, b"v")], lease_seconds=600)
    heir, rival = Publisher(engine, Queue(kafka)), Publisher(engine, Queue(kafka))
    assert heir.relay() == 1 and [key for _t, key, _v, _h in kafka] == ["k-dead"]
    assert rival.relay() == 0  # taken once: the row is the heir's now, and its writer alive
    with engine.begin() as conn:
        left = set(conn.execute(outbox_store.outbox.select()).scalars())
    assert len(left) == 2  # the live writer's and the other host's wait for their lease
