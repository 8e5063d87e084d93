"""`make lab`'s preflight for the VM providers (provision/host/vm-preflight.py), run here with a
stand-in VBoxManage (and, for version cases, a vagrant that reports another version but is the
real one otherwise). Needs Vagrant, not a lab: each refusal must be one line saying what to do."""
import os
import subprocess
import sys

import pytest

from tests.infra.conftest import ROOT

pytestmark = pytest.mark.nolab  # no lab machine needed

SCRIPT = os.path.join(ROOT, "provision", "host", "vm-preflight.py")
REAL_VAGRANT = subprocess.run(["bash", "-c", "command -v vagrant"], capture_output=True, text=True).stdout.strip()


@pytest.fixture
def host(tmp_path):
    """A host: VirtualBox 7.0, this Vagrant, every cached file the CentOS 6 app needs."""
    bin_dir, cache = tmp_path / "bin", tmp_path / "cache"
    bin_dir.mkdir()
    (cache / "miniconda").mkdir(parents=True)
    (cache / "nginx").mkdir()
    installer = cache / "miniconda" / "Miniconda3-test.sh"
    installer.write_bytes(b"#!/bin/sh\necho a stand-in installer\n")
    (cache / "nginx" / "nginx-test.el6.ngx.x86_64.rpm").write_bytes(b"stand-in rpm")
    gnupg = tmp_path / "gnupg"
    gnupg.mkdir(mode=0o700)
    genv = dict(os.environ, GNUPGHOME=str(gnupg))
    subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", "lab test <lab@example.invalid>",
                    "default", "sign", "1d"], env=genv, check=True, capture_output=True)
    key = subprocess.run(["gpg", "--armor", "--export"], env=genv, check=True, capture_output=True).stdout
    (cache / "nginx" / "nginx_signing.key").write_bytes(key)
    fpr = [line.split(":")[9] for line in subprocess.run(
        ["gpg", "--with-colons", "--list-keys"], env=genv, capture_output=True, text=True).stdout.splitlines()
        if line.startswith("fpr:")][0]
    import hashlib

    env = dict(os.environ, PATH="%s:%s" % (bin_dir, os.environ["PATH"]), ARTIFACT_CACHE=str(cache),
               VBOX_NETWORKS_CONF=str(tmp_path / "networks.conf"),
               LAB_MINICONDA_INSTALLER=installer.name,
               LAB_MINICONDA_SHA256=hashlib.sha256(installer.read_bytes()).hexdigest(),
               LAB_NGINX_EL6_RPM="nginx-test.el6.ngx.x86_64.rpm", LAB_NGINX_KEY_FINGERPRINT=fpr,
               LAB_SIDECAR_MEMORY="256", LAB_APP_MEMORY="256")
    for name in [k for k in env if k.startswith("LAB_") and k.endswith(("_IP", "_BOX"))] + ["LAB_SUBNET"]:
        env.pop(name, None)

    class Host:
        def __init__(self):
            self.env, self.cache, self.bin = env, cache, bin_dir
            self.vbox("7.0.20r163906")

        def vbox(self, version):
            path = bin_dir / "VBoxManage"
            path.write_text("#!/bin/sh\necho %s\n" % version)
            path.chmod(0o755)

        def vagrant_reports(self, version):
            path = bin_dir / "vagrant"
            path.write_text('#!/bin/sh\n[ "$1" = --version ] && { echo "Vagrant %s"; exit 0; }\nexec %s "$@"\n'
                            % (version, REAL_VAGRANT))
            path.chmod(0o755)

        def run(self, provider="virtualbox", **overrides):
            env = dict(self.env, **overrides)
            return subprocess.run([sys.executable, SCRIPT, provider], cwd=ROOT, env=env, capture_output=True,
                                  text=True, timeout=180)

    return Host()


def refused(run, *words):
    assert run.returncode == 1, run.stdout + run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), run.stderr
    return lines[0]


def test_a_host_with_everything_passes(host):
    run = host.run()
    assert run.returncode == 0, run.stderr
    assert "subnet 192.168.56.0/24 inside 192.168.56.0/21" in run.stdout and "Miniconda3-test.sh ok" in run.stdout


def test_virtualbox_newer_than_this_vagrant_drives(host):
    host.vbox("7.1.4r165100")
    refused(host.run(), "VirtualBox 7.1 is newer than Vagrant", "drives (up to 7.0)", "install Vagrant >= 2.4.2")
    host.vagrant_reports("2.4.2")
    assert host.run().returncode == 0


@pytest.mark.parametrize("conf, subnet, ok", [
    (None, None, True),                                   # VirtualBox's default range
    ("* 10.0.0.0/8 192.168.0.0/16\n", None, True),
    ("* 10.0.0.0/8\n", None, False),                      # the lab's range is not allowed there
    (None, "172.28.5.0/24", False),                       # outside the default range
])
def test_host_only_range(host, tmp_path, conf, subnet, ok):
    if conf is not None:
        (tmp_path / "networks.conf").write_text(conf)
    run = host.run(**({"LAB_SUBNET": subnet} if subnet else {}))
    if ok:
        assert run.returncode == 0, run.stderr
    else:
        refused(run, "outside VirtualBox's host-only ranges", "LAB_SUBNET")


def test_memory_beyond_what_the_host_has(host):
    refused(host.run(LAB_SIDECAR_MEMORY="99999999"), "the machines need", "lower LAB_<MACHINE>_MEMORY")


def test_miniconda_installer_missing_or_altered(host):
    line = refused(host.run(LAB_MINICONDA_INSTALLER="Miniconda3-py39_4.9.2-Linux-x86_64.sh"), "is missing")
    assert "Miniconda3-py39_4.9.2-Linux-x86_64.sh" in line and "sha256" in line
    refused(host.run(LAB_MINICONDA_SHA256="0" * 64), "not the pinned", "replace it")
    assert host.run(LAB_PYTHON_ENV="venv", LAB_MINICONDA_SHA256="0" * 64).returncode == 0  # venv: not needed


def test_nginx_rpm_and_key(host):
    refused(host.run(LAB_NGINX_EL6_RPM="nginx-1.16.1-1.el6.ngx.x86_64.rpm"), "is missing", "nginx.org")
    refused(host.run(LAB_NGINX_KEY_FINGERPRINT="573BFD6B3D8FBC641079A6ABABF5BD827BD9BF62"),
            "is not nginx's key 573BFD6B3D8FBC641079A6ABABF5BD827BD9BF62")


def test_no_libvirt_box_for_centos6(host):
    refused(host.run("libvirt"), "bento/centos-6.10 has no libvirt build", "LAB_APP_BOX")
    assert host.run("libvirt", LAB_APP_BOX="my/centos6-libvirt").returncode == 0


def test_only_machines_running_under_the_checked_provider_count():
    # This checkout's docker lab may be up while the VirtualBox path is checked (the lab suite
    # runs these tests with it up): its machines take nothing from what the VMs would need.
    import importlib.util

    spec = importlib.util.spec_from_file_location("vm_preflight", SCRIPT)
    preflight = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(preflight)
    status = "\n".join([
        "1,app,provider-name,docker", "1,app,state,running",
        "1,sidecar,provider-name,virtualbox", "1,sidecar,state,running",
        "1,other,provider-name,virtualbox", "1,other,state,poweroff",
    ])
    assert preflight.running_in(status, "virtualbox") == ["sidecar"]
    assert preflight.running_in(status, "docker") == ["app"]
    assert preflight.running_in(status, "libvirt") == []
