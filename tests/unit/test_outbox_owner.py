"""Outbox rows of a writer seen dead on its own host are taken over at once (worker/owner.py)."""
import socket
import subprocess
import sys

from sqlalchemy import select

from app.config import DEFAULTS
from app.store import outbox as outbox_store
from tests.unit.doubles import Queue
from worker import owner
from worker.defaults import DEAD_WRITER_QUIET_SECONDS, outbox_lease_seconds
from worker.publisher import Publisher


def a_dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # exited and reaped: no process has its pid (until the kernel hands it out again)
    return child.pid


def test_an_owner_names_its_place_and_pid():
    name = owner.new_owner(pid=4194304)
    place = owner.this_place()
    assert owner.parse(name) == (place, 4194304) and len(name) <= 64
    assert place.startswith(socket.gethostname()[:owner.HOST_MAX] + "~") and len(place.split("~")[1]) == 8
    for other in ("worker-0123456789abcdef", "w1", "", "a:b:c", ":1:x", "app1:12:abcd"):  # older rows
        assert owner.parse(other) is None


def test_dead_only_on_this_host_and_only_without_a_process():
    me = owner.new_owner()
    gone = a_dead_pid()
    assert owner.dead_here(owner.new_owner(pid=gone), me)
    # Another machine, or a container with its host's name: its pids are not ours to look at.
    assert not owner.dead_here(owner.new_owner(place=socket.gethostname() + "~0000beef", pid=gone), me)
    assert not owner.dead_here(owner.new_owner(pid=1), me)  # alive (init)
    assert not owner.dead_here(owner.new_owner(), me)  # another worker of this process: alive
    assert not owner.dead_here(me, me) and not owner.dead_here("worker-abc", me)


def test_rows_of_a_dead_writer_here_are_published_before_their_lease_runs_out(engine):
    kafka = []
    lease = outbox_lease_seconds(DEFAULTS["JOB_MAX_SECONDS"])  # the Publisher's
    quiet = lease - DEAD_WRITER_QUIET_SECONDS - 1  # a lease that long, written now = written quiet + 1 s ago
    dead, alive, far = owner.new_owner(pid=a_dead_pid()), owner.new_owner(pid=1), owner.new_owner(place="far~12345678", pid=9)
    with engine.begin() as conn:
        for who, key, seconds in ((dead, "k-dead", quiet), (dead, "k-dead-just-now", lease), (alive, "k-alive", quiet),
                                  (far, "k-far", quiet)):
            outbox_store.add(conn, who, [outbox_store.Message("jobs.dead", key, b"v")], lease_seconds=seconds)
    heir, rival = Publisher(engine, Queue(kafka)), Publisher(engine, Queue(kafka))
    assert heir.relay() == 1 and [key for _t, key, _v, _h in kafka] == ["k-dead"]
    assert rival.relay() == 0  # taken once: the row is the heir's now, and its writer alive
    with engine.begin() as conn:
        left = set(conn.execute(select(outbox_store.outbox.c.key)).scalars())
    # A produce of the dead writer's may still be in flight for the row it wrote just now; the live
    # writer's and the other place's rows wait for their lease.
    assert left == {"k-dead-just-now", "k-alive", "k-far"}
