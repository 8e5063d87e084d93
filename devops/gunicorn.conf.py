# Gunicorn settings for the job API (gunicorn -c devops/gunicorn.conf.py).
# Every knob can be overridden from the environment, so supervisor's program file and
# `make run` share this one file. Docs: https://docs.gunicorn.org/en/stable/settings.html
import multiprocessing
import os


def _env(name, default):
    return os.environ.get(name) or default


# ---------------------------------------------------------------------------- the application
# The Flask app factory (app/__init__.py).
wsgi_app = "app:create_app()"
# Import the app once in the master, then fork: faster worker boots and shared memory pages.
# Consequence for deploys: a plain HUP re-forks workers from the master's already-imported
# code, so new code needs a new master (USR2 + WINCH + QUIT of the old one, or a restart).
preload_app = _env("GUNICORN_PRELOAD", "true").lower() in ("1", "true", "yes")

# ---------------------------------------------------------------------------- socket
# Loopback only: nginx is the only client. PORT is what `make run` overrides.
bind = _env("GUNICORN_BIND", "127.0.0.1:%s" % _env("PORT", "8000"))
# Pending connections the kernel queues while all workers are busy.
backlog = 2048

# ---------------------------------------------------------------------------- workers
# `gevent` (what the seed ran) serves many slow requests per process; `sync` is one request
# per process, simplest and most predictable. Set GUNICORN_WORKER_CLASS to choose.
worker_class = _env("GUNICORN_WORKER_CLASS", "gevent")
# The classic (2 x cores) + 1; scale at run time with TTIN/TTOU on the master.
workers = int(_env("GUNICORN_WORKERS", str(multiprocessing.cpu_count() * 2 + 1)))
# Concurrent greenlets per gevent worker.
worker_connections = int(_env("GUNICORN_WORKER_CONNECTIONS", "1000"))
# A worker silent this long is killed and replaced (a request may wait ~10 s for Kafka's ack).
timeout = int(_env("GUNICORN_TIMEOUT", "30"))
# On TERM/HUP, workers get this long to finish in-flight requests. supervisor's stopwaitsecs
# must be longer, or supervisor SIGKILLs a master that is still draining.
graceful_timeout = int(_env("GUNICORN_GRACEFUL_TIMEOUT", "30"))
# Keep-alive with nginx's upstream connections.
keepalive = 5
# Request size limits, set at or above nginx's large_client_header_buffers (4 x 8 KiB,
# devops/nginx.conf) so that nginx, in front, is what refuses an oversized request line or header
# with the API's JSON error. gunicorn's defaults (4094-byte request line, 100 headers) sat below
# it: such a request passed nginx and got gunicorn's plain-text 400/414/431 back. 8190 is the
# longest request line gunicorn accepts; 32 KiB of headers is at most 8,192 lines of 4 bytes
# ("a:" CRLF), plus the few nginx adds.
limit_request_line = 8190
limit_request_fields = 8300
limit_request_field_size = 16384
# Recycle workers now and then, staggered, so a slow leak cannot grow without bound.
max_requests = int(_env("GUNICORN_MAX_REQUESTS", "2000"))
max_requests_jitter = 200

# ---------------------------------------------------------------------------- logging & identity
# "off" turns the access log off (benchmarks; nginx keeps its own access log in front).
accesslog = _env("GUNICORN_ACCESSLOG", "-")
if accesslog.lower() in ("off", "none"):
    accesslog = None
errorlog = _env("GUNICORN_ERRORLOG", "-")
loglevel = _env("GUNICORN_LOGLEVEL", "info")
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%({x-forwarded-for}i)s"'
# Where the master writes its pid: needed for USR2 upgrades (gunicorn renames it *.oldbin for the
# old master) and read by joblab-gunicorn and fab. Unset for `make run`.
pidfile = _env("GUNICORN_PIDFILE", None)
# The name `ps` shows, which `fab status` and the scale task look for.
proc_name = _env("GUNICORN_PROC_NAME", "joblab-gunicorn")
# Trust X-Forwarded-* only from nginx on the same host.
forwarded_allow_ips = "127.0.0.1"
# gunicorn 24+ opens a control socket in $HOME; management here is by signals (TTIN/TTOU,
# HUP, USR2) through supervisor and fab, so keep that extra socket closed. Older gunicorn
# ignores this unknown name.
control_socket_disable = True

# ---------------------------------------------------------------------------- gevent
# Patch before the app is imported (preload_app imports it in the master): locks and sockets
# created at import time must already be the cooperative ones, or a greenlet can block its
# whole worker.
if worker_class == "gevent":
    from gevent import monkey

    monkey.patch_all()

# ---------------------------------------------------------------------------- metrics
# GET /metrics adds up every process's figures (app/metrics.py: prometheus_client's multiprocess
# mode, files under $JOBLAB_METRICS_DIR/web). The master clears the web files of earlier runs
# when it starts (a USR2 upgrade's new master too: the old workers' counts restart from zero,
# which Prometheus reads as a counter reset) and tells the client when a worker exits.
_metrics_dir = _env("JOBLAB_METRICS_DIR", "")


def on_starting(server):
    if _metrics_dir:
        from app import metrics

        metrics.configure(_metrics_dir, "web")
        metrics.forget_files(_metrics_dir, "web")


def child_exit(server, worker):
    if _metrics_dir:
        from app import metrics

        metrics.process_exited(worker.pid)
