#!/usr/bin/env bash
# The results database on the sidecar: database `joblab` owned by role/login `joblab`, whose password
# is generated here once (/etc/joblab/secrets/db-password) and handed to the app machine through the
# host-shared dir $LAB_HANDOFF (db-password, 0600; never printed).
#   Debian/Ubuntu (the docker lab): PostgreSQL from the distribution, its own init.d script enabled,
#     listening on the lab network; pg_hba.conf admits joblab from every app machine ($LAB_APP_HOSTS,
#     else $LAB_APP_HOST), the database machine itself ($LAB_SIDECAR_HOST)
#     and 127.0.0.1 (plus $LAB_DB_EXTRA_CIDR, e.g. a test host), scram-sha-256 only.
#   RHEL 8/9 (VM providers; thin, untested here): Microsoft SQL Server 2022 Developer from Microsoft's
#     repos, set up unattended with a generated SA password, login/user/database joblab via sqlcmd.
#   RHEL 6/7: refused (no SQL Server 2022 there).
# Idempotent: reloads/restarts the server only when its config changed; a second run changes nothing.
set -euo pipefail

DB_NAME=joblab
DB_USER=joblab
# Extra client addresses for pg_hba.conf (comma-separated IPs or CIDRs); empty in the lab.
LAB_DB_EXTRA_CIDR="${LAB_DB_EXTRA_CIDR:-}"

# shellcheck source=provision/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

SECRETS_DIR="$LAB_ETC/secrets"
DB_SECRET="$SECRETS_DIR/db-password"
# sha256 of the password the server has for $DB_USER: set it again only when the secret changed.
DB_SECRET_APPLIED="$SECRETS_DIR/.db-password.applied"

# ---------------------------------------------------------------- shared

secret_digest() {
    sha256sum <"$1" | cut -d' ' -f1
}

secret_applied() {
    [[ -f "$DB_SECRET_APPLIED" && "$(<"$DB_SECRET_APPLIED")" == "$(secret_digest "$DB_SECRET")" ]]
}

mark_secret_applied() {
    (umask 077 && secret_digest "$DB_SECRET" >"$DB_SECRET_APPLIED")
}

# The password as the body of a single-quoted SQL literal (both dialects double the quote).
sql_quoted_secret() {
    local secret
    secret="$(<"$DB_SECRET")"
    printf '%s' "${secret//\'/\'\'}"
}

# Leave the password where the app machine's provisioning finds it. Owned by whoever owns the
# repository (the host user, seen through the shared folder), so the host can read and clean
# .vagrant/ without root; root on the app machine reads it anyway.
hand_off_secret() {
    local owner
    owner="$(stat -c '%U:%G' "$LAB_ROOT")"
    [[ "$owner" != *UNKNOWN* ]] || owner=root:root
    ensure_dir "$LAB_HANDOFF" 700 "$owner"
    install_file "$DB_SECRET" "$LAB_HANDOFF/db-password" 600 "$owner" || true
}

# ---------------------------------------------------------------- Debian: PostgreSQL

PG_VERSION=""
PG_PORT=""
PG_CLUSTER=main

# One pg_hba address: an IP becomes a single-host CIDR; CIDRs and host names pass unchanged.
hba_address() {
    local addr="$1"
    [[ "$addr" =~ ^[A-Za-z0-9.:/_-]+$ ]] || die "not an address for pg_hba.conf: '$addr'"
    if [[ "$addr" == */* ]]; then
        echo "$addr"
    elif [[ "$addr" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
        echo "$addr/32"
    elif [[ "$addr" == *:* ]]; then
        echo "$addr/128"
    else
        echo "$addr"
    fi
}

find_cluster() {
    local line
    line="$(pg_lsclusters --no-header 2>/dev/null | awk -v c="$PG_CLUSTER" '$2 == c { print; exit }')"
    if [[ -z "$line" ]]; then
        # The package creates main/ unless create_main_cluster is off in createcluster.conf.
        local version
        version="$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -n | tail -n1)"
        [[ -n "$version" ]] || die "no PostgreSQL server under /usr/lib/postgresql"
        pg_createcluster "$version" "$PG_CLUSTER" >/dev/null
        say "created PostgreSQL $version cluster $PG_CLUSTER"
        line="$(pg_lsclusters --no-header | awk -v c="$PG_CLUSTER" '$2 == c { print; exit }')"
    fi
    PG_VERSION="$(awk '{ print $1 }' <<<"$line")"
    PG_PORT="$(awk '{ print $3 }' <<<"$line")"
}

# conf.d/joblab.conf: Debian's postgresql.conf includes conf.d/, so the packaged file stays untouched.
# Returns 0 when it changed (listen_addresses takes a restart).
write_server_conf() {
    local conf_dir="/etc/postgresql/$PG_VERSION/$PG_CLUSTER" tmp rc=1
    grep -q "^include_dir = 'conf.d'" "$conf_dir/postgresql.conf" \
        || die "$conf_dir/postgresql.conf does not include conf.d/"
    tmp="$(mktemp)"
    cat >"$tmp" <<'EOF'
# Written by provision/database.sh (joblab sidecar). Debian's postgresql.conf includes conf.d/.

# Every interface: the app machine connects over the private lab network. Who may connect is
# decided by pg_hba.conf (joblab only, from the lab's addresses). Takes a restart.
listen_addresses = '*'
# Store passwords as SCRAM verifiers; pg_hba.conf accepts nothing weaker for joblab.
password_encryption = 'scram-sha-256'
EOF
    install_file "$tmp" "$conf_dir/conf.d/joblab.conf" 644 postgres:postgres && rc=0
    rm -f "$tmp"
    return "$rc"
}

# Our lines live in a marked block at the end of pg_hba.conf; the packaged lines above stay as they
# are (none of them matches a lab address). Returns 0 when it changed (takes a reload).
write_hba_conf() {
    local hba="/etc/postgresql/$PG_VERSION/$PG_CLUSTER/pg_hba.conf" tmp rc=1
    local begin="# BEGIN joblab (provision/database.sh)" end="# END joblab"
    local app_addrs=() sidecar_addr extra_addrs=() extra i
    # Validated before anything is written (die in a command substitution would only end a subshell).
    IFS=', ' read -r -a app_addrs <<<"${LAB_APP_HOSTS:-$LAB_APP_HOST}"
    for i in "${!app_addrs[@]}"; do
        app_addrs[i]="$(hba_address "${app_addrs[i]}")"
    done
    sidecar_addr="$(hba_address "$LAB_SIDECAR_HOST")"
    IFS=', ' read -r -a extra_addrs <<<"$LAB_DB_EXTRA_CIDR"
    for extra in "${!extra_addrs[@]}"; do
        extra_addrs[extra]="$(hba_address "${extra_addrs[extra]}")"
    done
    tmp="$(mktemp)"
    awk -v b="$begin" -v e="$end" '$0 == b { skip = 1 } !skip { print } $0 == e { skip = 0 }' "$hba" >"$tmp"
    {
        echo "$begin"
        echo "# the app machines"
        for i in "${app_addrs[@]}"; do
            echo "host    $DB_NAME    $DB_USER    $i    scram-sha-256"
        done
        echo "# this machine itself (local checks)"
        echo "host    $DB_NAME    $DB_USER    $sidecar_addr    scram-sha-256"
        echo "host    $DB_NAME    $DB_USER    127.0.0.1/32    scram-sha-256"
        if ((${#extra_addrs[@]})); then
            echo "# LAB_DB_EXTRA_CIDR"
            for extra in "${extra_addrs[@]}"; do
                echo "host    $DB_NAME    $DB_USER    $extra    scram-sha-256"
            done
        fi
        echo "$end"
    } >>"$tmp"
    install_file "$tmp" "$hba" 640 postgres:postgres && rc=0
    rm -f "$tmp"
    return "$rc"
}

psql_as_postgres() {
    runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" "$@"
}

sql_value() {
    psql_as_postgres -At -d postgres -c "$1"
}

wait_for_postgres() {
    local tries=0
    until runuser -u postgres -- pg_isready -q -p "$PG_PORT"; do
        ((++tries <= 60)) || die "PostgreSQL not accepting connections after 30 s"
        sleep 0.5
    done
}

ensure_pg_running() {
    local restart="$1" reload="$2"
    service_enable postgresql
    if ! service postgresql status >/dev/null 2>&1; then
        service_start postgresql
    elif ((restart)); then
        say "config changed: restarting postgresql"
        service postgresql restart >/dev/null || die "service postgresql restart failed"
    elif ((reload)); then
        say "pg_hba.conf changed: reloading postgresql"
        service postgresql reload >/dev/null || die "service postgresql reload failed"
    fi
    wait_for_postgres
}

# The password only ever travels on psql's stdin: never in argv (ps) or on screen.
ensure_pg_role() {
    local verb
    if [[ "$(sql_value "SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER'")" != 1 ]]; then
        verb=CREATE
    elif ! secret_applied; then
        verb=ALTER
    else
        return 0
    fi
    printf "SET password_encryption = 'scram-sha-256';\n%s ROLE %s WITH LOGIN PASSWORD '%s';\n" \
        "$verb" "$DB_USER" "$(sql_quoted_secret)" | psql_as_postgres -d postgres
    mark_secret_applied
    if [[ "$verb" == CREATE ]]; then say "created role $DB_USER"; else say "set a new password for role $DB_USER"; fi
}

ensure_pg_database() {
    local owner
    owner="$(sql_value "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '$DB_NAME'")"
    if [[ -z "$owner" ]]; then
        # template0 + explicit UTF-8: independent of the (often C/SQL_ASCII) locale the cluster got.
        psql_as_postgres -d postgres -c "CREATE DATABASE $DB_NAME OWNER $DB_USER ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8' TEMPLATE template0"
        say "created database $DB_NAME (owner $DB_USER)"
    elif [[ "$owner" != "$DB_USER" ]]; then
        psql_as_postgres -d postgres -c "ALTER DATABASE $DB_NAME OWNER TO $DB_USER"
        say "database $DB_NAME: owner $owner -> $DB_USER"
    fi
}

provision_postgresql() {
    local restart=0 reload=0
    pkg_install postgresql
    find_cluster
    write_server_conf && restart=1
    write_hba_conf && reload=1
    ensure_pg_running "$restart" "$reload"
    ensure_secret "$DB_SECRET" root:root 0600
    ensure_pg_role
    ensure_pg_database
    hand_off_secret
}

# ---------------------------------------------------------------- RHEL 8/9: SQL Server (thin)

MSSQL_REPO_BASE="https://packages.microsoft.com/config/rhel"
SQLCMD=/opt/mssql-tools18/bin/sqlcmd
SA_SECRET="$SECRETS_DIR/mssql-sa-password"

install_repo_file() {
    local name="$1" url="$2" dest="/etc/yum.repos.d/$1.repo"
    [[ -s "$dest" ]] && return 0
    curl -fsSL --retry 3 -o "$dest.tmp" "$url" || die "could not download $url"
    mv -f "$dest.tmp" "$dest"
    say "added repository $name ($url)"
}

# SQL Server wants 8+ characters from 3 of 4 classes; ensure_secret's are letters and digits,
# so redraw the (not yet used) SA secret in the rare case that one class is missing.
ensure_sa_secret() {
    local tries=0 secret
    while :; do
        ensure_secret "$SA_SECRET" root:root 0600
        secret="$(<"$SA_SECRET")"
        [[ "$secret" =~ [A-Z] && "$secret" =~ [a-z] && "$secret" =~ [0-9] ]] && return 0
        [[ -f /var/opt/mssql/data/master.mdf ]] && die "$SA_SECRET is not complex enough for SQL Server"
        ((++tries < 5)) || die "could not generate a complex SA password"
        rm -f "$SA_SECRET"
    done
}

sqlcmd_as_sa() {
    SQLCMDPASSWORD="$(<"$SA_SECRET")" "$SQLCMD" -S localhost -U sa -C -b -h -1 -W "$@"
}

ensure_mssql_login_and_db() {
    local script set_password=0
    secret_applied || set_password=1
    script="$(mktemp)"
    # shellcheck disable=SC2064  # expand now: the path is fixed
    trap "rm -f '$script'" EXIT
    cat >"$script" <<EOF
SET NOCOUNT ON;
IF NOT EXISTS (SELECT 1 FROM sys.server_principals WHERE name = N'$DB_USER')
    CREATE LOGIN [$DB_USER] WITH PASSWORD = N'$(sql_quoted_secret)', CHECK_POLICY = OFF;
ELSE IF $set_password = 1
    ALTER LOGIN [$DB_USER] WITH PASSWORD = N'$(sql_quoted_secret)';
IF DB_ID(N'$DB_NAME') IS NULL
    CREATE DATABASE [$DB_NAME];
GO
USE [$DB_NAME];
IF DATABASE_PRINCIPAL_ID(N'$DB_USER') IS NULL
    CREATE USER [$DB_USER] FOR LOGIN [$DB_USER];
IF IS_ROLEMEMBER(N'db_owner', N'$DB_USER') = 0
    ALTER ROLE db_owner ADD MEMBER [$DB_USER];
GO
EOF
    sqlcmd_as_sa -i "$script" >/dev/null || die "sqlcmd could not create login/user/database $DB_NAME"
    rm -f "$script"
    trap - EXIT
    if ((set_password)); then
        mark_secret_applied
        say "login, user and database $DB_NAME in place (password set)"
    fi
}

provision_mssql() {
    ((OS_MAJOR >= 8)) || die "SQL Server needs RHEL 8 or 9; this is RHEL $OS_MAJOR (use a RHEL 8-family sidecar)"
    install_repo_file mssql-server "$MSSQL_REPO_BASE/$OS_MAJOR/mssql-server-2022.repo"
    install_repo_file msprod "$MSSQL_REPO_BASE/$OS_MAJOR/prod.repo"
    export ACCEPT_EULA=Y
    pkg_install mssql-server mssql-tools18 unixODBC-devel
    ensure_sa_secret
    if [[ ! -f /var/opt/mssql/data/master.mdf ]]; then
        say "setting up SQL Server (Developer edition)"
        MSSQL_PID=Developer MSSQL_SA_PASSWORD="$(<"$SA_SECRET")" /opt/mssql/bin/mssql-conf -n setup >/dev/null \
            || die "mssql-conf setup failed (see /var/opt/mssql/log/errorlog)"
    fi
    # mssql-server is a systemd unit on RHEL 8/9 (common.sh's service_enable expects a SysV script).
    systemctl is-enabled -q mssql-server || systemctl enable -q mssql-server
    systemctl is-active -q mssql-server || systemctl start mssql-server
    local tries=0
    until sqlcmd_as_sa -Q "SELECT 1" >/dev/null 2>&1; do
        ((++tries <= 60)) || die "SQL Server not answering after 60 s"
        sleep 1
    done
    ensure_secret "$DB_SECRET" root:root 0600
    ensure_mssql_login_and_db
    if firewall-cmd --state >/dev/null 2>&1 && ! firewall-cmd -q --query-port=1433/tcp; then
        firewall-cmd -q --permanent --add-port=1433/tcp
        firewall-cmd -q --add-port=1433/tcp
        say "opened 1433/tcp in firewalld"
    fi
    hand_off_secret
}

main() {
    require_root
    detect_os
    if [[ "$OS_FAMILY" == debian ]]; then
        provision_postgresql
    else
        provision_mssql
    fi
}

main "$@"
