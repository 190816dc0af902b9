"""Inbound mail on PostgreSQL: the record's `ON CONFLICT DO NOTHING … RETURNING` and the
status change in one transaction, as on SQLite: one bounce, recorded once."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from campaign.config.schedule import load_schedule
from campaign.devtools.catcher import Catcher
from campaign.store import Store
from harness.cli import CLI_TIMEOUT, cli_env, run_py_argv
from harness.clock import ManualClock
from harness.engine import build_engine, enroll
from harness.inbound import ANA, BEN, DAY0, fill, with_return_path
from harness.schedule import REPO, ScheduleCopy, edit_schedule, unthrottled


@pytest.mark.slow
def test_a_dsn_delivered_twice_bounces_its_lead_once(
    pg_cluster: object, schedule_copy: ScheduleCopy
) -> None:
    url = pg_cluster.database()  # type: ignore[attr-defined]
    path: Path = schedule_copy.path
    edit_schedule(path, with_return_path)
    edit_schedule(path, unthrottled)
    store = Store.open(url)
    try:
        schedule = load_schedule(path).schedule
        with Catcher() as catcher:
            engine = build_engine(path, store, ManualClock(DAY0), port=catcher.port)
            for email, name in ((ANA, "Ana"), (BEN, "Ben")):
                enroll(store, schedule, DAY0, email, name, "America/Chicago")
            assert engine.send_due().sent == 2
            [sent] = [c for c in catcher.messages if c.recipients == [ANA]]
        dsn = fill("postfix-dsn.eml", sent)
        argv = run_py_argv("--schedule", str(path), "inbound", "receive", "--rcpt", sent.sender)
        outputs = []
        for _ in range(2):
            result = subprocess.run(
                argv,
                input=dsn,
                cwd=REPO,
                env=cli_env(CAMPAIGN_DB=url),
                capture_output=True,
                timeout=CLI_TIMEOUT,
            )
            assert result.returncode == 0, result.stderr
            outputs.append(result.stdout.decode())
        assert outputs[0].startswith(f"hard-bounce: {ANA} (mechanisms): lead bounced")
        assert "already recorded" in outputs[1]
        statuses = {e: store.leads.lead_by_email(e).status for e in (ANA, BEN)}  # type: ignore[union-attr]
        assert statuses == {ANA: "bounced", BEN: "active"}
        assert len(store.inbound.recent()) == 1
    finally:
        store.close()
        pg_cluster.drop(url)  # type: ignore[attr-defined]
