"""Lead text in headers: a name is only ever a name.

A first name is typed by whoever fills in a form, so it may look like an RFC 2047 encoded word
(`=?utf-8?q?attacker=40evil=2Eexample=2C?=`) or like address syntax (`<x@evil.example>,`).
Whatever it says, a mail program must read back exactly one address in `To:`, the lead's, with
the name exactly as typed, and a subject that prints the name must show it exactly as typed —
also when the header is long enough to be folded. Checked over real HTTP (`POST /leads`) and a
real SMTP server, with the standard library's modern parser and its older one (the
`getaddresses` most scripts use).
"""

from __future__ import annotations

import re
from email import message_from_bytes
from email.policy import compat32
from email.policy import default as default_policy
from email.utils import getaddresses
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaign.rendering import mime
from harness.web import open_web

ENCODED_COMMA = "=?utf-8?q?attacker=40evil=2Eexample=2C?="
HOSTILE_NAMES = [
    f"{ENCODED_COMMA} Maria Fernanda Alexandra",  # the reported one: folds into two addresses
    f"{ENCODED_COMMA} Maria",  # short enough for one line
    "=?utf-8?b?YXR0YWNrZXJAZXZpbC5leGFtcGxlLA==?= Maria Fernanda Alexandra",  # base64 flavour
    f"José {ENCODED_COMMA} Maria Fernanda Alexandra von Hohenzollern-Sigmaringen",
    'Maria "x@evil.example", Fernanda <y@evil.example>; Alexandra of the Very Long Name',
    "=?utf-8?q?x?==?utf-8?q?y?= " * 6 + "Maria",
    "Maria Fernanda Alexandra " + "Abcdefghij" * 12,  # one word longer than a line
]
LONG_ADDRESS = "maria.fernanda.alexandra.{n}@example.com"  # long enough to force folding


def head_of(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0]


def header_lines(head: bytes, name: bytes) -> list[bytes]:
    """Every occurrence of header `name`, unfolded, as it is on the wire."""
    unfolded = re.sub(rb"\r\n(?=[ \t])", b"", head)
    return [
        line.split(b":", 1)[1] for line in unfolded.split(b"\r\n") if line.lower().startswith(name)
    ]


def lines_of(head: bytes, names: tuple[bytes, ...]) -> list[bytes]:
    """The wire lines, continuation lines included, of the headers called `names`."""
    lines: list[bytes] = []
    keep = False
    for line in head.split(b"\r\n"):
        if line[:1] not in b" \t":
            keep = line.lower().startswith(names)
        if keep:
            lines.append(line)
    return lines


def assert_folded(lines: list[bytes]) -> None:
    """Folded at 78, but for a word longer than that, which stays whole on its own line."""
    for line in lines:
        assert len(line) <= mime.MAX_LINE or len(line.split()) == 1, line


def assert_one_address(data: bytes, name: str, email: str, exact: bool = True) -> None:
    """Both parsers see exactly one address, the lead's, with the name as typed.

    Not `exact`: but for spaces. The standard library's address parser keeps the space
    between two encoded words that RFC 2047 says to drop, so a non-ASCII word too long
    for one encoded word reads back with a space inside, there only.
    """
    shown = " ".join(name.split())
    modern = message_from_bytes(data, policy=default_policy)
    addresses = [(a.display_name, a.addr_spec) for a in modern["To"].addresses]  # type: ignore[attr-defined]
    if not exact:
        addresses = [("".join(n.split()), a) for n, a in addresses]
        shown = "".join(shown.split())
    assert addresses == [(shown, email)], modern["To"]
    (raw_to,) = header_lines(head_of(data), b"to:")
    older = getaddresses([raw_to.decode("ascii")])
    assert [addr for _, addr in older] == [email], raw_to
    old_message = message_from_bytes(data, policy=compat32)
    assert [addr for _, addr in getaddresses(old_message.get_all("To", []))] == [email]


def subject_with_name(data: dict[str, Any]) -> None:
    data["steps"][0]["subject"] = "{{ lead.first_name }}, how acupuncture eases back pain"


def test_names_that_look_like_encoded_words_or_addresses_stay_one_name(tmp_path: Path) -> None:
    with open_web(tmp_path, change=subject_with_name) as web:
        leads = {LONG_ADDRESS.format(n=n): name for n, name in enumerate(HOSTILE_NAMES)}
        for email, name in leads.items():
            answer = web.signup(email, first_name=name)
            assert answer.status_code == 201, answer.text
        web.send()
        received = {c.recipients[0]: c for c in web.campaign.catcher.messages}
    assert sorted(received) == sorted(leads)
    assert all(len(c.recipients) == 1 for c in received.values())
    for email, name in leads.items():
        data = received[email].data
        assert_one_address(data, name, email)
        subject = message_from_bytes(data, policy=default_policy)["Subject"]
        assert str(subject) == f"{' '.join(name.split())}, how acupuncture eases back pain"
        (raw_to,) = header_lines(head_of(data), b"to:")
        # Outside quoted strings and encoded words, only the lead's address is address syntax.
        bare = re.sub(rb'"(?:\\.|[^"\\])*"|=\?[^?\s]+\?[qQbB]\?[^?\s]*\?=', b"", raw_to)
        assert re.findall(rb"[@<>,;:]", bare) == [b"<", b"@", b">"], raw_to
        assert_folded(lines_of(head_of(data), (b"to:", b"subject:")))


# Names as attackers and leads type them: encoded-word pieces, address syntax, quotes,
# accents, emoji, very long words.
NAME_PIECES = st.lists(
    st.one_of(
        st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30),
        st.sampled_from(
            ["=?", "?=", "=?utf-8?q?", "=?utf-8?b?", "=40", "=2C", "@", ",", "<", ">", '"', " "]
        ),
        st.sampled_from([ENCODED_COMMA, "x@evil.example", "Abcdefghij" * 9]),
    ),
    max_size=12,
)


@pytest.mark.parametrize("name", HOSTILE_NAMES)
@pytest.mark.parametrize("email", ["sam@example.org", LONG_ADDRESS.format(n=0)])
def test_hostile_names_read_back_as_typed_with_one_address(name: str, email: str) -> None:
    header = mime.address("To", name, email) + mime.unstructured("Subject", name)
    assert header.isascii()
    assert_folded(header.split(b"\r\n"))
    data = header + b"\r\nbody\r\n"
    assert_one_address(data, name, email)
    assert str(message_from_bytes(data, policy=default_policy)["Subject"]) == name


@settings(max_examples=200, deadline=None)
@given(pieces=NAME_PIECES)
def test_any_name_reads_back_as_typed_with_one_address(pieces: list[str]) -> None:
    name = " ".join("".join(pieces).split())
    subject = name or "x"
    header = mime.address("To", name, "sam@example.org") + mime.unstructured("Subject", subject)
    assert header.isascii()
    assert max(len(line) for line in header.split(b"\r\n")) <= mime.MAX_HARD_LINE
    data = header + b"\r\nbody\r\n"
    assert_one_address(data, name, "sam@example.org", exact=False)
    assert str(message_from_bytes(data, policy=default_policy)["Subject"]) == subject
