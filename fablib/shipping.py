"""What `fab deploy` and `fab provision` ship to a host, and how it gets there safely."""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shlex
import subprocess
import tarfile
from typing import Any, Dict, Iterator, List, Optional, Union

from invoke.exceptions import Exit

from . import REPO_ROOT, labfile
from .remote import name_of

#: mktemp's template for the per-run staging directory on the host (see staged_upload).
STAGE_TEMPLATE = "/var/tmp/joblab-stage.XXXXXXXXXX"
STAGE_PATTERN = re.compile(r"/var/tmp/joblab-stage\.[A-Za-z0-9]{10}")


def source_tarball(role: str) -> bytes:
    """The committed tree (git archive HEAD) plus the artifacts this role needs, as a tar.gz."""
    tree = subprocess.run(["git", "archive", "--format=tar", "HEAD"], cwd=REPO_ROOT, check=True,
                          capture_output=True).stdout
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        with tarfile.open(fileobj=io.BytesIO(tree)) as src:
            for member in src.getmembers():
                tar.addfile(member, src.extractfile(member) if member.isfile() else None)
        cache = os.path.join(REPO_ROOT, ".cache", "artifacts")
        kafka = "kafka-" + labfile.settings()["LAB_KAFKA_VERSION"]
        wanted = ["ca-certificates"] + (["app", "miniconda"] if role == "app" else [kafka])
        for name in wanted:
            path = os.path.join(cache, name)
            if os.path.exists(path):
                tar.add(path, arcname=os.path.join(".cache", "artifacts", name))
    return out.getvalue()


def sha256_of(data: Union[str, bytes]) -> str:
    """sha256 of a local file (a path) or of bytes."""
    digest = hashlib.sha256()
    if isinstance(data, bytes):
        digest.update(data)
    else:
        with open(data, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def staged_upload(c: Any, data: Union[str, bytes], name: Optional[str] = None) -> Iterator[str]:
    """Upload ``data`` (a local path, or bytes saved as ``name``) for root to use on the host; yield
    its remote path. Root acts only on what it can trust: a fresh directory from `mktemp -d`
    (random name, root's, 0700: unlike a fixed /var/tmp name, nobody can plant a file or a link
    there first), lent to the SSH user for the upload alone (SFTP writes as that user), root's
    again before the file's sha256 is compared with the local one. A mismatch is a one-line Exit
    before anything used it. The directory is removed afterwards, whatever happened."""
    want = sha256_of(data)
    name = name or os.path.basename(str(data))
    stage = c.sudo("mktemp -d %s" % STAGE_TEMPLATE, hide=True).stdout.strip()
    if not STAGE_PATTERN.fullmatch(stage):
        raise Exit("fab: %s: mktemp -d gave %r, not a staging directory" % (name_of(c), stage))
    remote = "%s/%s" % (stage, name)
    try:
        c.sudo("chown %s %s" % (shlex.quote(str(c.user)), stage), hide=True)
        c.put(io.BytesIO(data) if isinstance(data, bytes) else data, remote)
        c.sudo("chown -R root:root %s" % stage, hide=True)
        got = c.sudo("sha256sum %s" % shlex.quote(remote), hide=True).stdout.split()[:1]
        if got != [want]:
            raise Exit("fab: %s: the uploaded %s does not match the local file (sha256 %s, expected %s); "
                       "nothing was installed" % (name_of(c), name, (got or ["none"])[0][:16], want[:16]))
        yield remote
    finally:
        c.sudo("rm -rf %s" % stage, hide=True, warn=True)


def run_provision_scripts(c: Any, scripts: List[str], env: Dict[str, str]) -> None:
    """provision/<script>.sh in order, as root with ``env`` (LAB_ROOT: where the tree is on the
    host); the first failure is a one-line Exit."""
    assignments = " ".join("%s=%s" % (k, shlex.quote(v)) for k, v in sorted(env.items()))
    for script in scripts:
        print("%s: provision/%s.sh" % (name_of(c), script))
        res = c.sudo("env %s bash %s/provision/%s.sh" % (assignments, env["LAB_ROOT"], script), warn=True)
        if not res.ok:
            last = (res.stderr.strip() or res.stdout.strip() or "no output").splitlines()[-1]
            raise Exit("fab: %s: provision/%s.sh failed (exit %d): %s" % (name_of(c), script, res.exited, last))
