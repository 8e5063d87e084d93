import pytest
from marshmallow import ValidationError, fields

from app.jobtypes import REGISTRY, SUM_MAX_MAGNITUDE, SUM_MAX_NUMBERS, JobFailed, job_type
from app.messages import encode_result
from tests.conftest import auth


def load(name, args):
    return REGISTRY[name].schema().load(args)


def test_shipped_types():
    assert {"sum", "sleep", "fail", "noop"} <= set(REGISTRY)


def test_sum_runs():
    assert REGISTRY["sum"].run(load("sum", {"numbers": [1, 2, 3.5]})) == {"sum": 6.5}
    assert REGISTRY["sum"].run(load("sum", {"numbers": []})) == {"sum": 0}


@pytest.mark.parametrize("bad", ["1", True, None, float("nan"), float("inf"), [1]])
def test_sum_refuses_non_numbers(bad):
    with pytest.raises(ValidationError) as err:
        load("sum", {"numbers": [1, bad]})
    assert 1 in err.value.messages["numbers"]


@pytest.mark.parametrize("numbers, where", [
    ([2 ** 53 + 1], 0),                     # beyond what every JSON client reads exactly
    ([1, -(2 ** 53) - 1], 1),
    ([1e308, 1e308], 0),                    # their sum would be Infinity: not JSON
    ([10 ** 4300, 10 ** 4300], 0),          # their sum has more digits than json.dumps may write
])
def test_sum_bounds_each_number(numbers, where):
    with pytest.raises(ValidationError) as err:
        load("sum", {"numbers": numbers})
    assert where in err.value.messages["numbers"]


def test_sum_bounds_the_count_and_any_sum_within_is_finite():
    with pytest.raises(ValidationError, match="1000"):
        load("sum", {"numbers": [1] * (SUM_MAX_NUMBERS + 1)})
    biggest = [float(SUM_MAX_MAGNITUDE)] * SUM_MAX_NUMBERS
    assert encode_result(REGISTRY["sum"].run(load("sum", {"numbers": biggest})))


def test_sleep_is_bounded():
    with pytest.raises(ValidationError, match="seconds"):
        load("sleep", {"seconds": 61})
    with pytest.raises(ValidationError):
        load("sleep", {"seconds": -1})
    assert REGISTRY["sleep"].run(load("sleep", {"seconds": 0})) == {"slept": 0}


def test_fail_always_raises():
    with pytest.raises(JobFailed, match="boom"):
        REGISTRY["fail"].run(load("fail", {"message": "boom"}))


def test_noop_takes_no_args_and_returns_at_once():
    assert REGISTRY["noop"].run(load("noop", {})) == {"ok": True}
    with pytest.raises(ValidationError) as err:
        load("noop", {"seconds": 1})
    assert "seconds" in err.value.messages


def test_digest_is_bounded_cpu_work_with_a_checkable_result():
    import hashlib

    assert REGISTRY["digest"].run(load("digest", {"rounds": 1})) == {"digest": hashlib.sha256(b"").hexdigest()}
    two = hashlib.sha256(hashlib.sha256(b"").digest()).hexdigest()
    assert REGISTRY["digest"].run(load("digest", {"rounds": 2})) == {"digest": two}
    for bad in (0, 100001, 1.5, True, "3", None):
        with pytest.raises(ValidationError) as err:
            load("digest", {"rounds": bad})
        assert "rounds" in err.value.messages


def test_the_api_refuses_args_for_noop(make_app, store_url):
    app = make_app(store_url)
    resp = app.test_client().post("/v1/jobs", json={"type": "noop", "args": {"x": 1}}, headers=auth(app, "a"))
    assert resp.status_code == 400
    assert "args.x" in resp.get_json()["fields"]


def test_unknown_args_are_refused():
    with pytest.raises(ValidationError) as err:
        load("sum", {"numbers": [1], "extra": 1})
    assert "extra" in err.value.messages


def test_a_new_type_is_one_decorated_function():
    @job_type("test_upper", text=fields.String(required=True))
    def upper(text):
        return {"text": text.upper()}

    try:
        assert REGISTRY["test_upper"].run(load("test_upper", {"text": "ab"})) == {"text": "AB"}
        with pytest.raises(ValueError, match="already registered"):
            job_type("test_upper")(upper)
    finally:
        del REGISTRY["test_upper"]
