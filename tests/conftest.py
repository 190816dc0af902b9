"""Shared fixtures: an editable copy of the shipped schedule, a campaign on a real SMTP catcher
and a throwaway PostgreSQL server; every test folder uses the same ones."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

# Have pytest rewrite the harness's asserts before the first import, so failures there explain
# themselves.
pytest.register_assert_rewrite("harness")

from harness.engine import Campaign, open_campaign  # noqa: E402
from harness.schedule import ScheduleCopy, copy_shipped  # noqa: E402
from harness.smtp import ControlledHandler  # noqa: E402


@pytest.fixture
def schedule_copy(tmp_path: Path) -> ScheduleCopy:
    return ScheduleCopy(copy_shipped(tmp_path))


@pytest.fixture
def handler(request: pytest.FixtureRequest) -> ControlledHandler:
    """Parametrize indirectly (`{"hold_at": 20}`, `{"rendezvous": 2}`) to control the server."""
    return ControlledHandler(**getattr(request, "param", {}))


@pytest.fixture
def campaign(tmp_path: Path, handler: ControlledHandler) -> Iterator[Campaign]:
    with open_campaign(tmp_path, handler) as opened:
        yield opened


@pytest.fixture(scope="session")
def pg_cluster():
    """A throwaway PostgreSQL server shared by the session's tests."""
    from harness.postgres import PgCluster, find_bindir

    bindir = find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl); .ci/run installs them")
    cluster = PgCluster.start(bindir)
    try:
        yield cluster
    finally:
        cluster.stop()
