"""``python -m worker``: settings from JOBLAB_* (see app/config.py), two-stage shutdown.

First SIGTERM/SIGINT: finish the current job, commit, leave the group, exit 0.
Second: exit at once with EXIT_FORCED (the job's message is redelivered to another worker).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any, List, Optional

from kafka.errors import KafkaError

from app import jobtypes, metrics
from app.config import DEFAULTS, load_settings
from app.jobqueue import JobQueue
from app.logsetup import configure_logging, log_from_signal_handler
from app.store import make_engine
from app.topics import Topics, ensure_topics

from . import defaults
from .consumer import make_consumer
from .runner import Worker

log = logging.getLogger("worker")


def install_signal_handlers(worker: Worker) -> None:
    def on_signal(signum: int, _frame: Any) -> None:
        # Act first, then say so in a way that cannot fail inside a write the signal interrupted.
        name = signal.Signals(signum).name
        if worker.stopping:
            log_from_signal_handler(log, logging.WARNING, "second %s: exiting now (exit %d)", name, defaults.EXIT_FORCED)
            os._exit(defaults.EXIT_FORCED)
        worker.request_stop()
        log_from_signal_handler(log, logging.INFO, "%s: finishing the current job, then stopping "
                                "(send again to exit at once)", name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def build_worker(settings: dict) -> Worker:
    settings = dict(DEFAULTS, **settings)  # what a caller leaves out (tests) has its default
    jobtypes.configure(settings)
    topics = Topics.with_prefix(settings["KAFKA_TOPIC_PREFIX"])
    ensure_topics(settings["KAFKA_BOOTSTRAP"], topics, int(settings["KAFKA_PARTITIONS"]))
    queue = JobQueue(settings["KAFKA_BOOTSTRAP"], settings["KAFKA_TOPIC_PREFIX"],
                     float(settings["KAFKA_SEND_TIMEOUT"]), float(settings["KAFKA_LINGER_MS"]))
    worker = Worker(
        consumer=make_consumer(settings),
        queue=queue,
        engine=make_engine(settings["DATABASE_URL"]),
        topics=topics,
        max_attempts=int(settings["MAX_ATTEMPTS"]),
        backoff=float(settings["RETRY_BACKOFF"]),
        backoff_max=float(settings["RETRY_BACKOFF_MAX"]),
        batch_size=int(settings["WORKER_BATCH"]),
        stranded_after=float(settings["STRANDED_AFTER"]),
        sweep_every=float(settings["SWEEP_EVERY"]),
        outbox_lease=defaults.outbox_lease_seconds(float(settings["JOB_MAX_SECONDS"])),
    )
    worker.subscribe()
    return worker


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__.split("\n")[0])
    parser.add_argument("--max-messages", type=int, help="stop after handling this many messages")
    parser.add_argument("--max-seconds", type=float, help="stop after this many seconds")
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(settings["LOG_LEVEL"])
    metrics.configure(settings["METRICS_DIR"], "worker")  # before any metric is made
    try:
        worker = build_worker(settings)
    except KafkaError as exc:
        sys.exit("worker: cannot reach Kafka at %s (%s)" % (settings["KAFKA_BOOTSTRAP"], exc.__class__.__name__))
    install_signal_handlers(worker)
    log.info("worker %d: group %s, topics %s + %s, store %s", os.getpid(), settings["KAFKA_GROUP"],
             worker.topics.jobs, worker.topics.retry, worker.engine.url.render_as_string(hide_password=True))
    try:
        worker.run(max_messages=args.max_messages, max_seconds=args.max_seconds)
    finally:
        worker.queue.close()
        worker.engine.dispose()
        metrics.safely(lambda: metrics.process_exited(os.getpid()))
