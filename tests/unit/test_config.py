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
