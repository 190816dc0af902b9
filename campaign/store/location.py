"""Where the database is, before anything is opened.

Opening an SQLite URL creates the file, so a command that must change nothing (a dry run, a
report) asks first whether there is a database at all. A server database (PostgreSQL) always
counts as there: only connecting can tell, and connecting creates nothing.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url


def database_missing(url: str) -> bool:
    """Whether `url` names an SQLite database whose file does not exist (or no file at all)."""
    if not url.startswith("sqlite"):
        return False
    database = make_url(url).database
    return not database or not Path(database).is_file()
