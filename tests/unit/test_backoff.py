from worker.defaults import MAX_POLL_INTERVAL_MS, backoff_seconds
from app.jobtypes import SLEEP_MAX_SECONDS


def test_backoff_doubles_and_is_capped():
    assert [backoff_seconds(a, 0.5, 3.0) for a in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_longest_job_fits_inside_the_poll_interval():
    # Otherwise a long `sleep` job would get its worker evicted from the group (a rebalance).
    assert MAX_POLL_INTERVAL_MS > SLEEP_MAX_SECONDS * 1000 * 2
