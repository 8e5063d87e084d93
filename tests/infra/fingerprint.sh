# A host's provisioned state, printed as stable text: packages, managed files (content hash,
# mode, owner), listening sockets, supervisor programs (state and pid) and service pids.
# Identical before and after `vagrant provision` <=> provisioning changed nothing.
# Run as root: bash fingerprint.sh
set -u
echo "== packages"
if command -v dpkg-query >/dev/null; then
    dpkg-query -W -f='${Package} ${Version}\n' | sort
else
    rpm -qa | sort
fi
echo "== files"
for path in /etc/joblab /etc/supervisord.conf /etc/supervisord.d /etc/nginx/nginx.conf \
    /etc/init.d/supervisord /etc/init.d/kafka /etc/kafka /opt/kafka /usr/local/bin/joblab-exec \
    /etc/postgresql /var/run/supervisor /etc/rc2.d /etc/prometheus /etc/default/prometheus \
    /etc/init.d/prometheus /etc/nginx/joblab-lb /etc/nginx/joblab-upstream.conf /usr/local/sbin/joblab-lb \
    /etc/init.d/joblab-lb; do
    [ -e "$path" ] || continue
    find "$path" -xdev \( -type f -o -type d -o -type l \) -print0 | sort -z | while IFS= read -r -d '' f; do
        if [ -f "$f" ] && [ ! -L "$f" ]; then
            echo "$(stat -c '%a %U:%G' "$f") $(sha256sum "$f" | cut -c1-16) $f"
        else
            echo "$(stat -c '%a %U:%G %F' "$f") $f $(readlink "$f" 2>/dev/null)"
        fi
    done
done
echo "== sockets"
ss -ltnH | awk '{print $4}' | sort -u
echo "== supervisor"
if [ -S /var/run/supervisor/supervisor.sock ]; then
    supervisorctl -c /etc/supervisord.conf status 2>&1 | awk '{print $1, $2, $4}' | sort
fi
echo "== service pids"
for pidfile in /var/run/supervisord.pid /var/run/nginx.pid /var/run/kafka/kafka.pid \
    /var/run/postgresql/*.pid /run/prometheus/prometheus.pid /var/run/joblab-lb.pid; do
    [ -f "$pidfile" ] && echo "$pidfile $(head -n1 "$pidfile")"
done
exit 0
