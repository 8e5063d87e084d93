"""fablib/labfile.py's topologies: the cluster's machines expanded from lab.yml, the running lab's
topology remembered, roles, and the provisioning env the host-side tools hand out."""
from __future__ import annotations

import pytest

from fablib import labfile


@pytest.fixture
def no_lab(monkeypatch, tmp_path):
    """No running lab and no developer overrides: lab.yml's own values."""
    import os

    for name in [k for k in os.environ if k.startswith("LAB_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(labfile, "TOPOLOGY_FILE", str(tmp_path / "lab-topology"))
    monkeypatch.setattr(labfile, "LOCAL_FILE", str(tmp_path / "lab.local.yml"))
    monkeypatch.setenv("LAB_PROVIDER", "docker")
    return tmp_path


def test_default_is_the_seeds_two_machines(no_lab):
    lab = labfile.load()
    assert lab["topology"] == "app" and list(lab["machines"]) == ["sidecar", "app"]
    env = labfile.provision_env(lab)
    assert env["LAB_KAFKA_HOSTS"] == env["LAB_DB_HOST"] == labfile.machine_ip("sidecar", lab)


def test_cluster_machines_in_boot_order_with_their_roles(no_lab, monkeypatch):
    monkeypatch.setenv("LAB_TOPOLOGY", "cluster")
    monkeypatch.setenv("LAB_APP_NODES", "4")
    lab = labfile.load()
    assert list(lab["machines"]) == ["db", "kafka1", "kafka2", "kafka3", "app1", "app2", "app3", "app4", "lb"]
    assert labfile.with_role("kafka", lab) == ["kafka1", "kafka2", "kafka3"]
    hosts = [m["host"] for m in lab["machines"].values()]
    assert len(set(hosts)) == len(hosts)
    env = labfile.provision_env(lab)
    assert env["LAB_KAFKA_HOSTS"].count(",") == 2 and env["LAB_APP_HOSTS"].count(",") == 3
    assert env["LAB_LB_HOST"] == labfile.machine_ip("lb", lab)
    assert (env["LAB_KAFKA_REPLICATION"], env["LAB_KAFKA_MIN_ISR"]) == ("3", "2")


def test_the_running_labs_topology_is_the_default(no_lab):
    (no_lab / "lab-topology").write_text("cluster\n")
    assert labfile.load()["topology"] == "cluster"


@pytest.mark.parametrize("bad", [{"LAB_TOPOLOGY": "mesh"}, {"LAB_TOPOLOGY": "cluster", "LAB_APP_NODES": "0"},
                                 {"LAB_TOPOLOGY": "cluster", "LAB_APP_NODES": "many"}])
def test_bad_topology_settings_are_refused(no_lab, monkeypatch, bad):
    for name, value in bad.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit):
        labfile.load()


def test_another_topology_than_the_running_labs_is_refused(no_lab, monkeypatch):
    (no_lab / "lab-topology").write_text("app\n")
    monkeypatch.setenv("LAB_TOPOLOGY", "cluster")
    with pytest.raises(SystemExit, match="the running lab is the app topology, not cluster"):
        labfile.load()


def test_a_host_outside_the_lab_is_described_by_its_two_addresses(no_lab):
    env = labfile.provision_env(given={"LAB_SIDECAR_HOST": "10.0.0.5", "LAB_APP_HOST": "10.0.0.6"})
    assert env["LAB_KAFKA_HOSTS"] == env["LAB_DB_HOST"] == "10.0.0.5"
    assert env["LAB_APP_HOSTS"] == "10.0.0.6"
    both = labfile.provision_env(given={"LAB_SIDECAR_HOST": "10.0.0.5", "LAB_KAFKA_HOSTS": "k1,k2,k3"})
    assert both["LAB_KAFKA_HOSTS"] == "k1,k2,k3" and both["LAB_DB_HOST"] == "10.0.0.5"
    assert len(env["LAB_KAFKA_CLUSTER_ID"]) == 22
