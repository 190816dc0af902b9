"""Hostile requests to the web service end in a plain refusal, and no form of a link's path
puts its signed token in the access log."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

from campaign.web.app import RedactTokens
from harness.web import AUTH, Web, open_web

TOKEN = "eyJhbGciOi.very-long-signed-token-body"


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    with open_web(tmp_path) as opened:
        yield opened


def post_json(web: Web, text: str) -> tuple[int, dict]:
    answer = web.client.post(
        "/leads", content=text, headers={**AUTH, "Content-Type": "application/json"}
    )
    return answer.status_code, answer.json()


@pytest.mark.parametrize("depth", [2_000, 30_000])
def test_deeply_nested_json_is_refused_with_400(web: Web, depth: int) -> None:
    status, body = post_json(web, "[" * depth + "]" * depth)
    assert status == 400, body
    assert "nest" in body["errors"]["body"], body
    nested = '{"email": "ann@example.com", "first_name": ' + "[" * depth + "]" * depth + "}"
    assert post_json(web, nested)[0] == 400
    assert web.rows("SELECT * FROM leads") == []


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999", "-1e400"])
def test_json_numbers_that_are_not_numbers_are_refused_with_400(web: Web, value: str) -> None:
    text = '{"email": "ann@example.com", "first_name": "Ann", "score": ' + value + "}"
    status, body = post_json(web, text)
    assert status == 400, body
    assert "body" in body["errors"], body
    assert web.rows("SELECT * FROM leads") == []


def test_ordinary_numbers_are_still_taken_as_text(web: Web) -> None:
    text = json.dumps({"email": "ann@example.com", "score": 4.5, "visits": 3})
    status, body = post_json(web, text)
    assert status == 201, body
    assert body["attributes"] == {"score": "4.5", "visits": "3"}


def access_line(target: str) -> str:
    """The access log line uvicorn writes for a request to `target`, through the filter."""
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "POST", target, "1.1", 404),
        None,
    )
    assert RedactTokens().filter(record)
    return record.getMessage()


@pytest.mark.parametrize(
    "target",
    [
        f"/u/{TOKEN}",
        f"//u/{TOKEN}",
        f"///c/{TOKEN}",
        f"/./u/{TOKEN}",
        f"/static/../confirm/{TOKEN}",
        f"/u//{TOKEN}",
        f"/u/./{TOKEN}",
        f"/%2Fu/{TOKEN}",
        f"/%2fu%2F{TOKEN}",
        f"/u%2F{TOKEN}",
        f"/%252Fu%252F{TOKEN}",
        f"/%75/{TOKEN}",
        f"/U/{TOKEN}",
        f"/u%5C{TOKEN}",
        f"/u/{TOKEN}?utm_source=mail",
        f"/u/{TOKEN}/extra",
        f"/?next=/u/{TOKEN}",
        f"/login?next=%2Fconfirm%2F{TOKEN}&x=1",
    ],
)
def test_access_log_never_holds_a_whole_token_whatever_the_path_form(target: str) -> None:
    line = access_line(target)
    for seen in (line, unquote(line), unquote(unquote(line))):
        assert TOKEN[6:] not in seen, line
    assert "eyJhbG…" in line, line


@pytest.mark.parametrize(
    "target", ["/leads", "/leads/ann@example.com/converted", "/u/probe", "/c/", "/cats/x"]
)
def test_access_log_keeps_paths_without_tokens_as_they_came(target: str) -> None:
    assert f" {target} " in access_line(target)
