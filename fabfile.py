"""Fabric tasks for the lab's machines and for any SSH host (a real RHEL server included).

Hosts: the lab's machines from `vagrant ssh-config` by default (`make lab` writes it to
.vagrant/ssh-config; fabric.yaml points Fabric at it): `app` and `sidecar`, or in the cluster
topology `lb`, `app1`..`appN`, `kafka1`..`kafka3`, `db`; any host with `fab -H host TASK`. Tasks for
the app run on every app machine, one after another.

    fab status                    services, supervisor programs, gunicorn workers, /readyz, lag; in
                                  the cluster also brokers, under-replicated partitions, the quorum
    fab logs [--follow] [--lines=N]
    fab restart [--hard]          graceful (nginx reload, gunicorn HUP, workers finish their job)
    fab scale --web=+1|-1|N       TTIN/TTOU on the gunicorn master
    fab scale --workers=N         job worker processes, at most the jobs topic's partitions; kept as
                                  LAB_JOB_WORKERS in lab.local.yml, so a re-provision keeps it
    fab deploy [--source=DIR]     build, upload, migrate, switch `current`, USR2 reload, health check;
                                  in the cluster a rolling deploy: each app node is drained on the
                                  load balancer first and serves again once healthy
    fab rollback                  back to the previous release, same graceful path
    fab provision [--role=ROLE]   run provision/*.sh on the host, as on the lab machines

Errors are one line with the cause and exit non-zero (invoke's Exit). Helpers: the fablib package.
"""
from __future__ import annotations

import os
import posixpath
import shlex
import time

from fabric import task
from invoke.exceptions import Exit, UnexpectedExit

from fablib import REPO_ROOT as ROOT
from fablib import labfile
from fablib.cluster import PORTS, SERVICES, drained, kafka_health, quorum_state
from fablib.releases import (KEEP_RELEASES, DeployError, activate, build_wheel, install_release, list_releases,
                             prune_releases, remove_release, wheel_version)
from fablib.remote import (APP_HOSTS, APP_USER, LAB_HOSTS, LOGS, SUPERVISORCTL, capped_workers, consumer_lag, env_value,
                           gunicorn_master_pid, gunicorn_worker_count, http_get, name_of, store_extra,
                           one_line_errors, parse_supervisor_status, restart_job_workers, role_of,
                           signal_app_process, wait_for_worker_count, web_scale_signals)
from fablib.shipping import run_provision_scripts, source_tarball, staged_upload


@task(hosts=LAB_HOSTS)
@one_line_errors
def status(c):
    """One screen per host: services, supervisor programs, gunicorn workers, version, readiness, lag."""
    role = role_of(c)
    print("== %s (%s)" % (name_of(c), role))
    for name in SERVICES[role]:
        res = c.sudo("service %s status" % name, hide=True, warn=True)
        print("  service %-12s %s" % (name, "running" if res.ok else "NOT running (exit %d)" % res.exited))
    if role == "lb":
        for line in c.sudo("/usr/local/sbin/joblab-lb status", hide=True).stdout.splitlines():
            print("  app node  %s" % line)
        return
    if role != "app":
        for port in PORTS[role]:
            ok = c.run("timeout 3 bash -c '</dev/tcp/127.0.0.1/%d'" % port, hide=True, warn=True).ok
            print("  port %-5d %s" % (port, "listening" if ok else "CLOSED"))
        if role in ("kafka", "sidecar"):
            print("  quorum    %s" % quorum_state(c))
        return
    programs = parse_supervisor_status(c.sudo(SUPERVISORCTL + " status", hide=True, warn=True).stdout)
    for name, state in programs:
        print("  program %-28s %s" % (name, state))
    master = gunicorn_master_pid(c)
    print("  gunicorn master %d, %d workers" % (master, gunicorn_worker_count(c, master)))
    names, current, previous = list_releases(c)
    print("  release   %s (previous: %s; %d kept)" % (current, previous, len(names)))
    print("  /v1/info  %s" % http_get(c, "/v1/info"))
    print("  /readyz   %s" % http_get(c, "/readyz"))
    print("  consumer group workers, lag on jobs: %s" % consumer_lag(c))
    print("  kafka     %s" % kafka_health(c))


@task(hosts=LAB_HOSTS)
@one_line_errors
def logs(c, follow=False, lines=50):
    """Tail nginx, gunicorn, worker and supervisord logs (app) or Kafka and PostgreSQL (sidecar)."""
    files = " ".join(LOGS[role_of(c)])
    c.sudo("bash -c %s" % shlex.quote("tail -n %d %s %s 2>/dev/null" % (int(lines), "-F" if follow else "", files)),
           warn=not follow, pty=follow)


@task(hosts=APP_HOSTS)
@one_line_errors
def restart(c, hard=False):
    """Graceful: nginx reload, gunicorn HUP, job workers finish their job. --hard: the seed's way."""
    if role_of(c) != "app":
        raise Exit("fab: %s: restart is for the app host" % name_of(c))
    if hard:
        # The seed's kill-everything: stop all, kill stragglers, start services afresh. Only the
        # app user's stragglers: a root process that happens to match the pattern is not ours.
        c.sudo("service supervisord stop", warn=True, hide=True)
        c.sudo("pkill -KILL -u %s -f 'gunicorn|python -m worker'" % APP_USER, warn=True, hide=True)
        c.sudo("service supervisord start", hide=True)
        c.sudo("service nginx restart", hide=True)
        print("%s: hard restart done" % name_of(c))
        return
    master = gunicorn_master_pid(c)  # first: a pidfile fab refuses to trust stops it before anything changed
    c.sudo("nginx -t", hide=True)
    c.sudo("service nginx reload", hide=True)
    # HUP: new workers from the (preloaded) master; in-flight requests finish on the old ones.
    signal_app_process(c, master, "HUP")
    restart_job_workers(c)
    print("%s: nginx reloaded, gunicorn workers re-forked, job workers restarted" % name_of(c))


@task(hosts=APP_HOSTS, optional=["web", "workers"])
@one_line_errors
def scale(c, web=None, workers=None):
    """--web=+1|-1|N: gunicorn workers (TTIN/TTOU on the master); --workers=N: job workers."""
    if web is None and workers is None:
        raise Exit("fab: scale needs --web=+1|-1|N and/or --workers=N")
    if web is not None:
        master = gunicorn_master_pid(c)
        current = gunicorn_worker_count(c, master)
        sig, times = web_scale_signals(str(web), current)
        target = current + (times if sig == "TTIN" else -times)
        for _ in range(times):
            signal_app_process(c, master, sig)
        now = wait_for_worker_count(c, master, target)
        if now != target:
            raise Exit("fab: %s: gunicorn has %d workers, not %d, after 30 s" % (name_of(c), now, target))
        print("%s: gunicorn %d -> %d workers (%s x%d)" % (name_of(c), current, now, sig, times))
    if workers is not None:
        partitions = int(env_value(c, "JOBLAB_KAFKA_PARTITIONS") or labfile.settings()["LAB_KAFKA_PARTITIONS"])
        n, capped = capped_workers(int(workers), partitions)
        pinned = os.environ.get("LAB_JOB_WORKERS")
        if pinned and pinned != str(n):
            raise Exit("fab: LAB_JOB_WORKERS=%s in the environment overrides lab.local.yml: unset it to scale to %d"
                       % (pinned, n))
        if capped:
            print("%s: --workers=%s capped at %d: the jobs topic has %d partitions" % (name_of(c), workers, n, partitions))
        # The setting provisioning renders, then the renderer itself (supervisor.sh: joblab-worker.ini,
        # reread + update, which replaces the process group; each old worker finishes its job first).
        before = labfile.local_settings().get("LAB_JOB_WORKERS")
        labfile.save_local_setting("LAB_JOB_WORKERS", str(n))
        try:
            provision_role(c, "app", ["supervisor"])
        except BaseException:
            labfile.save_local_setting("LAB_JOB_WORKERS", None if before is None else str(before))
            raise
        print("%s: %d job workers (LAB_JOB_WORKERS=%d in lab.local.yml: a re-provision keeps it)" % (name_of(c), n, n))


@task(hosts=APP_HOSTS, optional=["source"])
@one_line_errors
def deploy(c, source=ROOT, keep=KEEP_RELEASES):
    """Build the app from a working tree (--source, default this one), install it as a new release,
    migrate, switch `current`, reload gracefully; on failure restore the previous release. Behind
    the cluster's load balancer: the node is drained first and put back once it answers healthy;
    a failed node stays drained (and the deploy stops there: the other nodes keep the old release)."""
    with drained(c):
        _deploy(c, source, keep)


def _deploy(c, source, keep):
    started = time.monotonic()
    wheel = build_wheel(source)
    version = wheel_version(wheel)
    _names, previous, before_previous = list_releases(c)
    if previous is None:
        raise Exit("fab: %s: no current release (provision the host first: fab provision)" % name_of(c))
    name = None
    pip = "%s/bin/python -m pip install -q --disable-pip-version-check --root-user-action=ignore" % (
        env_value(c, "JOBLAB_ENV_PREFIX"))
    # Installed by root from a fresh root-only directory, once its sha256 matches the local wheel's
    # (staged_upload); the directory is gone afterwards, whatever happened.
    with staged_upload(c, wheel) as remote_wheel:
        try:
            rel = install_release(c, remote_wheel)
            name = posixpath.basename(rel)
            # The release's dependencies, with the driver of the store the host uses.
            c.sudo("%s --prefer-binary '%s%s'" % (pip, remote_wheel, store_extra(c)), hide=True)
            # Migrations run with the new code before anything serves it (they must suit both
            # versions); they import the app, so a release that cannot even import stops here.
            c.sudo("-u %s env JOBLAB_RELEASE_SITE=%s/site /usr/local/bin/joblab-exec flask --app app db upgrade"
                   % (APP_USER, rel), hide=True)
        except UnexpectedExit as exc:
            if name:
                remove_release(c, name)
            last = ((exc.result.stderr or exc.result.stdout).strip().splitlines() or ["no output"])[-1]
            raise Exit("fab: %s: deploy of %s failed before the switch: %s; still serving %s"
                       % (name_of(c), version, last, previous))
    try:
        activate(c, name)
    except (DeployError, UnexpectedExit) as exc:
        reason = str(exc).splitlines()[0] if isinstance(exc, DeployError) else "`%s` failed" % exc.result.command
        # current and previous as they were before this deploy; then the failed release goes.
        activate(c, previous, before_previous or "none")
        remove_release(c, name)
        raise Exit("fab: %s: deploy of %s failed: %s; rolled back to %s" % (name_of(c), version, reason, previous))
    prune_releases(c, keep)  # the newest `keep`, and always the one just replaced (rollback's target)
    print("%s: deployed %s (release %s) in %.0f s" % (name_of(c), version, name, time.monotonic() - started))


@task(hosts=APP_HOSTS)
@one_line_errors
def rollback(c):
    """Serve the release that was current before the last deploy (or rollback) again (drained on
    the cluster's load balancer meanwhile, like a deploy)."""
    with drained(c):
        _rollback(c)


def _rollback(c):
    names, current, target = list_releases(c)
    if target is None or target not in names or target == current:
        raise Exit("fab: %s: no previous release to roll back to (current: %s)" % (name_of(c), current))
    try:
        activate(c, target)
    except DeployError as exc:
        activate(c, current)
        raise Exit("fab: %s: rollback to %s failed: %s; still on %s" % (name_of(c), target, exc, current))
    print("%s: rolled back from %s to %s" % (name_of(c), current, target))


@task(optional=["role"])
@one_line_errors
def provision(c, role=None):
    """Run the provision/*.sh scripts of a role (lab.yml order) on any SSH host, as root via sudo."""
    lab = labfile.load()
    roles = {m.get("role", name): m["provision"] for name, m in lab["machines"].items()}
    if role is None and name_of(c) in lab["machines"]:
        role = lab["machines"][name_of(c)].get("role", name_of(c))
    if role not in roles:
        raise Exit("fab: provision needs --role=%s for host %s" % ("|".join(roles), name_of(c)))
    provision_role(c, role, roles[role])
    print("%s: provisioned as %s" % (name_of(c), role))


def provision_role(c, role, scripts):
    """Run provision/<script>.sh for ``scripts`` of ``role`` with lab.yml's resolved settings."""
    lab = labfile.load()
    env = labfile.settings(lab)
    # The machines' addresses and the Kafka layout, as the Vagrantfile hands them out; LAB_*_HOST(S)
    # in the environment win (any host: say where its database and brokers are).
    env.update(labfile.provision_env(lab, os.environ))
    env["LAB_ROLE"] = role
    if name_of(c) in lab["machines"]:
        env.update(LAB_MACHINE=name_of(c), LAB_SELF_HOST=labfile.machine_ip(name_of(c), lab))
    elif os.environ.get("LAB_SELF_HOST"):
        env["LAB_SELF_HOST"] = os.environ["LAB_SELF_HOST"]
    elif role == "kafka":
        raise Exit("fab: %s: a broker of a quorum needs LAB_SELF_HOST=<its address, as listed in LAB_KAFKA_HOSTS>"
                   % name_of(c))
    if c.run("test -f /vagrant/provision/lib/common.sh", hide=True, warn=True).ok:
        # A lab machine: the repository is already there (and the handoff dir).
        run_provision_scripts(c, scripts, dict(env, LAB_ROOT="/vagrant"))
    else:
        # Any other host: ship the committed tree and the role's artifacts into a fresh root-only
        # directory (staged_upload: checked by sha256, removed afterwards, also on failure); the
        # scripts run as root from there. Separate hosts share no folder: copy the sidecar's
        # /etc/joblab/secrets/db-password to the app's LAB_HANDOFF first.
        with staged_upload(c, source_tarball(role), "joblab-provision.tar.gz") as tarball:
            tree = posixpath.join(posixpath.dirname(tarball), "tree")
            # --no-same-owner: root's files, whatever uid the tarball recorded.
            c.sudo("bash -c %s" % shlex.quote("mkdir -m 0700 %s && tar -xzf %s --no-same-owner -C %s"
                                              % (tree, tarball, tree)), hide=True)
            run_provision_scripts(c, scripts, dict(env, LAB_ROOT=tree, LAB_HANDOFF="/etc/joblab/handoff"))

