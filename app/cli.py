"""Admin commands: ``flask --app app users create NAME``, ``db upgrade``, ``kafka create-topics``,
``jobs audit``."""
from __future__ import annotations

import click
from flask import Flask, current_app
from flask.cli import AppGroup

users_cli = AppGroup("users", help="Users and API tokens.")
db_cli = AppGroup("db", help="The results store's schema (Alembic).")
kafka_cli = AppGroup("kafka", help="Kafka topics.")
jobs_cli = AppGroup("jobs", help="Jobs in the store.")


@users_cli.command("create")
@click.argument("name")
def create_user(name: str) -> None:
    """Create user NAME (if new) and print a fresh API token alone on the last line."""
    from .store.users import issue_token

    name = name.strip()
    if not name or len(name) > 64:
        raise click.BadParameter("must be 1 to 64 characters", param_hint="NAME")
    _uid, token, created = issue_token(current_app.extensions["joblab_db"].engine, name)
    click.echo("%s user %s; new API token (shown once, stored hashed):" % ("created" if created else "existing", name))
    click.echo(token)


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
    ensure_topics(cfg["KAFKA_BOOTSTRAP"], topics, int(cfg["KAFKA_PARTITIONS"]))
    click.echo("topics ready: %s" % ", ".join(topics.all()))


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


def init_app(app: Flask) -> None:
    app.cli.add_command(users_cli)
    app.cli.add_command(db_cli)
    app.cli.add_command(kafka_cli)
    app.cli.add_command(jobs_cli)
