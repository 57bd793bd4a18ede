"""Where the report book keeps its rows: SQLite in the data directory, or a shared PostgreSQL.

Both run the same SQL through `siaga_core.sqlbackend`'s small interface; PostgreSQL's
driver is imported only when a URL names one.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from reports.schema import MIGRATIONS
from siaga_core import sqlbackend
from siaga_core.sqlbackend import Backend, SharedStore, SqliteBackend, render

SCHEMA_TABLE = "report_book_schema"  # PostgreSQL's stand-in for SQLite's user_version
SETTING = "reports.database_url"


class ReportsSqlite(SqliteBackend):
    MIGRATIONS: ClassVar[tuple[str, ...]] = tuple(render(m, "sqlite") for m in MIGRATIONS)


def open_backend(database_url: str | None, data_dir: Path) -> Backend:
    """PostgreSQL when a URL is given, else SQLite at `data_dir/reports.sqlite`."""
    return sqlbackend.open_backend(
        database_url, lambda: ReportsSqlite(data_dir / "reports.sqlite"),
        SharedStore("the report book", MIGRATIONS, SCHEMA_TABLE, "siaga.reports", SETTING))
