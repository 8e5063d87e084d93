"""devops/joblab-gunicorn across a USR2 upgrade, with a stand-in gunicorn (a new master forked by
the old one on USR2, writing the pidfile; the old one TERMed afterwards, as fab deploy does):
the wrapper must outlive the old master while the new one serves, forward signals to the new one,
and exit once it is gone - as child subreaper, and in the pidfile-following mode CentOS 6's
2.6.32 kernel (no PR_SET_CHILD_SUBREAPER) falls back to."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import ROOT

WRAPPER = os.path.join(ROOT, "devops", "joblab-gunicorn")

FAKE_GUNICORN = textwrap.dedent("""\
    #!%s
    import os, signal, sys, time
    pidfile = os.environ["GUNICORN_PIDFILE"]
    with open(pidfile + ".tmp", "w") as fh:
        fh.write(str(os.getpid()))
    os.rename(pidfile + ".tmp", pidfile)

    def usr2(*_):  # gunicorn: fork, and the child re-execs as the new master
        if os.fork() == 0:
            os.execv(sys.executable, [sys.executable] + sys.argv)

    def term(*_):
        try:
            with open(pidfile) as fh:
                if fh.read().strip() == str(os.getpid()):
                    os.unlink(pidfile)
        except OSError:
            pass
        os._exit(0)

    signal.signal(signal.SIGUSR2, usr2)
    signal.signal(signal.SIGTERM, term)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    while True:
        time.sleep(0.05)
    """) % sys.executable


def read(path):
    try:
        with open(path) as fh:
            return int(fh.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def wait_for(predicate, seconds=10):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.mark.parametrize("follow_pidfile", ["0", "1"], ids=["subreaper", "pidfile-following"])
def test_wrapper_survives_a_usr2_upgrade_and_follows_the_new_master(tmp_path, follow_pidfile):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "gunicorn"
    fake.write_text(FAKE_GUNICORN)
    fake.chmod(0o755)
    pidfile = str(tmp_path / "gunicorn.pid")
    env = dict(os.environ, PATH="%s:%s" % (bin_dir, os.environ["PATH"]), GUNICORN_PIDFILE=pidfile,
               JOBLAB_GUNICORN_FOLLOW_PIDFILE=follow_pidfile)
    wrapper = subprocess.Popen([sys.executable, WRAPPER], env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: read(pidfile))
        old = read(pidfile)
        wrapper.send_signal(signal.SIGUSR2)  # forwarded to the master: it starts a new one
        wait_for(lambda: read(pidfile) not in (0, old))
        new = read(pidfile)
        os.kill(old, signal.SIGTERM)  # fab deploy retires the old master
        wait_for(lambda: not alive(old))
        time.sleep(1.5)  # longer than the wrapper's poll: it must still be there
        assert wrapper.poll() is None, "the wrapper exited while the new master serves"
        wrapper.send_signal(signal.SIGTERM)  # supervisor stops the program: reaches the new master
        assert wrapper.wait(10) == 0
        wait_for(lambda: not alive(new))
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
        pid = read(pidfile)
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)
        _out, err = wrapper.communicate(timeout=10)
    assert ("following the master through" in err) == (follow_pidfile == "1")
