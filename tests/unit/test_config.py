import pytest

from app.config import DEFAULTS, load_settings


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
