"""The sidecar machine: Kafka (KRaft) and the results database, both init.d services."""
import pytest

from tests.infra.conftest import machine_ip

testinfra_hosts = ["ssh://sidecar"]


@pytest.mark.parametrize("name", ["postgresql", "openjdk-17-jre-headless"])
def test_package(host, name):
    assert host.package(name).is_installed


@pytest.mark.parametrize("name", ["kafka", "postgresql"])
def test_service_enabled_at_boot(host, name):
    assert host.run("ls /etc/rc2.d/ | grep -q '^S[0-9][0-9]%s$'" % name).rc == 0


@pytest.mark.parametrize("name", ["kafka", "postgresql"])
def test_service_running(root, name):
    assert root.run("service %s status" % name).rc == 0


@pytest.mark.parametrize("spec", ["tcp://0.0.0.0:9092", "tcp://127.0.0.1:9093", "tcp://0.0.0.0:5432"])
def test_socket(host, spec):
    assert host.socket(spec).is_listening


@pytest.mark.parametrize("user, pattern", [("kafka", "kafka.Kafka"), ("postgres", "postgres")])
def test_service_users(host, user, pattern):
    assert [p for p in host.process.filter(user=user) if pattern in p.args]
    assert not [p for p in host.process.filter(user="root") if pattern in p.args and "sudo" not in p.args]


def test_kafka_advertises_the_lab_address(root):
    conf = root.file("/etc/kafka/server.properties").content_string
    assert "advertised.listeners=PLAINTEXT://%s:9092" % machine_ip("sidecar") in conf
    assert "auto.create.topics.enable=false" in conf


def test_kafka_topics_exist(root):
    # Created by the app's provisioning (flask kafka create-topics); one log dir per partition.
    out = root.check_output("ls /var/lib/kafka/kraft-combined-logs")
    assert "jobs-0" in out and "jobs.dead-0" in out


@pytest.mark.parametrize("path, mode", [("/etc/joblab/secrets/db-password", 0o600)])
def test_secret_file(root, path, mode):
    f = root.file(path)
    assert f.exists and f.mode == mode and f.user == "root"


def test_database_accepts_the_app_role_only_with_a_password(root):
    hba = root.check_output("cat $(sudo -u postgres psql -tAc 'SHOW hba_file')")
    assert "%s/32" % machine_ip("app") in hba and "trust" not in [line.split()[-1] for line in hba.splitlines()
                                                                  if line.strip() and line.split()[0] == "host"]
    assert root.check_output("sudo -u postgres psql -tAc \"SELECT 1 FROM pg_database WHERE datname='joblab'\"") == "1"
