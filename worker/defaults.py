"""The worker's fixed knobs (the tunable ones are JOBLAB_* settings in app.config), and what is
derived from the longest job allowed (the JOB_MAX_SECONDS setting)."""
from typing import Mapping, Optional

from app.config import load_settings

#: Exit code of a worker stopped by a second signal, mid-job, without committing.
EXIT_FORCED = 3

#: A batch (records of one poll, JOBLAB_WORKER_BATCH at most) takes no new record after this
#: long; with the longest job after it, still far within max_poll_interval_ms().
BATCH_SECONDS = 10.0

#: In a batch, records handled this long ago are committed before the next record runs, so a
#: long job delays the commits of the records before it by at most its own run.
CHECKPOINT_SECONDS = 0.5


def max_poll_interval_ms(job_max_seconds: float) -> int:
    """Longest gap between polls before the group evicts us: the longest job plus room for
    backoff and the store. kafka-python heartbeats from a background thread meanwhile, so a
    long job never looks like a dead worker (no rebalance storms)."""
    return int((job_max_seconds + BATCH_SECONDS + 240) * 1000)


def stop_wait_seconds(job_max_seconds: float) -> int:
    """How long supervisor waits for a stopping worker before SIGKILL (stopwaitsecs, rendered by
    provision/supervisor.sh from ``python -m worker.defaults stop-wait``): its current job at the
    longest, then the commit."""
    return int(job_max_seconds) + 30


def outbox_lease_seconds(job_max_seconds: float) -> float:
    """How long an outbox row stays leased to the worker that wrote it. The writer publishes
    within milliseconds, deletes the published rows in its next transaction (after the job it
    runs next: the longest job, plus room, as for the poll interval), and renews the lease while
    Kafka is down; after this long without either (the writer died) any worker publishes the row."""
    return job_max_seconds + 240


#: How soon the group notices a worker that died without leaving (SIGKILL): its partitions
#: move to the survivors after this long.
SESSION_TIMEOUT_MS = 10000
#: How long a request to one broker may go unanswered before the consumer gives up on that
#: connection and asks for fresh metadata. kafka-python's 30 s made a broker cut off the network
#: (packets dropped, no reset) stall the partitions it led for over a minute in the cluster drills,
#: though the controllers fence it and move its leaders after ~9 s (broker.session.timeout.ms).
#: Must exceed FETCH_MAX_WAIT_MS; above the session timeout, so a slow broker is not mistaken for
#: a dead one sooner than a dead worker would be.
REQUEST_TIMEOUT_MS = 12000
HEARTBEAT_INTERVAL_MS = 2000

#: Broker long-poll wait. The broker answers at once when a record arrives; this only bounds
#: how long an idle fetch lasts, so idle workers still notice stop requests promptly.
FETCH_MAX_WAIT_MS = 100

#: Under load, fetches wait for records to pile up (worker/consumer.py FetchCoalescing): the broker
#: answers once COALESCE_MIN_BYTES are waiting or after COALESCE_WAIT_MS. Fewer, fuller polls mean
#: fewer fetches, claims, checkpoints, event produces and offset commits per job (make bench, at first
#: with 20 ms: single submits +25 %, the job workers' and Kafka's CPU per job -30 %). A poll that brings fewer than
#: COALESCE_AFTER records turns it off again, so a job submitted to an idle worker is fetched at once.
#: 50 ms, measured against 20 and 100 (single submits, 2 workers, same runs): 20 ms gave polls of
#: 1-3 records at ~200 jobs/s; 50 ms +35 % jobs/s, the workers' CPU per job -45 %, Kafka's -35 %,
#: p50 under load +10 ms; 100 ms no faster than 50, p50 +40 ms.
COALESCE_WAIT_MS = 50
COALESCE_MIN_BYTES = 64 * 1024
COALESCE_AFTER = 2

#: Longest single poll while idle (the loop re-checks stop requests and paused partitions).
POLL_TIMEOUT_MS = 500

#: Polls that may fail in a row (kafka-python reporting a broker restart or a rebalance as an
#: error) before the worker gives up and exits for supervisor to restart it: about a minute.
POLL_FAILURES_MAX = 30

#: Pause of a partition after the store or Kafka failed mid-job, before the job is tried again.
INFRA_RETRY_SECONDS = 2.0


def backoff_seconds(attempt: int, base: float, ceiling: float) -> float:
    """Delay before attempt ``attempt + 1``: base, 2*base, 4*base ... capped at ``ceiling``."""
    return min(ceiling, base * (2 ** max(0, attempt - 1)))

#: How often a worker looks for outbox rows whose lease ran out, or whose writer is dead.
RELAY_EVERY_SECONDS = 30.0

#: A writer seen dead (worker/owner.py) may have died with a produce in flight, its record on the
#: partition's leader but not yet on the followers, where the look-up before a re-send cannot see
#: it. Its rows are taken over once they have been quiet this long: by then such a record is
#: visible (the followers fetched it, or were dropped from the ISR after Kafka's
#: replica.lag.time.max.ms, 30 s) or it never will be.
DEAD_WRITER_QUIET_SECONDS = 60.0


def main(argv: Optional[list] = None, environ: Optional[Mapping[str, str]] = None) -> None:
    """``python -m worker.defaults stop-wait``: supervisor's stopwaitsecs for the job workers, from
    the JOBLAB_* settings of the environment (provisioning runs it under joblab-exec)."""
    import sys

    if (sys.argv[1:] if argv is None else argv) != ["stop-wait"]:
        sys.exit("usage: python -m worker.defaults stop-wait")
    print(stop_wait_seconds(float(load_settings(environ=environ)["JOB_MAX_SECONDS"])))


if __name__ == "__main__":
    main()
