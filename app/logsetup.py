"""One log format for the app and the worker: ``time level logger: message``.

User text reaches some log lines (a job's error, a user name). Callers quote it with %r; the
formatter also escapes any line break left in a message and indents tracebacks, so no input can
start a line that looks like one of ours."""
from __future__ import annotations

import logging
import os

FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


class OneLineFormatter(logging.Formatter):
    """Every record's message on one line; traceback lines indented under it."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        if "\n" in record.message or "\r" in record.message:
            record.message = record.message.replace("\r", "\\r").replace("\n", "\\n")
        return super().formatMessage(record)

    def formatException(self, ei) -> str:  # type: ignore[no-untyped-def]
        return "\n".join("    | " + line for line in super().formatException(ei).splitlines())


def configure_logging(level: str = "INFO") -> None:
    """Set up root logging once at ``level`` (the LOG_LEVEL setting; gunicorn's own handlers are left
    alone when present)."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(OneLineFormatter(FORMAT))
        root.addHandler(handler)
        root.setLevel(level)
    # kafka-python logs every reconnect attempt at INFO; keep its warnings and errors only.
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLogger().level))
    # Alembic announces each of its plugins at INFO on every run.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def log_from_signal_handler(logger: logging.Logger, level: int, msg: str, *args: object) -> None:
    """Log from a signal handler. A handler runs between two bytecodes of the main thread, maybe in
    the middle of a write to stderr: going through the stream again raises "reentrant call" out of
    the handler (a SIGTERM once got lost that way: the worker never stopped, docker stop timed
    out). So the line is formatted as usual and written to fd 2 with os.write, past the buffer."""
    if not logger.isEnabledFor(level):
        return
    record = logger.makeRecord(logger.name, level, "(signal)", 0, msg, args, None)
    formatters = [h.formatter for h in logging.getLogger().handlers if h.formatter is not None]
    formatter = formatters[0] if formatters else OneLineFormatter(FORMAT)
    try:
        os.write(2, (formatter.format(record) + "\n").encode("utf-8", "replace"))
    except OSError:
        pass  # no stderr: the signal is still acted on
