"""Flask job API: ``create_app`` is the factory (``flask --app app``, gunicorn ``app:create_app()``)."""
from __future__ import annotations

from typing import Any, Mapping, Optional

try:
    from importlib.metadata import PackageNotFoundError, version as _dist_version

    __version__ = _dist_version("joblab")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"

from flask import Flask

from .config import load_settings
from .logsetup import configure_logging


def create_app(test_config: Optional[Mapping[str, Any]] = None) -> Flask:
    """Defaults, then JOBLAB_* environment, then ``test_config``."""
    from flask_smorest import Api

    from . import cli, jobtypes
    from .api import errors, health, monitoring, submit
    from .jobqueue import JobQueue
    from .store import Database

    app = Flask(__name__)
    # Never the debugger, whatever FLASK_DEBUG says: it serves tracebacks (and a console) to
    # anyone who can make a request fail.
    app.debug = False
    app.config.update(load_settings(test_config))
    app.config.update(
        API_TITLE="joblab job API",
        API_VERSION=__version__,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
    )
    # JSON responses keep their key order: easier for people reading curl output.
    app.json.sort_keys = False  # type: ignore[attr-defined]
    configure_logging(app.config["LOG_LEVEL"])
    monitoring.init_app(app)  # first: prometheus_client's mode is fixed when it is imported
    jobtypes.configure(app.config)

    Database().init_app(app)
    JobQueue().init_app(app)

    from .api.schemas import ErrorSchema, register_job_type_schemas

    class JoblabApi(Api):
        # Document error bodies as app/api/errors.py writes them (not flask-smorest's own shape).
        ERROR_SCHEMA = ErrorSchema

    api = JoblabApi(app, spec_kwargs={"info": {"description": "Submit jobs, poll them, fetch results."}})
    api.spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    register_job_type_schemas(api)
    api.register_blueprint(health.bp)
    api.register_blueprint(submit.bp)  # the jobs blueprint: reads in api/jobs.py, submits in api/submit.py
    from .dashboard import bp as dashboard_bp

    app.register_blueprint(dashboard_bp)  # HTML, outside the API's OpenAPI document
    errors.init_app(app)
    cli.init_app(app)
    return app
