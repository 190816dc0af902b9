"""Which SQLite URLs name an existing database, in every form SQLAlchemy accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaign.store.location import database_state


@pytest.mark.parametrize(
    "form",
    ["sqlite:///{path}", "sqlite:///file:{path}?mode=ro&uri=true", "sqlite+pysqlite:///{path}"],
)
def test_an_existing_file_is_found_in_every_url_form(tmp_path: Path, form: str) -> None:
    path = tmp_path / "campaign.db"
    assert "does not exist" in database_state(form.format(path=path))
    path.write_bytes(b"SQLite format 3\0" + b"\0" * 84)
    assert database_state(form.format(path=path)) == ""


def test_a_uri_in_memory_database_is_no_database() -> None:
    assert "in-memory" in database_state("sqlite:///file:x?mode=memory&uri=true")
