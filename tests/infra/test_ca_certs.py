"""provision/ca-certs.sh in a throw-away container of the lab's own image (Debian 12, the base
image `make lab` built): an extra CA from the host ends up in the OS trust store and pip's and
conda's configs point at that store; a second run changes nothing. (The EL6 branch - `update-ca-
trust enable` first - cannot run here: no EL6 image can be built without an RPM mirror.)"""
import os
import subprocess

import pytest

from tests.infra.conftest import LAB, ROOT

IMAGE = os.environ.get("LAB_IMAGE") or LAB["profiles"]["debian12"]["image"]


@pytest.fixture
def extra_ca(tmp_path):
    cache = tmp_path / "artifacts" / "ca-certificates"
    cache.mkdir(parents=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=joblab test proxy CA", "-keyout", str(tmp_path / "key.pem"),
                    "-out", str(cache / "joblab-test-proxy.crt")], check=True, capture_output=True)
    return tmp_path / "artifacts"


def test_extra_ca_reaches_the_trust_store_pip_and_conda(extra_ca):
    script = ("bash /vagrant/provision/ca-certs.sh && bash /vagrant/provision/ca-certs.sh"
              " && cat /etc/pip.conf /etc/conda/.condarc"
              " && grep -c 'BEGIN CERTIFICATE' /etc/ssl/certs/ca-certificates.crt"
              " && openssl verify -CAfile /etc/ssl/certs/ca-certificates.crt"
              " /usr/local/share/ca-certificates/joblab/joblab-test-proxy.crt")
    run = subprocess.run(["docker", "run", "--rm", "--pull", "never", "-v", "%s:/vagrant:ro" % ROOT,
                          "-v", "%s:/cache:ro" % extra_ca, "-e", "LAB_ARTIFACTS=/cache", "--entrypoint", "bash",
                          IMAGE, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert out.count("trust store refreshed") == 1  # the second run changed nothing
    assert "cert = /etc/ssl/certs/ca-certificates.crt" in out and "ssl_verify: /etc/ssl/certs/ca-certificates.crt" in out
    assert "joblab-test-proxy.crt: OK" in out
