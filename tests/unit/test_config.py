import os
import subprocess
import sys

import pytest

from app.config import DEFAULTS, load_settings
from tests.conftest import ROOT


def test_defaults_when_environment_is_empty():
    assert load_settings(environ={}) == DEFAULTS


def test_environment_values_take_the_type_of_their_default():
    s = load_settings(environ={"JOBLAB_MAX_ATTEMPTS": "5", "JOBLAB_RETRY_BACKOFF": "0.25", "JOBLAB_KAFKA_GROUP": "g"})
    assert (s["MAX_ATTEMPTS"], s["RETRY_BACKOFF"], s["KAFKA_GROUP"]) == (5, 0.25, "g")


def test_overrides_beat_environment():
    s = load_settings({"MAX_ATTEMPTS": 9}, environ={"JOBLAB_MAX_ATTEMPTS": "5"})
    assert s["MAX_ATTEMPTS"] == 9


def test_bad_value_is_one_clear_line():
    with pytest.raises(SystemExit, match="JOBLAB_MAX_ATTEMPTS='many' is not a valid int"):
        load_settings(environ={"JOBLAB_MAX_ATTEMPTS": "many"})


def test_log_level_is_a_setting_the_app_and_the_worker_apply(tmp_path):
    assert load_settings(environ={"JOBLAB_LOG_LEVEL": "warning"})["LOG_LEVEL"] == "WARNING"
    with pytest.raises(SystemExit, match="JOBLAB_LOG_LEVEL='LOUD' is not one of DEBUG, INFO"):
        load_settings(environ={"JOBLAB_LOG_LEVEL": "loud"})
    # A fresh process (root logging is set up once per process), as gunicorn and `python -m worker` start.
    code = ("import logging; from app import create_app; create_app({'DATABASE_URL': 'sqlite:///%s'}); "
            "print(logging.getLevelName(logging.getLogger().level))" % (tmp_path / "x.sqlite3"))
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, JOBLAB_LOG_LEVEL="error"))
    assert run.stdout.strip() == "ERROR", run.stderr


def test_the_longest_job_is_a_setting_everything_derived_follows(make_app, tmp_path):
    from app import jobtypes
    from worker import defaults
    from worker.consumer import consumer_config

    with pytest.raises(SystemExit, match="JOBLAB_JOB_MAX_SECONDS=0.0 is not between 1 and 3600 seconds"):
        load_settings(environ={"JOBLAB_JOB_MAX_SECONDS": "0"})
    with pytest.raises(SystemExit, match="JOB_MAX_SECONDS"):
        load_settings(environ={"JOBLAB_JOB_MAX_SECONDS": "nan"})
    try:
        app = make_app("sqlite:///%s" % (tmp_path / "x.sqlite3"), JOB_MAX_SECONDS=5.0)
        client = app.test_client()
        spec = client.get("/openapi.json").get_json()
        assert spec["components"]["schemas"]["SleepArgs"]["properties"]["seconds"]["maximum"] == 5
        schema = jobtypes.REGISTRY["sleep"].schema()
        assert schema.validate({"seconds": 5}) == {} and "seconds" in schema.validate({"seconds": 5.5})
    finally:
        jobtypes.configure(DEFAULTS)  # one bound per process: back to the default for other tests
    settings = load_settings(environ={"JOBLAB_JOB_MAX_SECONDS": "600", "JOBLAB_KAFKA_GROUP": "g"})
    assert consumer_config(settings)["max_poll_interval_ms"] == defaults.max_poll_interval_ms(600) > 600_000
    assert consumer_config(DEFAULTS)["max_poll_interval_ms"] == defaults.max_poll_interval_ms(60)
    # What provision/supervisor.sh renders as the job workers' stopwaitsecs.
    run = subprocess.run([sys.executable, "-m", "worker.defaults", "stop-wait"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env=dict(os.environ, JOBLAB_JOB_MAX_SECONDS="600"))
    assert run.returncode == 0 and int(run.stdout) == defaults.stop_wait_seconds(600) > 600, run.stderr
