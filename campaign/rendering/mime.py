"""SMTP-ready MIME bytes from a per-step skeleton, instead of an `EmailMessage` per lead.

Building and serialising an `EmailMessage` costs more than the SMTP hop itself (~1.5–2 ms:
every header is parsed back into a tree and refolded). A step's constant parts — From,
Reply-To, List-Id, the multipart frame, and the body lines that hold no lead's values — are
encoded once; per message only the lead's headers are written and only the body lines with
a lead's values are quoted-printable encoded (by `binascii`, in C). The output keeps the
rules `EmailMessage(policy=SMTP)` follows: CRLF line ends, lines folded at 78 where a fold
is possible and never over 998, non-ASCII header text as RFC 2047 encoded words (raw UTF-8
only in an SMTPUTF8 message, whose recipient address is not ASCII), bodies quoted-printable
in UTF-8. Anything unusual (a display name that needs quoting, a long or non-ASCII subject)
goes through the email package's own folding, so the
fast path only ever handles text that needs no encoding at all.
"""

from __future__ import annotations

import binascii
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.headerregistry import Address
from email.policy import SMTP, SMTPUTF8

MAX_LINE = 78  # RFC 5322's "should"; 998 is the "must"
MAX_HARD_LINE = 998
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Text that needs neither quoting nor encoding: an address and a display name of plain atoms.
_ATOM = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+"
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9_%+\-]+(\.[A-Za-z0-9_%+\-]+)*@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)*\Z"
)
_PLAIN_PHRASE = re.compile(rf"{_ATOM}( {_ATOM})*\Z")


@dataclass(frozen=True)
class MimeMessage:
    """A finished message: the exact bytes handed to SMTP."""

    data: bytes
    utf8: bool = False  # the recipient's address is not ASCII: send with SMTPUTF8

    def as_bytes(self) -> bytes:
        return self.data


def _fold(name: str, value: object, utf8: bool) -> bytes:
    """The email package's own folding and encoding, for values the fast path leaves alone."""
    policy = SMTPUTF8 if utf8 else SMTP
    return policy.fold_binary(name, policy.header_factory(name, value))


def unstructured(name: str, value: str, utf8: bool = False) -> bytes:
    """A header of free text (Subject): short plain ASCII as is, the rest folded and encoded."""
    line = f"{name}: {value}"
    if (
        len(line) <= MAX_LINE
        and value.isascii()
        and not _CONTROL.search(value)
        and "=?" not in value
        and value == value.strip()
    ):
        return line.encode("ascii") + b"\r\n"
    return _fold(name, value, utf8)


def address(name: str, display_name: str, addr_spec: str, utf8: bool = False) -> bytes:
    """An address header (To); raises ValueError for an address the email package refuses."""
    if _PLAIN_ADDRESS.match(addr_spec) and (not display_name or _PLAIN_PHRASE.match(display_name)):
        line = f"{name}: {display_name} <{addr_spec}>" if display_name else f"{name}: {addr_spec}"
        if len(line) <= MAX_LINE:
            return line.encode("ascii") + b"\r\n"
    if addr_spec.isascii():
        value = Address(display_name=display_name, addr_spec=addr_spec)
    else:  # the email package's parser refuses a non-ASCII local part, which SMTPUTF8 allows
        local, _, domain = addr_spec.rpartition("@")
        value = Address(display_name=display_name, username=local, domain=domain)
    return _fold(name, value, utf8)


def token(name: str, value: str) -> bytes:
    """A header that must reach the reader verbatim (Date, Message-ID): ASCII, one line."""
    line = f"{name}: {value}"
    if not value.isascii() or _CONTROL.search(value) or len(line) > MAX_HARD_LINE:
        raise ValueError(f"{name} must be one line of ASCII: {value[:80]!r}")
    return line.encode("ascii") + b"\r\n"


def url_list(name: str, items: Sequence[str]) -> bytes:
    """A comma-separated list of `<URL>`s (List-Unsubscribe), folded only between entries.

    Readers take these URLs literally, so they are never encoded: `EmailMessage` turns a
    long signed URL into encoded words that no mail client would follow.
    """
    lines = [f"{name}:"]
    for index, item in enumerate(items):
        if not item.isascii() or _CONTROL.search(item) or " " in item:
            raise ValueError(f"{name}: {item[:80]!r} is not a plain ASCII URL")
        entry = item + ("," if index < len(items) - 1 else "")
        if len(lines[-1]) + 1 + len(entry) > MAX_LINE and lines[-1] != f"{name}:":
            lines.append("")
        lines[-1] += " " + entry
    if max(len(line) for line in lines) > MAX_HARD_LINE:
        raise ValueError(f"{name}: a URL is longer than an SMTP line may be")
    return "\r\n".join(lines).encode("ascii") + b"\r\n"


def _qp_lines(lines: Sequence[bytes]) -> bytes:
    return binascii.b2a_qp(b"\r\n".join(lines) + b"\r\n", istext=True)


def quoted_printable(text: str) -> bytes:
    """UTF-8, CRLF line ends and a final line break, as `EmailMessage.set_content` writes."""
    return _qp_lines(text.encode("utf-8").splitlines())


class Body:
    """A step's body with placeholders, quoted-printable encoded once except where a lead's
    values go.

    Quoted-printable encodes each line on its own (a soft break never crosses a line end),
    so the constant lines, nearly all of them, are encoded when the step is compiled; per
    message only the few lines holding a placeholder are filled in and encoded. The result
    is byte for byte `quoted_printable` of the filled-in text.
    """

    def __init__(self, template: str, placeholder: re.Pattern[str]):
        self.placeholder = placeholder
        self._template = template
        self._chunks: list[bytes | str] = []  # encoded constant runs, and lines to fill in
        self._open_end = False
        if "\r" in template:
            # A CR (never in what the renderer makes) could pair with a line break across an
            # empty value: such a template stays whole, encoded per message (see `encode`).
            self._chunks.append(template)
            return
        constant: list[bytes] = []
        for line in template.encode("utf-8").splitlines():
            if placeholder.search(text := line.decode("utf-8")):
                if constant:
                    self._chunks.append(_qp_lines(constant))
                    constant = []
                self._chunks.append(text)
            else:
                constant.append(line)
        if constant or not self._chunks:
            self._chunks.append(_qp_lines(constant))
        # A last line with no line break after it is no line at all once it fills in empty,
        # exactly as `splitlines` reads the whole text.
        self._open_end = len(self._chunks) > 1 and template[-1] not in "\r\n"

    def encode(self, fill: Callable[[re.Match[str]], str]) -> bytes:
        parts = [
            chunk if isinstance(chunk, bytes) else self.placeholder.sub(fill, chunk)
            for chunk in self._chunks
        ]
        if any(isinstance(part, str) and ("\r" in part or "\n" in part) for part in parts):
            # A value with line breaks of its own (never a lead's field or a link) would meet
            # the template's: encode the whole text instead.
            return quoted_printable(self.placeholder.sub(fill, self._template))
        if self._open_end and parts[-1] == "":
            parts.pop()
        return b"".join(
            part if isinstance(part, bytes) else quoted_printable(part) for part in parts
        )


class Skeleton:
    """One step's constant headers and multipart frame, encoded once for every lead."""

    def __init__(self, static_headers: Sequence[tuple[str, str]]):
        boundary = f"=_{secrets.token_hex(16)}".encode("ascii")  # "=_" never occurs in QP
        self._head = b"".join(_fold(name, value, False) for name, value in static_headers) + (
            b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n boundary="'
            + boundary
            + b'"\r\n\r\n'
        )
        part = (
            b'--%s\r\nContent-Type: text/%s; charset="utf-8"\r\n'
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        )
        self._text = part % (boundary, b"plain")
        self._html = b"\r\n" + part % (boundary, b"html")
        self._end = b"\r\n--" + boundary + b"--\r\n"

    def message(
        self, headers: Sequence[bytes], text: bytes, html: bytes, utf8: bool = False
    ) -> MimeMessage:
        """The per-lead headers and both bodies, already encoded (`quoted_printable`, `Body`),
        on top of and between the constant parts."""
        return MimeMessage(
            b"".join(
                (
                    *headers,
                    self._head,
                    self._text,
                    text,
                    self._html,
                    html,
                    self._end,
                )
            ),
            utf8,
        )
