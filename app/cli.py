"""Admin commands: ``flask --app app users create|revoke|list``, ``db upgrade``, ``kafka
create-topics|health``, ``jobs audit``, ``jobs replay``."""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Any, Optional

import click
from flask import Flask, current_app
from flask.cli import AppGroup

users_cli = AppGroup("users", help="Users and API tokens.")
db_cli = AppGroup("db", help="The results store's schema (Alembic).")
kafka_cli = AppGroup("kafka", help="Kafka topics.")
jobs_cli = AppGroup("jobs", help="Jobs in the store.")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


#: Longest token lifetime: far enough for any use, and well inside what a datetime can add.
DURATION_MAX = timedelta(days=100 * 365)


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``3600s``, ``2w`` (a bare number is seconds) -> timedelta."""
    m = re.fullmatch(r"\s*(\d{1,9})\s*([smhdw]?)\s*", text.lower())
    if not m or int(m.group(1)) == 0:
        raise ValueError("%r is not a duration like 30d, 12h, 90m (s, m, h, d, w)" % text)
    seconds = int(m.group(1)) * _UNITS[m.group(2) or "s"]
    if seconds > DURATION_MAX.total_seconds():
        raise ValueError("%r is longer than 100 years" % text)
    return timedelta(seconds=seconds)


def _engine() -> Any:
    return current_app.extensions["joblab_db"].engine


def _when(value: Optional[datetime]) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%SZ")


@users_cli.command("create")
@click.argument("name")
@click.option("--expires-in", metavar="DURATION", help="the token expires after this long: 30d, 12h, 90m (default: never)")
@click.option("--admin", is_flag=True, help="the user is an admin (the /dashboard, replays), an existing user too")
def create_user(name: str, expires_in: Optional[str], admin: bool) -> None:
    """Create user NAME (if new) and print a fresh API token alone on the last line."""
    from .store.users import issue_token, valid_name

    if not valid_name(name):
        raise click.BadParameter("1 to 64 letters, digits or . _ @ + - (starting with a letter or digit)",
                                 param_hint="NAME")
    try:
        ttl = None if expires_in is None else parse_duration(expires_in)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--expires-in") from None
    _uid, token, created = issue_token(_engine(), name, ttl, admin=admin)
    click.echo("%s %suser %s; new API token %s(shown once, stored hashed):" % (
        "created" if created else "existing", "admin " if admin else "", name,
        "" if ttl is None else "valid for %s " % expires_in))
    click.echo(token)


@users_cli.command("revoke")
@click.argument("name")
@click.argument("token_prefix", required=False)
@click.option("--prefix", "prefix_opt", metavar="PREFIX", help="revoke only the token starting so (see users list)")
def revoke_user(name: str, token_prefix: Optional[str], prefix_opt: Optional[str]) -> None:
    """Revoke all of NAME's tokens, or only the one whose prefix is TOKEN_PREFIX (`users list`
    shows prefixes; the whole token works too). Revoked tokens answer 401 at once."""
    from .store.users import UnknownUser, revoke_tokens

    if token_prefix and prefix_opt and token_prefix != prefix_opt:
        raise click.UsageError("give the token prefix once (argument or --prefix)")
    try:
        n = revoke_tokens(_engine(), name, token_prefix or prefix_opt)
    except UnknownUser:
        raise click.ClickException("no user %r" % name) from None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("revoked %d token%s of user %s" % (n, "" if n == 1 else "s", name))


@users_cli.command("list")
def list_users() -> None:
    """Users and their tokens: prefix, created, expires, last used, state. Never the secret."""
    from .store.users import list_tokens, utcnow

    now = utcnow()
    rows = [("USER", "TOKEN", "CREATED", "EXPIRES", "LAST USED", "STATE")]
    for r in list_tokens(_engine()):
        if r["created_at"] is None:  # a user without tokens
            rows.append((r["name"], "-", "-", "-", "-", "no token"))
            continue
        state = ("revoked" if r["revoked_at"] is not None else
                 "expired" if r["expires_at"] is not None and r["expires_at"] <= now else "active")
        rows.append((r["name"], (r["prefix"] + "...") if r["prefix"] else "(unknown)", _when(r["created_at"]),
                     _when(r["expires_at"]) if r["expires_at"] else "never", _when(r["last_used_at"]), state))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


@db_cli.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the schema to the newest revision (safe to repeat)."""
    from .migrate import upgrade

    upgrade(current_app.config["DATABASE_URL"])
    click.echo("schema up to date")


@db_cli.command("current")
def db_current() -> None:
    """Print the schema revision of the store."""
    from .migrate import current

    current(current_app.config["DATABASE_URL"])


@kafka_cli.command("create-topics")
def kafka_create_topics() -> None:
    """Create the job topics if missing (safe to repeat)."""
    from .topics import Topics, ensure_topics

    cfg = current_app.config
    topics = Topics.with_prefix(cfg["KAFKA_TOPIC_PREFIX"])
    ensure_topics(cfg["KAFKA_BOOTSTRAP"], topics, int(cfg["KAFKA_PARTITIONS"]), replication=int(cfg["KAFKA_REPLICATION"]))
    click.echo("topics ready: %s" % ", ".join(topics.all()))


@kafka_cli.command("health")
def kafka_health() -> None:
    """One JSON line: brokers, controller, partitions, under-replicated and offline ones, the
    fewest replicas of any, members of the workers' group, and how many partitions of the job
    topics each broker leads."""
    from .kafkahealth import admin_client, group_members, leaders, replication_health
    from .topics import Topics

    cfg = current_app.config
    admin = admin_client(cfg["KAFKA_BOOTSTRAP"])  # one connection for the three questions
    try:
        health = replication_health(admin)
        health["workers"] = group_members(admin, cfg["KAFKA_GROUP"])
        health["leaders"] = {str(k): v for k, v in sorted(leaders(
            admin, list(Topics.with_prefix(cfg["KAFKA_TOPIC_PREFIX"]).all())).items())}
    finally:
        admin.close()
    click.echo(json.dumps(health, sort_keys=True))


@jobs_cli.command("audit")
@click.argument("ids_file", type=click.File("r"), default="-")
def jobs_audit(ids_file) -> None:
    """What became of the job ids in IDS_FILE (one per line; default stdin): JSON on stdout with
    per-job status/attempts/timestamps, and the store-wide duplicate-result and running counts."""
    import json

    from .store.audit import audit_jobs

    ids = [line.strip() for line in ids_file if line.strip()]
    report = audit_jobs(current_app.extensions["joblab_db"].engine, ids)
    click.echo(json.dumps(report, separators=(",", ":"), sort_keys=True))


def parse_since(text: str) -> datetime:
    """An ISO 8601 time (``2026-11-29T07:00``, ``...Z``, ``...+01:00``; no zone: UTC) -> naive UTC."""
    from datetime import timezone

    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError("%r is not an ISO 8601 time like 2026-11-29T07:00:00Z" % text) from None
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc).replace(tzinfo=None)
    return when


@jobs_cli.command("replay")
@click.option("--id", "ids", multiple=True, metavar="ID", help="replay this job's dead letter (repeatable)")
@click.option("--type", "job_type", metavar="TYPE", help="only letters of jobs of this type")
@click.option("--since", metavar="ISO", help="only letters dead-lettered at or after this time (UTC unless it says)")
@click.option("--dry-run", is_flag=True, help="say what would be replayed; change nothing")
def jobs_replay(ids: Any, job_type: Optional[str], since: Optional[str], dry_run: bool) -> None:
    """Replay dead letters: read the dead-letter topic, and send each matching job again - queued
    with a fresh attempt budget, its history saying so. Poison letters (not a job message) are
    listed and skipped; a job that is not failed any more (replayed already) is skipped, so
    replaying twice is harmless. With no filter, every letter."""
    import getpass

    from .jobqueue import QueueUnavailable
    from .messages import JOB_ID_PATTERN
    from .replay import read_dead_letters, replay_jobs, select, summary
    from .topics import Topics

    bad = [i for i in ids if not JOB_ID_PATTERN.fullmatch(i)]
    if bad:
        raise click.BadParameter("not a job id: %s" % bad[0][:64], param_hint="--id")
    try:
        when = None if since is None else parse_since(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    cfg = current_app.config
    topic = Topics.with_prefix(cfg["KAFKA_TOPIC_PREFIX"]).dead
    try:
        letters = select(read_dead_letters(cfg["KAFKA_BOOTSTRAP"], topic, when), ids, job_type, when)
    except QueueUnavailable as exc:
        raise click.ClickException("cannot read %s: %s" % (topic, exc)) from None
    for letter in letters:
        if letter.poison is not None:
            click.echo("poison   %s[%d]@%d: %s (skipped: not a job message)" % (topic, letter.partition, letter.offset,
                                                                               letter.poison))
    wanted = [x.job_id for x in letters if x.poison is None and x.job_id is not None]
    actor = "cli:%s" % getpass.getuser()
    results = replay_jobs(_engine(), current_app.extensions["joblab_queue"], wanted, actor, dry_run=dry_run)
    for r in results:
        click.echo("%-12s %s %s" % (r.outcome, r.job_id, r.detail))
    counts = summary(results)
    poison = sum(1 for x in letters if x.poison is not None)
    click.echo("%d letters matched (%d poison); %s%s" % (
        len(letters), poison, ", ".join("%s %d" % kv for kv in sorted(counts.items())) or "nothing to replay",
        " (dry run: nothing changed)" if dry_run else ""))


def init_app(app: Flask) -> None:
    app.cli.add_command(users_cli)
    app.cli.add_command(db_cli)
    app.cli.add_command(kafka_cli)
    app.cli.add_command(jobs_cli)
