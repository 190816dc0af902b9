"""SQLite writers of different processes queue on a lock file beside the database, held for
exactly as long as a write transaction, re-entrant within one thread."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from campaign.store import Store
from campaign.store.writelock import WriteLock

# Another process trying to take the lock without waiting: exit 0 only if it is free.
PROBE = (
    "import fcntl, os, sys\n"
    "fd = os.open(sys.argv[1], os.O_RDWR)\n"
    "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
)


def free_for_another_process(path: Path) -> bool:
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, timeout=30
    )
    assert probe.returncode == 0 or "BlockingIOError" in probe.stderr, probe.stderr
    return probe.returncode == 0


def test_the_lock_file_is_held_across_nested_use_and_released_after(tmp_path: Path) -> None:
    path = tmp_path / "campaign.db-lock"
    lock = WriteLock(str(path))
    with lock:
        assert not free_for_another_process(path)
        with lock:  # the same thread again: no deadlock, and leaving it keeps the outer hold
            pass
        assert not free_for_another_process(path)
    assert free_for_another_process(path)
    lock.close()


def test_a_store_write_transaction_holds_the_lock_file(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'campaign.db'}")
    path = tmp_path / "campaign.db-lock"
    try:
        with store.db.tx():
            assert not free_for_another_process(path)
        assert free_for_another_process(path)
        with store.db.read():  # readers never queue behind writers
            assert free_for_another_process(path)
    finally:
        store.close()
