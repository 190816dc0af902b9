"""The lead store: leads, enrollments and deliveries, on SQLite or PostgreSQL. All SQL lives
in this package.

`Store.open` connects once and hands out the parts, each for the callers that need it:
`queue` (the sender: reserve → start → settle, leases, replans), `leads` (sign-ups, status
changes, clicks, conversions), `suppressions` (addresses never mailed again), `inbound`
(mail that came back), `meta` (plan fingerprints,
rate-limit slots), `reads` (status, reports, dry runs), `audit` (operators' actions) and
`privacy` (a lead's data exported or erased). They share one `Database` (`db`):
its connections, its transactions and, on SQLite, its writer lock.
"""

from __future__ import annotations

from campaign.store.audit import Audit
from campaign.store.database import Database, DatabaseError, StoreError
from campaign.store.health import Health
from campaign.store.inbound import InboundStore
from campaign.store.leads import Leads
from campaign.store.meta import Meta
from campaign.store.privacy import Privacy
from campaign.store.queue import Queue
from campaign.store.reads import Reads
from campaign.store.records import Records
from campaign.store.schema import migrate
from campaign.store.suppressions import Suppressions

__all__ = ["DatabaseError", "Store", "StoreError"]


class Store:
    def __init__(self, db: Database):
        self.db = db
        self.queue = Queue(db)
        self.leads = Leads(db, self.queue)
        self.meta = Meta(db)
        self.reads = Reads(db)
        self.inbound = InboundStore(db)
        self.suppressions = Suppressions(db)
        self.health = Health(db)  # monitoring: the database reachable, runs recorded
        self.records = Records(db)
        self.audit = Audit(db)  # operators' actions, append-only
        self.privacy = Privacy(db)  # a lead's data exported or erased

    @classmethod
    def open(cls, url: str, *, create: bool = True) -> Store:
        """Connect to the database at `url`; with `create`, make or check its schema first
        (without, a dry run changes nothing, not even an empty file's schema)."""
        store = cls(Database.connect(url))
        if create:
            migrate(store.db)
        return store

    def close(self) -> None:
        self.db.close()
