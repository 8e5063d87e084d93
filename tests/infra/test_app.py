"""The app machine: nginx :80 -> gunicorn 127.0.0.1:8000 + job workers under supervisord."""
import pytest

from tests.infra.conftest import APP_USER, SETTINGS, machine_ip

testinfra_hosts = ["ssh://app"]



@pytest.mark.parametrize("name", ["nginx", "curl", "procps"])
def test_package(host, name):
    assert host.package(name).is_installed


@pytest.mark.parametrize("name", ["nginx", "supervisord"])
def test_service_enabled_at_boot(host, name):
    assert host.file("/etc/init.d/" + name).mode == 0o755
    assert host.run("ls /etc/rc2.d/ | grep -q '^S[0-9][0-9]%s$'" % name).rc == 0


@pytest.mark.parametrize("name", ["nginx", "supervisord"])
def test_service_running(root, name):
    assert root.run("service %s status" % name).rc == 0


@pytest.mark.parametrize("program", ["joblab-web", "joblab-worker:joblab-worker-0"])
def test_supervisor_program_running(root, program):
    out = root.check_output("supervisorctl -c /etc/supervisord.conf status %s" % program)
    assert " RUNNING " in out, out


@pytest.mark.parametrize("spec, listening", [
    ("tcp://0.0.0.0:80", True),
    ("tcp://127.0.0.1:8000", True),
    ("tcp://0.0.0.0:8000", False),
])
def test_socket(host, spec, listening):
    assert host.socket(spec).is_listening is listening


@pytest.mark.parametrize("port", [9092, 5432])
def test_sidecar_reachable(host, port):
    assert host.run("timeout 5 bash -c '</dev/tcp/%s/%d'" % (machine_ip("sidecar"), port)).rc == 0


@pytest.mark.parametrize("path, mode, owner, group", [
    ("/etc/joblab/joblab.env", 0o640, "root", APP_USER),
    ("/etc/joblab/secrets/db-password", 0o640, "root", APP_USER),
    ("/etc/joblab/secrets/app-secret", 0o640, "root", APP_USER),
    ("/etc/joblab/gunicorn.conf.py", 0o644, "root", "root"),
    ("/etc/supervisord.conf", 0o644, "root", "root"),
    ("/etc/supervisord.d/joblab-web.ini", 0o644, "root", "root"),
    ("/etc/supervisord.d/joblab-worker.ini", 0o644, "root", "root"),
    ("/etc/nginx/nginx.conf", 0o644, "root", "root"),
    ("/var/run/supervisor", 0o700, "root", "root"),
    (SETTINGS["LAB_METRICS_DIR"], 0o750, APP_USER, APP_USER),
])
def test_managed_file(root, path, mode, owner, group):
    f = root.file(path)
    assert f.exists and not f.is_symlink and (f.mode, f.user, f.group) == (mode, owner, group)


def test_supervisor_socket_is_private_and_not_in_tmp(root):
    conf = root.file("/etc/supervisord.conf").content_string
    assert "/tmp/" not in conf
    assert root.file("/var/run/supervisor/supervisor.sock").is_socket


@pytest.mark.parametrize("setting", ["stopasgroup=true", "killasgroup=true", "user=%s" % APP_USER])
@pytest.mark.parametrize("program", ["joblab-web", "joblab-worker"])
def test_supervisor_program_settings(host, program, setting):
    assert setting in host.file("/etc/supervisord.d/%s.ini" % program).content_string.replace(" ", "")


def test_supervisor_waits_longer_than_gunicorn_drains(host):
    ini = host.file("/etc/supervisord.d/joblab-web.ini").content_string.replace(" ", "")
    waits = int(ini.split("stopwaitsecs=")[1].split()[0])
    graceful = host.run("sudo -u %s /usr/local/bin/joblab-exec python -c "
                        "\"import runpy; print(runpy.run_path('/etc/joblab/gunicorn.conf.py')['graceful_timeout'])\""
                        % APP_USER)
    assert graceful.rc == 0 and waits > int(graceful.stdout.strip().splitlines()[-1])


def test_supervisor_waits_longer_than_the_longest_job(host):
    """stopwaitsecs of the job workers is rendered from the longest job the app's settings allow."""
    ini = host.file("/etc/supervisord.d/joblab-worker.ini").content_string.replace(" ", "")
    waits = int(ini.split("stopwaitsecs=")[1].split()[0])
    longest = host.run("sudo -u %s /usr/local/bin/joblab-exec python -c "
                       "'from app.config import load_settings; print(load_settings()[\"JOB_MAX_SECONDS\"])'" % APP_USER)
    assert longest.rc == 0 and waits > float(longest.stdout.strip().splitlines()[-1])
    assert float(longest.stdout.strip().splitlines()[-1]) == float(SETTINGS["LAB_JOB_MAX_SECONDS"])


@pytest.mark.parametrize("pattern", ["gunicorn", "python -m worker"])
def test_app_processes_are_not_root(host, pattern):
    procs = host.process.filter(user=APP_USER)
    mine = [p for p in procs if pattern in p.args]
    assert mine, "no %s process runs as %s" % (pattern, APP_USER)
    root_ones = [p for p in host.process.filter(user="root") if pattern in p.args]
    assert root_ones == []


def test_nginx_config_is_valid_and_quiet(root):
    assert root.run("nginx -t").rc == 0
    assert "server_tokens off" in root.file("/etc/nginx/nginx.conf").content_string


def test_http_through_nginx(host):
    resp = host.run("curl -s -i http://127.0.0.1/healthz")
    assert resp.rc == 0 and " 200 " in resp.stdout.splitlines()[0] and '"status":"ok"' in resp.stdout
    assert "Server: nginx\r" in resp.stdout  # no version: server_tokens off


def test_readyz_is_200(host):
    out = host.check_output("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1/readyz")
    assert out == "200"


def test_debug_is_off(host):
    info = host.check_output("curl -s http://127.0.0.1/nothing-here")
    assert "Traceback" not in info and '"status":404' in info
