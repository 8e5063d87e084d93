"""The cluster lab as a drill target (`LAB_TOPOLOGY=cluster make lab`, then `make drills LAB=1`):
HTTP through the load balancer, commands on the machines through `docker exec` (the faults below
take machines off the network or kill their sshd, and the drill must still reach them).

Faults, one at a time, each with its recovery measured by the drill (a fresh job through every
partition) and its healing by Kafka (under-replicated partitions back to 0):

    kill_leader_broker()   SIGKILL of the broker leading the most job-topic partitions
    restart_broker()       ...its restart (the init script), then until nothing is under-replicated
    isolate_broker()       a network partition: a broker cut off the lab network (docker network
                           disconnect), still running, while the others and the app carry on
    heal_broker()          ...reconnected, then until nothing is under-replicated
    kill_app_node()        every process of the last app node SIGKILLed (init aside); the load
                           balancer keeps serving through the others
    restore_app_node()     ...its services started as at boot; until its /readyz is 200
    rolling_deploy()       `fab deploy` of a new version, one node at a time, under the load
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from fablib import labfile
from tests.drills.targets import SUPERVISORD_LOG, WEB_ERROR_LOG, LabTarget
from tests.support.services import ROOT


def machine_container(name: str) -> str:
    """The docker container of lab machine ``name`` (Vagrant's docker provider keeps its id)."""
    path = os.path.join(ROOT, ".vagrant", "machines", name, "docker", "id")
    try:
        with open(path) as fh:
            return fh.read().strip()
    except FileNotFoundError:
        raise RuntimeError("no container for %s (%s): the cluster runs on the docker provider only" % (name, path))


class ClusterTarget(LabTarget):
    name = "cluster"
    #: Its faults kill and cut off brokers while acks=all writes are in flight: a write the leader
    #: kept but answered with a timeout is sent again by the producer, so a dead letter may be on
    #: the topic twice, byte for byte (the drill counts those copies; two different ones still fail).
    BROKER_FAULTS = True

    def __init__(self) -> None:
        super().__init__()
        self.lab = labfile.load()
        if self.lab["topology"] != "cluster":
            raise RuntimeError("the running lab is not the cluster (LAB_TOPOLOGY=cluster make lab)")
        self.apps = labfile.with_role("app", self.lab)
        if len(self.apps) < 2:
            raise RuntimeError("the cluster drills lose an app node whole: they need LAB_APP_NODES >= 2")
        self.brokers = labfile.with_role("kafka", self.lab)
        self.APP = self.apps[0]
        self.killed_broker: Optional[str] = None
        self.isolated: Optional[Tuple[str, str, str]] = None  # (machine, network, address)
        self.lost_node: Optional[str] = None
        self.deploys = 0
        #: Per fault: seconds until Kafka had no under-replicated partition again, and refusals.
        self.healing: Dict[str, float] = {}

    # -- reaching the machines -------------------------------------------------------------------
    def ssh(self, host: str, command: str, stdin: Optional[str] = None, timeout: float = 180) -> str:
        """``command`` as root on machine ``host`` ("app" is the first app node), through docker exec."""
        name = self.APP if host == "app" else host
        res = subprocess.run(["docker", "exec", "-i", machine_container(name), "bash", "-c", command],
                             input=stdin, capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            last = (res.stderr.strip() or res.stdout.strip() or "no output").splitlines()[-1]
            raise RuntimeError("%s: `%s` failed (exit %d): %s" % (name, command, res.returncode, last))
        return res.stdout

    def health(self) -> Dict[str, Any]:
        """`flask kafka health` on the first app node: brokers, under-replicated, leaders."""
        out = self.ssh(self.apps[0], "sudo -u %s /usr/local/bin/joblab-exec flask --app app kafka health"
                       % self.app_user, timeout=60)
        return json.loads(out.strip().splitlines()[-1])

    @property
    def app_user(self) -> str:
        return labfile.settings(self.lab)["LAB_APP_USER"]

    def wait_replicated(self, seconds: float = 180) -> float:
        """Seconds until no partition is under-replicated (all brokers back in every ISR)."""
        start = time.monotonic()
        last: Any = None
        while time.monotonic() - start < seconds:
            try:
                last = self.health()
                if last["under_replicated"] == 0 and last["offline"] == 0 and len(last["brokers"]) == len(self.brokers):
                    return time.monotonic() - start
            except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
                last = str(exc)
            time.sleep(1)
        raise RuntimeError("partitions still under-replicated after %.0f s: %s" % (seconds, last))

    # -- the log marks of every app node (process exits are looked for on each) ------------------
    def start(self) -> None:
        self.node_marks: Dict[str, Dict[str, int]] = {}
        for node in self.apps[1:]:
            self.APP = node
            self.node_marks[node] = {path: self._lines(path) for path in (SUPERVISORD_LOG, WEB_ERROR_LOG)}
        self.APP = self.apps[0]
        super().start()
        self.node_marks[self.APP] = dict(self.marks)
        # The drill's own wide view of the brokers, before anything breaks.
        h = self.health()
        if h["under_replicated"] or len(h["brokers"]) != len(self.brokers):
            raise RuntimeError("the cluster is not healthy before the drill: %s" % h)

    def process_exits(self) -> List[Dict[str, Any]]:
        exits: List[Dict[str, Any]] = []
        kills = self.kills
        for node in self.apps:
            self.APP, self.marks = node, self.node_marks[node]
            # The node the drill killed whole: its supervisord died with its programs, so its log
            # says nothing of them; what it logs after the restore is checked like any node's.
            self.kills = kills if node == self.apps[0] else 0
            exits += super().process_exits()
        self.APP, self.kills = self.apps[0], kills
        return exits

    # -- faults ------------------------------------------------------------------------------------
    def fault_plan(self) -> List[Tuple[str, Callable[[], str]]]:
        return [
            ("worker SIGKILL 1", self.kill_worker),
            ("broker SIGKILL (leader)", self.kill_leader_broker),
            ("broker restart", self.restart_broker),
            ("network partition: broker", self.isolate_broker),
            ("network heal: broker", self.heal_broker),
            ("app node loss", self.kill_app_node),
            ("app node restore", self.restore_app_node),
            ("rolling deploy", self.rolling_deploy),
        ]

    def kill_leader_broker(self) -> str:
        leaders = self.health()["leaders"]
        broker_id, count = max(((int(k), v) for k, v in leaders.items()), key=lambda kv: (kv[1], -kv[0]))
        # Node ids are the machines' places in the quorum (provision/kafka.sh): kafkaN is node N.
        name = self.brokers[broker_id - 1]
        self.ssh(name, "pkill -KILL -f 'kafka[.]Kafka /etc/kafka/server.properties'")
        self.killed_broker = name
        return "%s: SIGKILL of broker %d (leader of %d job-topic partitions)" % (name, broker_id, count)

    def restart_broker(self) -> str:
        name, self.killed_broker = self.killed_broker, None
        assert name is not None
        self.ssh(name, "service kafka start", timeout=240)
        healed = self.wait_replicated()
        self.healing["broker restart"] = healed
        return "%s: kafka started again; no under-replicated partition %.1f s later" % (name, healed)

    def _lab_network(self, name: str) -> Tuple[str, str]:
        """(network, address) of machine ``name`` on the lab's own network."""
        want = labfile.machine_ip(name, self.lab)
        out = subprocess.run(["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", machine_container(name)],
                             capture_output=True, text=True, check=True, timeout=30).stdout
        for network, conf in json.loads(out).items():
            if conf.get("IPAddress") == want or (conf.get("IPAMConfig") or {}).get("IPv4Address") == want:
                return network, want
        raise RuntimeError("%s: no docker network gives it %s" % (name, want))

    def isolate_broker(self) -> str:
        # The broker leading the most partitions now (after the restart, leadership has moved).
        leaders = self.health()["leaders"]
        broker_id = max(((int(k), v) for k, v in leaders.items()), key=lambda kv: (kv[1], -kv[0]))[0]
        name = self.brokers[broker_id - 1]
        network, address = self._lab_network(name)
        subprocess.run(["docker", "network", "disconnect", network, machine_container(name)],
                       capture_output=True, text=True, check=True, timeout=60)
        self.isolated = (name, network, address)
        return "%s: broker %d cut off network %s (still running)" % (name, broker_id, network)

    def heal_broker(self) -> str:
        assert self.isolated is not None
        name, network, address = self.isolated
        self.isolated = None
        subprocess.run(["docker", "network", "connect", "--ip", address, "--alias", name, network,
                        machine_container(name)], capture_output=True, text=True, check=True, timeout=60)
        healed = self.wait_replicated()
        self.healing["network heal: broker"] = healed
        return "%s: back on %s; no under-replicated partition %.1f s later" % (name, network, healed)

    def kill_app_node(self) -> str:
        node = self.apps[-1]
        # Every process but init: nginx, supervisord and its programs, sshd - as if the machine froze.
        self.ssh(node, "kill -KILL -1 || true")
        self.lost_node = node
        return "%s: every process SIGKILLed (init aside)" % node

    def restore_app_node(self) -> str:
        node, self.lost_node = self.lost_node, None
        assert node is not None
        start = time.monotonic()
        # What its boot would start (each is enabled in its runlevels).
        self.ssh(node, "for s in ssh supervisord nginx; do service $s start >/dev/null 2>&1 || "
                       "{ echo \"$s did not start\"; exit 1; }; done", timeout=240)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            code = self.ssh(node, "curl -s -o /dev/null -m 5 -w '%{http_code}' http://127.0.0.1/readyz || true").strip()
            if code == "200":
                return "%s: services started, /readyz 200 after %.1f s" % (node, time.monotonic() - start)
            time.sleep(1)
        raise RuntimeError("%s: /readyz not 200 within 120 s of its restart" % node)

    def rolling_deploy(self) -> str:
        """`fab deploy` of this tree under another version number, node after node (drained first)."""
        self.deploys += 1
        version = "0.1.0+drill%d" % self.deploys
        from tests.infra.test_deploy import source_tree  # the deploy gate's: this tree, another version

        with tempfile.TemporaryDirectory(prefix="joblab-drill-src-") as tmp:
            tree = source_tree(pathlib.Path(tmp), version)
            # fab reaches the nodes over SSH: its config must name their addresses as they are now.
            subprocess.run("vagrant ssh-config > .vagrant/ssh-config", shell=True, cwd=ROOT, check=True,
                           capture_output=True, timeout=120)
            fab = os.path.join(os.path.dirname(sys.executable), "fab")
            res = subprocess.run([fab, "deploy", "--source=%s" % tree], cwd=ROOT, capture_output=True, text=True,
                                 timeout=900)
        if res.returncode != 0:
            raise RuntimeError("fab deploy failed: %s" % (res.stderr.strip() or res.stdout.strip())[-300:])
        served = set()
        for node in self.apps:
            info = self.ssh(node, "curl -s -m 5 http://127.0.0.1/v1/info")
            served.add(json.loads(info).get("version"))
        if served != {version}:
            raise RuntimeError("after the rolling deploy the nodes serve %s, not %s" % (sorted(served), version))
        return "fab deploy %s: every app node drained, deployed, back (%s)" % (
            version, "; ".join(line for line in res.stdout.splitlines() if "deployed" in line))

    def close(self) -> None:
        # Whatever the drill left broken is put back, so the suite after it finds a whole cluster.
        if self.killed_broker:
            self.restart_broker()
        if self.isolated:
            self.heal_broker()
        if self.lost_node:
            self.restore_app_node()
        super().close()
        subprocess.run("vagrant ssh-config > .vagrant/ssh-config", shell=True, cwd=ROOT, capture_output=True,
                       timeout=120)

    def audit_refused(self, ids: List[str]) -> Dict[str, str]:
        """The store's status of each refused submit's job id (none may be `queued` or `running`)."""
        if not ids:
            return {}
        report = self.audit(ids)
        return {i: j["status"] for i, j in report["jobs"].items()}
