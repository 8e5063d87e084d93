"""What `fab provision` ships to a host that has no copy of the repository."""
from __future__ import annotations

import io
import os
import subprocess
import tarfile

from . import REPO_ROOT


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
        wanted = ["ca-certificates"] + (["app", "miniconda"] if role == "app" else ["kafka-3.9.1"])
        for name in wanted:
            path = os.path.join(cache, name)
            if os.path.exists(path):
                tar.add(path, arcname=os.path.join(".cache", "artifacts", name))
    return out.getvalue()
