"""Small shared values kept in the database: which schedule shape the pending rows were
planned with, the rate limiter's next free slot, the tally of finished runs, and which
series are paused. Every worker sharing the database sees the same ones, so a replan happens
once, a rate is one cadence for all, runs are counted across workers, and a pause stops
every worker."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from campaign.store.database import Database
from campaign.store.schema import meta


def series_pause_key(campaign_id: str) -> str:
    """Where a series' pause is kept (`series pause`): the moment it was paused, or an empty
    value while it runs. The row stays once made, so that a reservation can lock it
    (`store.queue`) and a pause has to wait for reservations already under way."""
    return f"paused:{campaign_id}"


def pause_since(value: str | None) -> datetime | None:
    """When the series was paused, from its kept value; None while it runs."""
    return datetime.fromisoformat(value) if value else None


class Meta:
    """Key/value pairs; every method is one short transaction."""

    def __init__(self, db: Database):
        self.db = db

    def get(self, key: str) -> str | None:
        with self.db.read() as conn:
            return conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar()

    def series_paused_since(self, campaign_id: str) -> datetime | None:
        return pause_since(self.get(series_pause_key(campaign_id)))

    def init(self, key: str, value: str) -> None:
        """Set the key unless it is already set (first writer wins, concurrent ones too)."""
        with self.db.tx() as conn:
            self._add(conn, key, value)

    def set(self, key: str, value: str) -> None:
        """An upsert: two workers setting the same key at once must not collide."""
        with self.db.tx() as conn:
            self._put(conn, key, value)

    def delete(self, key: str) -> None:
        with self.db.tx() as conn:
            conn.execute(meta.delete().where(meta.c.key == key))

    def add(self, amounts: Mapping[str, float], values: Mapping[str, str]) -> None:
        """Add each amount to the number kept under its key (a missing key counts as 0) and
        set `values`, in one transaction with the rows locked: two workers adding at once
        both count, and a reader never sees one part of the change without the others."""
        with self.db.tx() as conn:
            for key, amount in amounts.items():
                self._add(conn, key, "0")
                stored = conn.execute(
                    select(meta.c.value).where(meta.c.key == key).with_for_update()
                ).scalar_one()
                total = float(stored) + amount
                conn.execute(update(meta).where(meta.c.key == key).values(value=repr(total)))
            for key, value in values.items():
                self._put(conn, key, value)

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

    def _put(self, conn: Connection, key: str, value: str) -> None:
        """Insert or overwrite the key, in `conn`'s transaction."""
        conn.execute(
            self.db.insert(meta)
            .values(key=key, value=value)
            .on_conflict_do_update(index_elements=[meta.c.key], set_={"value": value})
        )
