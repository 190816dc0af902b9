"""One database, SQLite or PostgreSQL, through one code path: connections and transactions.

The database is the single source of truth and the arbiter between workers. Every store
method is one short transaction taken here: `tx()` for writes (on SQLite, `BEGIN
IMMEDIATE`, queued on the writer lock), `read()` for reads. No transaction is ever open
while talking to SMTP.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError

from campaign.store.prepared import execute
from campaign.store.writelock import WriteLock

IDLE_PING_AFTER = 2.0  # seconds idle after which a pooled connection is checked before use

# Any failure of the database itself (unreachable, disk full, read-only, a lost connection):
# callers that must stop cleanly on one catch this name, not the driver's.
DatabaseError = SQLAlchemyError


class StoreError(RuntimeError):
    """The database cannot be used as it is (wrong schema version, unreachable)."""


def to_db(moment: datetime) -> datetime:
    """Naive UTC: the one form every backend stores and compares the same way."""
    if moment.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return moment.astimezone(UTC).replace(tzinfo=None)


def from_db(value: Any) -> datetime:
    """A time read from a NOT NULL column, aware again."""
    if not isinstance(value, datetime):
        raise TypeError(f"expected a stored time, got {value!r}")
    return value.replace(tzinfo=UTC)


def from_db_or_none(value: Any) -> datetime | None:
    """A time read from a column that may be empty."""
    return None if value is None else from_db(value)


def _sqlite_pragmas(engine: Engine) -> None:
    """WAL for readers beside one writer, and transactions begun by the store itself.

    pysqlite's own transaction handling would begin a transaction only at the first write,
    so the store turns it off and says BEGIN itself (`Database.read`, `Database.tx`). Not
    through SQLAlchemy's `begin` event: any connection event makes every statement dispatch
    the execution events too, which cost a fifth of the database time of a send.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the store issues BEGIN itself: read(), tx()
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def _ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection before use only if it sat idle: a server restart or an idle
    timeout closes idle connections, while one used a moment ago is known to be alive.

    `pool_pre_ping` would ping before every checkout, one extra round trip per query.
    """

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("idle_since", 0.0) < IDLE_PING_AFTER:
            return
        try:
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(f"dropped while idle: {exc}") from exc  # pool reconnects


class Database:
    """An engine and the transactions every part of the store runs in."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._held = threading.local()  # see `holding`
        # SQLite has one writer at a time: writers queue (writelock.py) instead of polling
        # SQLite's busy handler, which sleeps in steps of milliseconds.
        self._writer: AbstractContextManager[Any] = nullcontext()
        if self.is_sqlite:
            database = engine.url.database
            on_disk = database and database != ":memory:" and not database.startswith("file:")
            self._writer = WriteLock(f"{database}-lock" if on_disk else None)

    @classmethod
    def connect(cls, url: str) -> Database:
        kwargs: dict[str, Any] = {"future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        engine = create_engine(url, **kwargs)
        if engine.dialect.name == "sqlite":
            _sqlite_pragmas(engine)
        else:
            _ping_when_idle(engine)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()
        if isinstance(self._writer, WriteLock):
            self._writer.close()

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        """A write transaction (on SQLite, `BEGIN IMMEDIATE`: writers queue, never deadlock)."""
        held = getattr(self._held, "connection", None)
        connection = nullcontext(held) if held else self.engine.connect()
        with self._writer, connection as conn, conn.begin():
            if self.is_sqlite:
                execute(conn, "BEGIN IMMEDIATE")
            yield conn

    @contextmanager
    def holding(self) -> Iterator[None]:
        """Keep one connection for this thread's write transactions until the block ends.

        A sender writes once per message; taking a connection from the pool and handing it
        back (with the pool's rollback) each time costs a tenth of that. Held only for one
        run, so a connection never sits idle in between (`_ping_when_idle` still checks it).
        """
        with self.engine.connect() as conn:
            self._held.connection = conn
            try:
                yield
            finally:
                self._held.connection = None

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction: on SQLite every statement in it sees the same committed state;
        on PostgreSQL (READ COMMITTED) each statement sees what was committed when it began."""
        with self.engine.connect() as conn:
            if self.is_sqlite:
                execute(conn, "BEGIN")
            yield conn

    def insert(self, table: Table) -> Any:
        """The dialect's INSERT, which knows `ON CONFLICT` (PostgreSQL and SQLite ≥ 3.24)."""
        return (sqlite.insert if self.is_sqlite else postgresql.insert)(table)
