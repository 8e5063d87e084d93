"""Every config template in devops/ rendered through provision/lib/common.sh's render_template,
with values full of what shells and bash versions treat specially: the output must be the
template with each @KEY@ replaced by its value, byte for byte (no quotes added, no & expanded,
no backslash eaten), whatever the bash."""
import grp
import os
import pwd
import re
import subprocess

import pytest

from tests.conftest import ROOT

DEVOPS = os.path.join(ROOT, "devops")
COMMON = os.path.join(ROOT, "provision", "lib", "common.sh")
PLACEHOLDER = re.compile(r"@([A-Z_][A-Z0-9_]*)@")
# Quotes (bash <= 4.2 kept them), & (bash >= 5.2 puts the match there), backslashes, $, globs.
TRICKY = ['1', 'joblab', 'p@ss&w"o\'rd\\n$HOME*?[x]', 'a/b//c', '&&', '"quoted"', "x & y", "\\&"]


def templates():
    for folder, _dirs, files in os.walk(DEVOPS):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, errors="replace") as fh:
                if PLACEHOLDER.search(fh.read()):
                    yield os.path.relpath(path, ROOT)


def render(src, dest, values):
    owner = "%s:%s" % (pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name)
    script = 'source "$1"; shift; render_template "$@"'
    args = [COMMON, os.path.join(ROOT, src), dest, "644", owner] + ["%s=%s" % kv for kv in values.items()]
    return subprocess.run(["bash", "-c", script, "render"] + args, capture_output=True, text=True, timeout=30)


def test_there_are_templates():
    assert {"devops/joblab.env", "devops/nginx.conf", "devops/supervisor/joblab-worker.ini"} <= set(templates())


@pytest.mark.parametrize("src", sorted(templates()))
def test_template_renders_every_value_verbatim(src, tmp_path):
    with open(os.path.join(ROOT, src)) as fh:
        text = fh.read()
    keys = sorted(set(PLACEHOLDER.findall(text)))
    values = {key: TRICKY[i % len(TRICKY)] + "-" + key.lower() for i, key in enumerate(keys)}
    expected = PLACEHOLDER.sub(lambda m: values[m.group(1)], text)
    dest = tmp_path / "out"
    run = render(src, str(dest), values)
    assert run.returncode == 0, run.stderr
    assert dest.read_text() == expected


def test_an_unfilled_placeholder_is_an_error(tmp_path):
    run = render("devops/supervisor/joblab-worker.ini", str(tmp_path / "out"), {"APP_USER": "joblab"})
    assert run.returncode != 0 and "unfilled placeholder" in run.stderr
