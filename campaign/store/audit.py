"""The audit log: what operators did to leads and the list, with when and who, appended and
never changed (an erasure only takes the erased address out of the entries about its lead).

`Audit.record` writes inside a caller's transaction, so an action and its entry commit or
roll back together; `Audit.log` is the same in a transaction of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from campaign.store.database import Database, from_db, to_db
from campaign.store.schema import audit_log

MAX_ACTOR = 200
MAX_TARGET = 300
MAX_DETAIL = 2000


def lead_target(lead_id: int) -> str:
    """How an entry names a lead: by id, never by address, so nothing here needs erasing."""
    return f"lead {lead_id}"


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "detail": self.detail,
        }


class Audit:
    def __init__(self, db: Database):
        self.db = db

    @staticmethod
    def record(
        conn: Connection, actor: str, action: str, target: str, detail: str, now: datetime
    ) -> None:
        """Append one entry in `conn`'s transaction; over-long values are cut, not refused,
        since the action they describe has happened."""
        conn.execute(
            insert(audit_log).values(
                at=to_db(now),
                actor=actor[:MAX_ACTOR],
                action=action[:64],
                target=target[:MAX_TARGET],
                detail=detail[:MAX_DETAIL],
            )
        )

    def log(self, actor: str, action: str, target: str, detail: str, now: datetime) -> None:
        """`record` in a transaction of its own, for an action already committed."""
        with self.db.tx() as conn:
            self.record(conn, actor, action, target, detail, now)

    def listing(self, limit: int = 50) -> list[AuditEntry]:
        """The latest `limit` entries, newest first."""
        query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        with self.db.read() as conn:
            rows = conn.execute(query).all()
        return [
            AuditEntry(row.id, from_db(row.at), row.actor, row.action, row.target, row.detail)
            for row in rows
        ]
