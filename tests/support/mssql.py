"""A SQL Server the user brings (JOBLAB_TEST_MSSQL_URL): a database of its own per test, dropped
afterwards. The URL's login needs CREATE DATABASE (dbcreator, or sa); its database part is where
that login connects to create and drop the test databases (master, typically)."""
from __future__ import annotations

import os
import uuid
from typing import List

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ENV = "JOBLAB_TEST_MSSQL_URL"
#: Why the MSSQL tests did not run (tests/conftest.py says it once, at the end of the run).
SKIP_REASON = ("set %s=mssql+pymssql://user:pass@host:1433/master to run the store, "
               "API and pipeline tests against a SQL Server (docs/stores.md)" % ENV)
#: Test databases are named so; a crashed run's leftovers are recognisable (and droppable by prefix).
PREFIX = "joblab_test_"


class MssqlServer:
    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        if self.url.get_backend_name() != "mssql":
            raise ValueError("%s must be an mssql+pymssql:// URL, not %s" % (ENV, self.url.get_backend_name()))
        self.admin = create_engine(self.url, isolation_level="AUTOCOMMIT")
        self.made: List[str] = []

    def new_database(self) -> str:
        """A fresh, empty database; its URL (same login)."""
        name = PREFIX + uuid.uuid4().hex[:12]
        with self.admin.connect() as conn:
            conn.execute(text("CREATE DATABASE [%s]" % name))
        self.made.append(name)
        return self.url.set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        """Drop a database new_database made, closing whatever connections still use it."""
        name = make_url(url).database
        if name not in self.made:
            raise ValueError("not a test database of this run: %r" % name)
        with self.admin.connect() as conn:
            conn.execute(text("ALTER DATABASE [%s] SET SINGLE_USER WITH ROLLBACK IMMEDIATE" % name))
            conn.execute(text("DROP DATABASE [%s]" % name))
        self.made.remove(name)

    def close(self) -> None:
        for name in list(self.made):
            self.drop(self.url.set(database=name).render_as_string(hide_password=False))
        self.admin.dispose()


def configured_url() -> str:
    return os.environ.get(ENV, "")
