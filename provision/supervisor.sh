#!/usr/bin/env bash
# supervisord as a SysV service on the app machine, running joblab-web (gunicorn) and joblab-worker
# (the job workers) as the app user. supervisor lives in its own small virtualenv, pinned below, so
# rebuilding or upgrading the app's packages can never break the process manager that runs them;
# the venv is made with the app env's interpreter, which on CentOS 6 (system Python 2.6) is the
# only Python 3 there is. Needs python-env.sh and app.sh first. Run as root.
#   /etc/supervisord.conf, /etc/supervisord.d/joblab-{web,worker}.ini   from devops/
#   /etc/init.d/supervisord   devops/init.d/supervisord.rhel (chkconfig) or .lsb (update-rc.d)
# Settings (lab.yml, resolved): LAB_JOB_WORKERS job worker processes (fab scale --workers sets it).
# Changed program files are applied with supervisorctl reread + update (only those programs
# restart); a changed supervisord.conf restarts supervisord; nothing changed, nothing restarts.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

SUPERVISOR_VERSION=4.3.0
SUPERVISOR_PREFIX=/usr/local/envs/supervisor
need_settings LAB_ENV_NAME LAB_APP_USER LAB_JOB_WORKERS

DEVOPS="$LAB_ROOT/devops"
APP_HOME=/var/lib/joblab
SUPERVISORCTL=("$SUPERVISOR_PREFIX/bin/supervisorctl" -c /etc/supervisord.conf)

ensure_supervisor_venv() {
    local have
    have="$("$SUPERVISOR_PREFIX/bin/supervisord" --version 2>/dev/null || true)"
    [[ "$have" == "$SUPERVISOR_VERSION" ]] && return 0
    say "installing supervisor $SUPERVISOR_VERSION into $SUPERVISOR_PREFIX"
    if [[ ! -x "$SUPERVISOR_PREFIX/bin/pip" ]]; then
        rm -rf "$SUPERVISOR_PREFIX"
        "$LAB_ENV_PREFIX/bin/python" -m venv "$SUPERVISOR_PREFIX" || die "cannot create $SUPERVISOR_PREFIX"
    fi
    "$SUPERVISOR_PREFIX/bin/python" -m pip install --quiet --disable-pip-version-check \
        "supervisor==$SUPERVISOR_VERSION" || die "pip install supervisor==$SUPERVISOR_VERSION failed"
}

# ensure_link TARGET LINK
ensure_link() {
    [[ "$(readlink "$2" || true)" == "$1" ]] && return 0
    ln -sfn "$1" "$2"
    say "linked $2 -> $1"
}

# Wait while programs are still starting; die if joblab-web is not RUNNING after a (re)start
# (else only report it), report workers that are not RUNNING (e.g. Kafka unreachable).
check_programs() {
    local strict="$1" out i
    for ((i = 0; i < 40; i++)); do
        out="$("${SUPERVISORCTL[@]}" status 2>&1 || true)"
        grep -qE ' (STARTING|BACKOFF) ' <<<"$out" || break
        sleep 1
    done
    if ! grep -qE '^joblab-web +RUNNING' <<<"$out"; then
        [[ "$strict" == 1 ]] || { say "warning: joblab-web is not RUNNING: $(grep '^joblab-web' <<<"$out")"; return 0; }
        die "joblab-web is not RUNNING:
$out
--- /var/log/joblab/web-error.log (last lines):
$(tail -n 20 /var/log/joblab/web-error.log 2>/dev/null)"
    fi
    if grep -E '^joblab-worker:' <<<"$out" | grep -vqE ' RUNNING '; then
        say "warning: job workers not all RUNNING (Kafka or the database unreachable? see /var/log/joblab/joblab-worker-*.log):"
        grep -E '^joblab-worker:' <<<"$out" | grep -vE ' RUNNING ' >&2
    fi
}

# supervisord (root) opens, appends to and rotates the programs' log files in /var/log/joblab.
# The directory is root's: the app user may read its logs (group) but can create, rename or
# unlink nothing there, so it cannot plant a link (say web-access.log -> /etc/cron.d/x) for
# root to follow. A host provisioned before had the directory owned by the app user: links and
# hard links left there go, files it owns become root's (find -P never follows a link; the
# directory is root's first, so nothing can be swapped in between).
secure_program_log_dir() {
    local dir=/var/log/joblab found
    ensure_dir "$dir" 750 "root:$LAB_APP_USER"
    found="$(find -P "$dir" -mindepth 1 -maxdepth 1 \( -type l -o \( -type f -links +1 \) \) -print -delete)"
    [[ -z "$found" ]] || say "removed links from $dir (root opens the files there): ${found//$'\n'/ }"
    found="$(find -P "$dir" -mindepth 1 -maxdepth 1 -type f -user "$LAB_APP_USER" -print -exec chown root:root {} +)"
    [[ -z "$found" ]] || say "$dir: $(wc -l <<<"$found") file(s) of $LAB_APP_USER now root's"
}

require_root
detect_os
[[ -x "$LAB_ENV_PREFIX/bin/python" ]] || die "no Python env at $LAB_ENV_PREFIX (run provision/python-env.sh first)"
if ! id -u "$LAB_APP_USER" >/dev/null 2>&1 || [[ ! -x /usr/local/bin/joblab-exec ]]; then
    die "the app is not installed (run provision/app.sh first)"
fi
[[ "$LAB_JOB_WORKERS" =~ ^[1-9][0-9]*$ ]] || die "LAB_JOB_WORKERS must be a positive number (got '$LAB_JOB_WORKERS')"

ensure_supervisor_venv
ensure_link "$SUPERVISOR_PREFIX/bin/supervisorctl" /usr/local/bin/supervisorctl
ensure_link "$SUPERVISOR_PREFIX/bin/supervisord" /usr/local/bin/supervisord

ensure_dir /var/log/supervisor 700 root:root
ensure_dir /var/run/supervisor 700 root:root
secure_program_log_dir
ensure_dir /etc/supervisord.d 755 root:root

main_changed=0
programs_changed=0
render_template "$DEVOPS/supervisord.conf" /etc/supervisord.conf 644 root:root && main_changed=1
render_template "$DEVOPS/supervisor/joblab-web.ini" /etc/supervisord.d/joblab-web.ini 644 root:root \
    "APP_USER=$LAB_APP_USER" "APP_HOME=$APP_HOME" && programs_changed=1
# The worker's stop wait is derived from the longest job allowed (JOBLAB_JOB_MAX_SECONDS in
# joblab.env, from lab.yml's LAB_JOB_MAX_SECONDS) by the code that runs, read as the app user: root
# never imports Python from where that user can write (joblab-exec runs in its home).
stop_wait="$(su -s /bin/sh "$LAB_APP_USER" -c "/usr/local/bin/joblab-exec python -m worker.defaults stop-wait")" \
    || die "cannot derive the worker's stop wait from the installed app (python -m worker.defaults stop-wait)"
[[ "$stop_wait" =~ ^[1-9][0-9]{0,4}$ ]] || die "the worker's stop wait is not a number of seconds: '$stop_wait'"
render_template "$DEVOPS/supervisor/joblab-worker.ini" /etc/supervisord.d/joblab-worker.ini 644 root:root \
    "APP_USER=$LAB_APP_USER" "APP_HOME=$APP_HOME" "JOB_WORKERS=$LAB_JOB_WORKERS" "STOP_WAIT=$stop_wait" \
    && programs_changed=1

if [[ "$OS_FAMILY" == rhel ]]; then
    init_script="$DEVOPS/init.d/supervisord.rhel"
else
    init_script="$DEVOPS/init.d/supervisord.lsb"
fi
install_file "$init_script" /etc/init.d/supervisord 755 root:root || true
service_enable supervisord

strict=1
if ! service supervisord status >/dev/null 2>&1; then
    service_start supervisord
elif [[ $main_changed -eq 1 ]]; then
    say "supervisord.conf changed: restarting supervisord and its programs"
    service supervisord restart >/dev/null || die "service supervisord restart failed"
elif [[ $programs_changed -eq 1 ]]; then
    say "program files changed: supervisorctl reread + update"
    "${SUPERVISORCTL[@]}" reread >/dev/null || die "supervisorctl reread failed"
    "${SUPERVISORCTL[@]}" update || die "supervisorctl update failed"
else
    strict=0
fi
check_programs "$strict"
