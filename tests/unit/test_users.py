"""Users and tokens from the admin CLI: create (with expiry), revoke (all or by prefix), list."""
from datetime import timedelta

import pytest

from app.cli import parse_duration
from app.store.users import check_token, list_tokens
from tests.unit.test_api import engine


@pytest.fixture
def cli(app):
    runner = app.test_cli_runner()

    def run(*args):
        return runner.invoke(args=list(args))

    return run


def token_of(result):
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


@pytest.mark.parametrize("text, seconds", [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("45", 45),
                                           ("2w", 14 * 86400), (" 7D ", 7 * 86400)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "0d", "-1d", "1y", "1.5h", "d", "30 days", "99999999d", "999999999w"])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_create_with_expiry(cli, app):
    token = token_of(cli("users", "create", "ann", "--expires-in", "30d"))
    found = check_token(engine(app), token)
    assert found.problem is None and found.name == "ann"
    row = list_tokens(engine(app))[0]
    assert row["expires_at"] - row["created_at"] == timedelta(days=30)
    assert row["prefix"] == token[:11] and "token_hash" not in row


@pytest.mark.parametrize("args, why", [
    (("users", "create", "ann", "--expires-in", "soon"), "not a duration"),
    (("users", "create", "bad name"), "NAME"),
    (("users", "create", "x\nforged"), "NAME"),
    (("users", "create", "x" * 65), "NAME"),
])
def test_create_refuses_bad_input(cli, args, why):
    result = cli(*args)
    assert result.exit_code != 0 and why in result.output


def test_revoke_one_by_prefix_then_all(cli, app):
    first = token_of(cli("users", "create", "ann"))
    second = token_of(cli("users", "create", "ann"))
    result = cli("users", "revoke", "ann", first[:11])
    assert result.exit_code == 0 and "revoked 1 token of user ann" in result.output
    assert check_token(engine(app), first).problem == "token revoked"
    assert check_token(engine(app), second).problem is None
    result = cli("users", "revoke", "ann", "--prefix", second)  # the whole token names it too
    assert result.exit_code == 0 and check_token(engine(app), second).problem == "token revoked"
    third = token_of(cli("users", "create", "ann"))
    assert "revoked 1 token" in cli("users", "revoke", "ann").output  # all live ones: only the third
    assert check_token(engine(app), third).problem == "token revoked"


@pytest.mark.parametrize("args, why", [
    (("users", "revoke", "nobody"), "no user 'nobody'"),
    (("users", "revoke", "ann", "jl_zzzzzzzz"), "no live token"),
    (("users", "revoke", "ann", "jl_"), "no live token"),  # too short to name one
    (("users", "revoke", "ann", "jl_zzzzzzzzzzzzzzzz"), "no live token"),  # longer than a prefix, not a token
])
def test_revoke_errors_are_one_line_and_nonzero(cli, args, why):
    token_of(cli("users", "create", "ann"))
    result = cli(*args)
    assert result.exit_code == 1 and why in result.output and len(result.output.strip().splitlines()) == 1


def test_list_shows_prefixes_and_states_never_secrets(cli, app):
    live = token_of(cli("users", "create", "ann"))
    gone = token_of(cli("users", "create", "bob", "--expires-in", "1d"))
    cli("users", "revoke", "bob")
    out = cli("users", "list").output
    assert live not in out and gone not in out
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["USER", "TOKEN"]
    ann = [line for line in lines if line.startswith("ann ")][0]
    bob = [line for line in lines if line.startswith("bob ")][0]
    assert live[:11] + "..." in ann and ann.rstrip().endswith("active") and " never " in ann
    assert gone[:11] + "..." in bob and bob.rstrip().endswith("revoked")
