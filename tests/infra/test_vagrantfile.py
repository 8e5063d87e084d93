"""The Vagrantfile is valid for every provider. VirtualBox and libvirt can't run here, so their
provider *usability* check is skipped (--ignore-provider); the machines' config for them
(boxes, networks, synced folders, provisioners) is still built and validated."""
import ipaddress
import json
import os
import shutil
import subprocess

import pytest

from tests.infra.conftest import ROOT

pytestmark = pytest.mark.nolab  # no lab machine needed


@pytest.mark.parametrize("provider", ["docker", "virtualbox", "libvirt"])
def test_vagrant_validate(provider):
    env = dict(os.environ, LAB_PROVIDER=provider)
    cmd = ["vagrant", "validate"] + ([] if provider == "docker" else ["--ignore-provider"])
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_unknown_provider_is_one_clear_line():
    env = dict(os.environ, LAB_PROVIDER="hyperv9")
    run = subprocess.run(["vagrant", "validate"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "LAB_PROVIDER=hyperv9 is not one of" in run.stderr + run.stdout


def generated(provider, where=ROOT, **overrides):
    """What the Vagrantfile computed for ``provider``, as Vagrant itself loaded it (with lab.yml's
    values, plus the LAB_* variables given as ``overrides``)."""
    dump = os.path.join(where, ".vagrant-config-%s.json" % provider)
    env = dict(os.environ, LAB_PROVIDER=provider, LAB_DUMP_CONFIG=dump)
    for name in [k for k in env if k.startswith("LAB_") and k not in ("LAB_PROVIDER", "LAB_DUMP_CONFIG")]:
        del env[name]  # lab.yml's values, not a developer's overrides
    env.update(overrides)
    cmd = ["vagrant", "validate"] + ([] if provider == "docker" else ["--ignore-provider"])
    run = subprocess.run(cmd, cwd=where, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    try:
        with open(dump) as fh:
            return json.load(fh)
    finally:
        os.unlink(dump)


@pytest.mark.parametrize("provider, netmask", [("docker", "24"), ("virtualbox", "255.255.255.0"),
                                               ("libvirt", "255.255.255.0")])
def test_network_settings_fit_the_provider(provider, netmask):
    config = generated(provider)
    # The VM providers write the netmask into the guest's ifcfg / NetworkManager file: dotted.
    assert config["netmask"] == netmask
    subnet = ipaddress.ip_network(config["subnet"])
    ips = [ipaddress.ip_address(m["ip"]) for m in config["machines"].values()]
    assert all(ip in subnet for ip in ips) and len(set(ips)) == len(ips)
    if provider == "virtualbox":
        # VirtualBox >= 6.1.28 refuses host-only addresses outside 192.168.56.0/21 by default.
        assert all(ip in ipaddress.ip_network("192.168.56.0/21") for ip in ips)


def test_sidecar_has_room_for_sql_server_and_kafka():
    # mssql-conf setup refuses under 2000 MB; Kafka's heap is 512 MB; the kernel takes its share.
    assert generated("virtualbox")["machines"]["sidecar"]["memory"] >= 3072


def test_vm_names_differ_per_checkout(tmp_path):
    other = tmp_path / "second-checkout"
    other.mkdir()
    for name in ("Vagrantfile", "lab.yml"):
        shutil.copy(os.path.join(ROOT, name), str(other / name))
    here = {m["vm_name"] for m in generated("virtualbox")["machines"].values()}
    there = {m["vm_name"] for m in generated("virtualbox", str(other))["machines"].values()}
    assert len(here) == 2 and not here & there


def test_forwarded_ports_are_lab_ymls_unless_their_variable_is_set(monkeypatch):
    """Each forwarded port's host side is lab.yml's, or the variable its entry names (`env`):
    Vagrant and the tests (conftest.host_port) agree either way."""
    from tests.infra.conftest import LAB, host_port

    for name in ("LAB_HTTP_PORT", "LAB_PROMETHEUS_PORT"):
        monkeypatch.delenv(name, raising=False)
    entries = {name: m["forwarded_ports"] for name, m in LAB["machines"].items()}
    assert {name: [fp["env"] for fp in fps] for name, fps in entries.items()} == {
        "app": ["LAB_HTTP_PORT"], "sidecar": ["LAB_PROMETHEUS_PORT"]}
    plain = {name: [{"guest": fp["guest"], "host": fp["host"]} for fp in fps] for name, fps in entries.items()}
    assert {name: m["forwarded"] for name, m in generated("docker")["machines"].items()} == plain
    assert host_port("sidecar", 9090) == plain["sidecar"][0]["host"]

    moved = generated("docker", LAB_PROMETHEUS_PORT="19999", LAB_HTTP_PORT="18888")["machines"]
    assert moved["sidecar"]["forwarded"] == [{"guest": 9090, "host": 19999}]
    assert moved["app"]["forwarded"] == [{"guest": 80, "host": 18888}]
    monkeypatch.setenv("LAB_PROMETHEUS_PORT", "19999")
    assert host_port("sidecar", 9090) == 19999


def test_host_side_tools_compute_the_same_addresses():
    from fablib import labfile

    for provider in ("docker", "virtualbox", "libvirt"):
        config = generated(provider)
        assert {name: labfile.machine_ip(name, on=provider) for name in config["machines"]} == {
            name: m["ip"] for name, m in config["machines"].items()}


def test_lab_local_yml_overrides_settings_for_vagrant_and_the_host_tools_alike(tmp_path, monkeypatch):
    from fablib import labfile

    other = tmp_path / "checkout"
    other.mkdir()
    for name in ("Vagrantfile", "lab.yml"):
        shutil.copy(os.path.join(ROOT, name), str(other / name))
    (other / "lab.local.yml").write_text("settings:\n  LAB_JOB_WORKERS: \"3\"\n")
    assert generated("docker", str(other))["provision_env"]["LAB_JOB_WORKERS"] == "3"
    monkeypatch.setattr(labfile, "LOCAL_FILE", str(other / "lab.local.yml"))
    monkeypatch.delenv("LAB_JOB_WORKERS", raising=False)
    assert labfile.settings()["LAB_JOB_WORKERS"] == "3"
    monkeypatch.setenv("LAB_JOB_WORKERS", "2")  # a non-empty variable still wins
    assert labfile.settings()["LAB_JOB_WORKERS"] == "2"

    (other / "lab.local.yml").write_text("settings:\n  LAB_NO_SUCH: 1\n")
    run = subprocess.run(["vagrant", "validate"], cwd=str(other), capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, LAB_PROVIDER="docker"))
    assert run.returncode != 0 and "lab.local.yml: LAB_NO_SUCH is not a setting of lab.yml" in run.stdout + run.stderr


def checkout_copy(tmp_path):
    """Another checkout of the lab's definition (no running lab in it, whatever runs here)."""
    other = tmp_path / "checkout"
    other.mkdir()
    for name in ("Vagrantfile", "lab.yml"):
        shutil.copy(os.path.join(ROOT, name), str(other / name))
    return other


@pytest.mark.parametrize("provider", ["docker", "virtualbox", "libvirt"])
def test_cluster_topology_machines_and_provisioning_env(tmp_path, monkeypatch, provider):
    from fablib import labfile

    config = generated(provider, str(checkout_copy(tmp_path)), LAB_TOPOLOGY="cluster", LAB_APP_NODES="3")
    assert config["topology"] == "cluster"
    roles = {name: m["role"] for name, m in config["machines"].items()}
    assert roles == {"db": "db", "kafka1": "kafka", "kafka2": "kafka", "kafka3": "kafka", "app1": "app",
                     "app2": "app", "app3": "app", "lb": "lb"}
    assert [m["forwarded"] for m in config["machines"].values() if m["forwarded"]] == [[{"guest": 80, "host": 8080}]]
    assert len({m["ip"] for m in config["machines"].values()}) == len(roles)
    env = config["provision_env"]
    assert env["LAB_KAFKA_REPLICATION"] == "3" and env["LAB_KAFKA_MIN_ISR"] == "2"
    assert len(env["LAB_KAFKA_CLUSTER_ID"]) == 22
    # The host-side tools hand `fab provision` the same addresses and layout.
    for name in [k for k in os.environ if k.startswith("LAB_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("LAB_TOPOLOGY", "cluster")
    monkeypatch.setenv("LAB_APP_NODES", "3")
    monkeypatch.setenv("LAB_PROVIDER", provider)
    # Not this checkout's running lab (the app topology, while the lab suite runs): the copy's.
    monkeypatch.setattr(labfile, "TOPOLOGY_FILE", str(tmp_path / "no-lab-topology"))
    ours = labfile.provision_env()
    # The cluster id derives from the checkout's path: the copy's differs from this one's (below).
    del ours["LAB_KAFKA_CLUSTER_ID"]
    assert {k: env[k] for k in ours} == ours
    assert {n: m["ip"] for n, m in config["machines"].items()} == {
        n: labfile.machine_ip(n) for n in labfile.load()["machines"]}


def test_app_topology_env_points_everything_at_the_sidecar():
    from fablib import labfile

    env = generated("docker")["provision_env"]
    assert env["LAB_KAFKA_CLUSTER_ID"] == labfile.kafka_cluster_id()
    assert env["LAB_KAFKA_HOSTS"] == env["LAB_DB_HOST"] == env["LAB_SIDECAR_HOST"]
    assert env["LAB_KAFKA_REPLICATION"] == env["LAB_KAFKA_MIN_ISR"] == "1"
    assert env["LAB_APP_HOSTS"] == env["LAB_APP_HOST"] and env["LAB_LB_HOST"] == ""


def test_other_topology_than_the_running_labs_is_refused(tmp_path):
    other = checkout_copy(tmp_path)
    (other / ".vagrant").mkdir()
    (other / ".vagrant" / "lab-topology").write_text("app\n")
    env = dict(os.environ, LAB_PROVIDER="docker", LAB_TOPOLOGY="cluster")
    run = subprocess.run(["vagrant", "validate"], cwd=str(other), env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "the running lab is the app topology, not cluster: `make lab-destroy` first" in run.stdout + run.stderr
    # Without LAB_TOPOLOGY the running lab's topology is the one meant.
    del env["LAB_TOPOLOGY"]
    assert subprocess.run(["vagrant", "validate"], cwd=str(other), env=env, capture_output=True,
                          timeout=120).returncode == 0


@pytest.mark.parametrize("nodes", ["0", "10", "two"])
def test_app_nodes_out_of_range_is_one_clear_line(tmp_path, nodes):
    env = dict(os.environ, LAB_PROVIDER="docker", LAB_TOPOLOGY="cluster", LAB_APP_NODES=nodes)
    run = subprocess.run(["vagrant", "validate"], cwd=str(checkout_copy(tmp_path)), env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode != 0 and "LAB_APP_NODES must be 1-9 machines (got %s)" % nodes in run.stdout + run.stderr
