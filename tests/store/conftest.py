"""A database of either kind, for the store's migration tests: each runs on SQLite and, as a
slow test, on the throwaway PostgreSQL cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.db import Db


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    cluster = request.getfixturevalue("pg_cluster") if request.param == "postgresql" else None
    url = cluster.database() if cluster else f"sqlite:///{tmp_path / 'campaign.db'}"
    try:
        yield Db(url, tmp_path)
    finally:
        if cluster:
            cluster.drop(url)
