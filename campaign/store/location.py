"""Where the database is, before anything is opened.

Opening an SQLite URL creates the file, so a command that must change nothing (a dry run, a
report) asks first whether there is a database at all. A server database (PostgreSQL) always
counts as there: only connecting can tell, and connecting creates nothing.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from sqlalchemy.engine import make_url


def database_missing(url: str) -> bool:
    """Whether `url` names an SQLite database whose file does not exist (or no file at all).

    An empty file counts as missing: it holds no table, and older versions left one behind
    wherever `status` or `send-due` was run by mistake.
    """
    return database_state(url) != ""


def database_state(url: str) -> str:
    """Why `url` names no SQLite database ("" when it does, or when it is a server's):
    the absolute path, so the operator sees which folder was looked in."""
    if not url.startswith("sqlite"):
        return ""
    parsed = make_url(url)
    database = parsed.database
    if database and parsed.query.get("uri") == "true":  # SQLite's URI form: file:PATH?mode=ro
        database = unquote(urlsplit(database).path) if database.startswith("file:") else database
        if parsed.query.get("mode") == "memory":
            database = ":memory:"
    if not database or database == ":memory:":
        return "an in-memory database keeps nothing between commands"
    path = Path(database).resolve()
    if not path.exists():
        return f"{path} does not exist"
    if not path.is_file():
        return f"{path} is not a file"
    wal = path.with_name(path.name + "-wal")
    if path.stat().st_size == 0 and not (wal.is_file() and wal.stat().st_size):
        return f"{path} is an empty file"
    return ""
