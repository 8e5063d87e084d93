"""provision/host/fetch-kafka.sh refuses a jar whose repository checksum does not match (mvn -C), on
this host, no lab needed: a file:// repository serves a made-up Kafka version whose jar's .sha1
is wrong, and declares checksumPolicy "warn" (what Maven does by default) to show that the
script's --strict-checksums wins over it."""
import hashlib
import os
import shutil
import subprocess

import pytest

from tests.infra.conftest import ROOT

pytestmark = pytest.mark.nolab  # no lab machine needed

VERSION = "0.0.1-checksum-test"  # no such Kafka release: nothing real is shadowed or cached
GROUP_DIR = os.path.join("org", "apache", "kafka", "kafka_2.13")
SETTINGS = """<settings>
  <profiles>
    <profile>
      <id>checksum-test</id>
      <repositories>
        <repository>
          <id>checksum-test</id>
          <url>file://%s</url>
          <releases><checksumPolicy>warn</checksumPolicy></releases>
          <snapshots><enabled>false</enabled></snapshots>
        </repository>
      </repositories>
    </profile>
  </profiles>
  <activeProfiles><activeProfile>checksum-test</activeProfile></activeProfiles>
</settings>
"""
POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>org.apache.kafka</groupId>
  <artifactId>kafka_2.13</artifactId>
  <version>%s</version>
</project>
""" % VERSION


def publish(repo, name, data, sha1=None):
    """A file in the repository with its .sha1 (the right one unless ``sha1`` is given)."""
    path = os.path.join(repo, GROUP_DIR, VERSION, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
    with open(path + ".sha1", "w") as fh:
        fh.write(sha1 or hashlib.sha1(data).hexdigest())


@pytest.fixture
def tampered_repo(tmp_path):
    repo = tmp_path / "repo"
    publish(str(repo), "kafka_2.13-%s.pom" % VERSION, POM.encode())
    publish(str(repo), "kafka_2.13-%s.jar" % VERSION, b"PK not the jar that was published", sha1="0" * 40)
    settings = tmp_path / "settings.xml"
    settings.write_text(SETTINGS % repo)
    yield settings
    # Only the made-up version can have reached mvn's local repository (its pom, or "not found" marks).
    shutil.rmtree(os.path.expanduser(os.path.join("~", ".m2", "repository", GROUP_DIR, VERSION)), ignore_errors=True)


@pytest.mark.skipif(shutil.which("mvn") is None, reason="needs Maven (provision/host/host-deps.sh installs it)")
def test_fetch_kafka_fails_on_a_bad_checksum(tampered_repo, tmp_path):
    cache = tmp_path / "cache"
    env = dict(os.environ, LAB_KAFKA_VERSION=VERSION, ARTIFACT_CACHE=str(cache), KAFKA_MVN_SETTINGS=str(tampered_repo))
    run = subprocess.run([os.path.join(ROOT, "provision", "host", "fetch-kafka.sh")], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode != 0, run.stdout + run.stderr
    error = run.stderr.strip().splitlines()[-1]
    assert error.startswith("fetch-kafka: error: mvn could not resolve Kafka %s" % VERSION), error
    assert "Checksum validation failed" in error and "0000000000000000000000000000000000000000" in error, error
    # Nothing half-made is left in the cache.
    assert not (cache / ("kafka-" + VERSION)).exists()
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []
