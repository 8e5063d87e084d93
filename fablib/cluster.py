"""The fab tasks' view of the lab's other roles: what runs on each, the Kafka quorum and its
replication health, and draining an app node on the cluster's load balancer (devops/joblab-lb)."""
from __future__ import annotations

import contextlib
import json
import shlex
import time
from typing import Any, Iterator

from fabric import Connection
from invoke.exceptions import Exit

from . import labfile
from .remote import APP_USER, name_of

#: Init services per role, and the ports that must listen on the machine itself.
SERVICES = {"app": ["nginx", "supervisord"], "sidecar": ["kafka", "postgresql"], "kafka": ["kafka"],
            "db": ["postgresql"], "lb": ["nginx", "joblab-lb"]}
PORTS = {"sidecar": [9092, 5432], "kafka": [9092], "db": [5432]}
QUORUM_STATE = "/var/lib/kafka/kraft-combined-logs/__cluster_metadata-0/quorum-state"


def quorum_state(c: Any) -> str:
    """This broker's view of the KRaft quorum (the file Kafka keeps it in): leader, epoch, voters."""
    res = c.sudo("cat %s" % QUORUM_STATE, hide=True, warn=True)
    if not res.ok:
        return "unknown (no %s)" % QUORUM_STATE
    try:
        state = json.loads(res.stdout)
    except ValueError:
        return "unreadable"
    voters = sorted(v.get("voterId") for v in state.get("currentVoters") or [])
    leader = state.get("leaderId", -1)
    return "leader %s, epoch %s, voters %s" % ("none" if leader < 0 else leader, state.get("leaderEpoch"),
                                              voters or "static (controller.quorum.voters)")


def kafka_health(c: Any) -> str:
    """Brokers, under-replicated and offline partitions, as `flask kafka health` on an app machine says."""
    res = c.sudo("-u %s /usr/local/bin/joblab-exec flask --app app kafka health" % APP_USER, hide=True, warn=True)
    lines = res.stdout.strip().splitlines()
    if not res.ok or not lines:
        return "unknown (%s)" % ((res.stderr.strip().splitlines() or ["no answer"])[-1])
    try:
        h = json.loads(lines[-1])
    except ValueError:
        return "unknown (%s)" % lines[-1][:200]
    return "brokers %s, controller %s, %d partitions: %d under-replicated, %d offline; leaders %s" % (
        h["brokers"], h["controller"], h["partitions"], h["under_replicated"], h["offline"], h.get("leaders"))


def wait_ready(c: Any, seconds: float = 60) -> None:
    """Until the node's own nginx answers /readyz 200 (gunicorn, the store and Kafka ready)."""
    deadline = time.monotonic() + seconds
    while True:
        res = c.run("curl -s -o /dev/null -m 5 -w '%{http_code}' http://127.0.0.1/readyz", hide=True, warn=True)
        if res.stdout.strip() == "200":
            return
        if time.monotonic() > deadline:
            raise Exit("fab: %s: /readyz is %s, not 200, after %.0f s: left drained" % (
                name_of(c), res.stdout.strip() or "unanswered", seconds))
        time.sleep(1)


@contextlib.contextmanager
def drained(c: Any) -> Iterator[None]:
    """Around a change to app node ``c``: when the lab has a load balancer, the node is drained there
    first and put back only once it answers ready; if the change fails it stays drained (the load
    balancer keeps sending to the nodes that work). Without a load balancer: just the change."""
    lab = labfile.load()
    lbs = labfile.with_role("lb", lab)
    if not lbs or name_of(c) not in lab["machines"]:
        yield
        return
    if len(labfile.with_role("app", lab)) < 2:
        print("%s: the only app node: not drained (its gunicorn reloads without dropping requests)" % name_of(c))
        yield
        return
    node = labfile.machine_ip(name_of(c), lab)
    lb = Connection(lbs[0], config=c.config)
    try:
        lb.sudo("/usr/local/sbin/joblab-lb drain %s" % shlex.quote(node), hide=True)
        print("%s: drained on %s" % (name_of(c), lbs[0]))
        yield
        wait_ready(c)
        lb.sudo("/usr/local/sbin/joblab-lb undrain %s" % shlex.quote(node), hide=True)
        print("%s: serving again on %s" % (name_of(c), lbs[0]))
    finally:
        lb.close()
