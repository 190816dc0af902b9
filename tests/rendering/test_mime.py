"""The fast MIME builder (campaign/mime.py) says exactly what `EmailMessage` would.

Every message is parsed back with the standard library and compared with what went in:
display names and subjects of any text, bodies with long lines, trailing spaces, `=` signs
and non-ASCII, and addresses that need SMTPUTF8. The wire rules are checked on the bytes
themselves: CRLF only, no line over 998 octets, ASCII unless the message is SMTPUTF8.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import message_from_bytes, message_from_string
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import default as default_policy

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from campaign.config.schedule import load_schedule
from campaign.config.settings import SmtpSettings
from campaign.devtools.catcher import Catcher
from campaign.rendering import mime
from campaign.rendering.renderer import LeadView, Renderer
from campaign.sending.transport import Envelope, SmtpTransport
from harness.mail import signer
from harness.schedule import REPO

NOW = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)
SKELETON = mime.Skeleton(
    [("From", "Evergreen Acupuncture <care@example.com>"), ("X-Campaign-Step", "series/step")]
)
QP = mime.quoted_printable
# Names and subjects as leads and marketers type them: accents, quotes, commas, emoji.
TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=120)


def one_line(value: str) -> str:
    return " ".join(value.split())


def parse(data: bytes) -> EmailMessage:
    return message_from_bytes(data, policy=default_policy)  # type: ignore[return-value]


def assert_wire_rules(data: bytes, utf8: bool = False) -> None:
    assert not re.search(rb"(?<!\r)\n", data), "bare LF"
    assert not re.search(rb"\r(?!\n)", data), "bare CR"
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    if not utf8:
        assert data.isascii(), "8-bit data outside an SMTPUTF8 message"


@settings(max_examples=150, deadline=None)
@given(name=TEXT, subject=TEXT)
def test_any_name_and_subject_read_back_as_typed(name: str, subject: str) -> None:
    """A reader sees the name and subject as they went in, and one address. Not the email
    package as the oracle: it decodes text that looks like an encoded word (see
    test_lead_headers.py). The standard library's address parser keeps the space between
    two encoded words, so a long non-ASCII name is compared without its spaces."""
    name, subject = one_line(name), one_line(subject) or "x"
    headers = [mime.address("To", name, "sam@example.org"), mime.unstructured("Subject", subject)]
    data = SKELETON.message(headers, QP("text\n"), QP("<p>html</p>\n")).data
    assert_wire_rules(data)
    ours = parse(data)
    (to,) = ours["To"].addresses
    assert to.addr_spec == "sam@example.org"
    assert "".join(to.display_name.split()) == "".join(name.split())
    assert str(ours["Subject"]) == subject
    if name.isascii():  # ASCII reads back exactly as it went in
        assert to.display_name == name


@settings(max_examples=100, deadline=None)
@given(body=st.text(st.characters(blacklist_categories=("Cs",)), max_size=400))
def test_any_body_reads_back_unchanged(body: str) -> None:
    data = SKELETON.message([mime.unstructured("Subject", "hi")], QP(body), QP(body)).data
    assert_wire_rules(data)
    parts = list(parse(data).iter_parts())
    # Line breaks are normalised the way bytes.splitlines() sees them, as EmailMessage does.
    expected = "\n".join(line.decode() for line in body.encode().splitlines()) + "\n"
    for part in parts:
        assert part.get_content().replace("\r\n", "\n") == expected


PLACEHOLDER = re.compile(r"PHx(\d+)x")
LINE_PIECES = st.lists(
    st.one_of(
        st.text(st.characters(blacklist_categories=("Cs",)), max_size=90),
        st.sampled_from(["PHx0x", "PHx1x", "\n", "\r\n", "\r", " \n", "=", "\t"]),
    ),
    max_size=30,
)
VALUES = st.lists(
    st.one_of(
        st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),
        st.sampled_from(["", "\n", "\r", "a\r\n"]),
    ),
    min_size=2,
)


@settings(max_examples=300, deadline=None)
@example(pieces=["\n", "PHx0x"], values=["", ""])  # a last line that fills in empty
@example(pieces=["PHx0x", "\n"], values=["\n", ""])  # a value's line break, then the template's
@example(pieces=["\r", "PHx0x", "\n"], values=["", ""])  # CR, an empty value, LF: one break
@given(pieces=LINE_PIECES, values=VALUES)
def test_a_body_encoded_once_per_step_is_byte_for_byte_the_whole_body_encoded(
    pieces: list[str], values: list[str]
) -> None:
    """Only lines with a placeholder are encoded per lead; the bytes must not show it, even
    with long lines, trailing spaces, `=` signs, tabs, line breaks inside a value and
    non-ASCII on either side of a placeholder."""
    template = "".join(pieces)

    def fill(match: re.Match[str]) -> str:
        return values[int(match.group(1))]

    assert mime.Body(template, PLACEHOLDER).encode(fill) == QP(PLACEHOLDER.sub(fill, template))


@pytest.mark.parametrize(
    ("name", "addr"),
    [
        ("Mary Ann", "mary.ann@example.org"),
        ("", "sam@example.org"),
        ("O'Brien", "ob@mail.example.co.uk"),
        ("Dr. Who", "who@example.org"),
        ("Zoë", "zoe@example.org"),
    ],
)
def test_address_headers_are_byte_for_byte_what_the_email_package_writes(
    name: str, addr: str
) -> None:
    """Plain ones take the fast path, the rest the email package's: the bytes are the same."""
    reference = EmailMessage(policy=mime.SMTP)
    reference["To"] = Address(display_name=name, addr_spec=addr)
    reference["Subject"] = "How acupuncture eases back pain"
    expected = reference.as_bytes().split(b"\r\n\r\n")[0] + b"\r\n"
    ours = mime.address("To", name, addr) + mime.unstructured(
        "Subject", "How acupuncture eases back pain"
    )
    assert ours == expected


@pytest.mark.parametrize("addr", ["a..b@example.org", ".sam@example.org", "sam@exa mple.org"])
def test_addresses_the_email_package_refuses_are_refused_too(addr: str) -> None:
    with pytest.raises(ValueError):
        mime.address("To", "Sam", addr)


def test_long_unsubscribe_url_stays_literal() -> None:
    """EmailMessage would turn a long signed URL into encoded words no client follows."""
    url = "https://links.example.com/u/" + "WzEyMzQ1LCJhY3VwdW5jdHVyZSJd" * 4
    raw = mime.url_list("List-Unsubscribe", [f"<{url}>", "<mailto:desk@example.com>"])
    assert f"<{url}>".encode() in raw and b"=?" not in raw
    message = parse(SKELETON.message([raw], QP("t"), QP("h")).data)
    assert re.findall(r"<([^>]+)>", str(message["List-Unsubscribe"])) == [
        url,
        "mailto:desk@example.com",
    ]


def test_header_values_that_cannot_be_one_ascii_line_are_refused() -> None:
    with pytest.raises(ValueError):
        mime.token("Message-ID", "<a\r\nBcc: x@example.com>")
    with pytest.raises(ValueError):
        mime.url_list("List-Unsubscribe", ["<https://exämple.com/u/1>"])


def test_internationalised_address_goes_out_with_smtputf8() -> None:
    renderer = Renderer(load_schedule(REPO / "schedules.yaml"))
    lead = LeadView(email="josé@exämple.com", first_name="José")
    email = renderer.render("mechanisms", lead, signer().links(7, "c", "mechanisms"), now=NOW)
    assert email.message.utf8
    assert_wire_rules(email.message.data, utf8=True)
    with Catcher() as catcher, SmtpTransport(SmtpSettings(port=catcher.port)) as transport:
        transport.send(Envelope("care@example.com", lead.email, email.message.data, True))
        caught = catcher.messages
    assert [c.recipients for c in caught] == [["josé@exämple.com"]]
    message = message_from_string(caught[0].data.decode("utf-8"), policy=default_policy)
    to = message["To"].addresses[0]
    assert (to.display_name, to.addr_spec) == ("José", "josé@exämple.com")
    assert message["Subject"] == "How acupuncture eases back pain"
