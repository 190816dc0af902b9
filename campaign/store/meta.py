"""Small shared values kept in the database: which schedule shape the pending rows were
planned with, and the rate limiter's next free slot. Every worker sharing the database sees
the same ones, so a replan happens once and a rate is one cadence for all."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from campaign.store.database import Database
from campaign.store.schema import meta


class Meta:
    """Key/value pairs; every method is one short transaction."""

    def __init__(self, db: Database):
        self.db = db

    def get(self, key: str) -> str | None:
        with self.db.read() as conn:
            return conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar()

    def init(self, key: str, value: str) -> None:
        """Set the key unless it is already set (first writer wins, concurrent ones too)."""
        with self.db.tx() as conn:
            self._add(conn, key, value)

    def set(self, key: str, value: str) -> None:
        """An upsert: two workers setting the same key at once must not collide."""
        with self.db.tx() as conn:
            conn.execute(
                self.db.insert(meta)
                .values(key=key, value=value)
                .on_conflict_do_update(index_elements=[meta.c.key], set_={"value": value})
            )

    def delete(self, key: str) -> None:
        with self.db.tx() as conn:
            conn.execute(meta.delete().where(meta.c.key == key))

    def book_slot(self, key: str, spacing: float, now: float, within: float) -> float:
        """The next free moment (seconds since the epoch) on the cadence kept under `key`,
        never before `now`. It is booked, moving the next free one `spacing` later, only
        if it is at most `within` seconds away. One transaction, the row locked, so two
        workers never book the same slot."""
        with self.db.tx() as conn:
            self._add(conn, key, repr(now))
            stored = conn.execute(
                select(meta.c.value).where(meta.c.key == key).with_for_update()
            ).scalar_one()
            slot = max(float(stored), now)
            if slot - now <= within:
                conn.execute(
                    update(meta).where(meta.c.key == key).values(value=repr(slot + spacing))
                )
        return slot

    def _add(self, conn: Connection, key: str, value: str) -> None:
        """Insert the key unless it exists, in `conn`'s transaction."""
        conn.execute(self.db.insert(meta).values(key=key, value=value).on_conflict_do_nothing())
