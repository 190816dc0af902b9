"""SMTP-ready MIME bytes from a per-step skeleton, instead of an `EmailMessage` per lead.

Building and serialising an `EmailMessage` costs more than the SMTP hop itself (~1.5–2 ms:
every header is parsed back into a tree and refolded). A step's constant parts — From,
Reply-To, List-Id, the multipart frame, and the body lines that hold no lead's values — are
encoded once; per message only the lead's headers are written and only the body lines with
a lead's values are quoted-printable encoded (by `binascii`, in C). The output keeps the
rules `EmailMessage(policy=SMTP)` follows: CRLF line ends, lines folded at 78 where a fold
is possible and never over 998, non-ASCII header text as RFC 2047 encoded words (raw UTF-8
only in an SMTPUTF8 message, whose recipient's local part is not ASCII), bodies quoted-printable
in UTF-8. The fast path only handles text that needs no quoting or encoding at all.

Lead text (the name in To, a subject that prints it) is never handed to the email package:
it decodes anything shaped like an encoded word (`=?utf-8?q?x=40evil=2Eexample=2C?=`) and
writes out what it says, so a name became a second address once folded. Here such text is
quoted or encoded itself, and reads back exactly as typed, one name and one address.
"""

from __future__ import annotations

import binascii
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.policy import SMTP, SMTPUTF8

import idna

MAX_LINE = 78  # RFC 5322's "should"; 998 is the "must"
MAX_HARD_LINE = 998
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Text that needs neither quoting nor encoding: an address and a display name of plain atoms.
_ATOM = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+"
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9_%+\-]+(\.[A-Za-z0-9_%+\-]+)*@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)*\Z"
)
_PLAIN_PHRASE = re.compile(rf"{_ATOM}( {_ATOM})*\Z")
_ATOM_WORD = re.compile(rf"{_ATOM}\Z")
_PRINTABLE_WORD = re.compile(r"[!-~]+\Z")  # any word of visible ASCII, in free text
# An address as the intake accepts it: a dot-atom local part (non-ASCII letters only in an
# SMTPUTF8 message) at a domain of labels; no quoting, comments, spaces or second address.
_ADDR_ATEXT = r"(?:[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]|[^\x00-\x7f\s])+"
_LABEL = r"(?:[A-Za-z0-9\-]|[^\x00-\x7f\s])+"
_ADDR_SPEC = re.compile(rf"{_ADDR_ATEXT}(?:\.{_ADDR_ATEXT})*@{_LABEL}(?:\.{_LABEL})*\Z")
# Q encoding in a phrase keeps only these as they are (RFC 2047 5(3)); `=` and `?` never.
_Q_PLAIN = re.compile(r"[A-Za-z0-9!*+\-/]")
# The longest word written as is, and the longest encoded word: either fits on the first
# line of a Subject, so a fold is always possible before it (an encoded word may be 75).
_LONGEST_WORD = MAX_LINE - len("Subject: ")
_Q_PAYLOAD = _LONGEST_WORD - len("=?utf-8?q??=")


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


def _q_chars(char: str) -> str:
    """One character in RFC 2047's Q encoding, limited to what a phrase allows as is."""
    if char == " ":
        return "_"
    if _Q_PLAIN.match(char):
        return char
    return "".join(f"={byte:02X}" for byte in char.encode("utf-8"))


def _encoded_words(text: str) -> list[str]:
    """`text` as UTF-8 Q encoded words that fit a line, split after a space where possible.

    A reader decodes them to exactly `text` and never reads what is inside as anything but
    text: lead text that itself looks like an encoded word or an address is encoded too.
    Readers drop the space between two encoded words (RFC 2047), except the standard
    library's address parser, which keeps it: a split after a space costs it only a double
    space, where a split inside a word would break the word.
    """
    words: list[str] = []
    payload = ""
    for piece in re.findall(r"[^ ]* ?", text)[:-1]:  # each word with the space after it
        encoded = "".join(map(_q_chars, piece))
        if payload and len(payload) + len(encoded) > _Q_PAYLOAD:
            words.append(f"=?utf-8?q?{payload}?=")
            payload = ""
        if len(encoded) <= _Q_PAYLOAD:
            payload += encoded
            continue
        for char in piece:  # a word longer than a line: split between its characters
            encoded = _q_chars(char)
            if payload and len(payload) + len(encoded) > _Q_PAYLOAD:
                words.append(f"=?utf-8?q?{payload}?=")
                payload = ""
            payload += encoded
    if payload:
        words.append(f"=?utf-8?q?{payload}?=")
    return words


def _words(text: str, plain: re.Pattern[str]) -> list[str]:
    """Header words for `text`: words that `plain` matches as they are, every run of others as
    encoded words. The space between an encoded word and a plain one is kept by readers,
    the space between two encoded words is not, so a run is encoded with its spaces inside."""
    if text != " ".join(text.split()):  # spaces a fold could not keep as they are
        return _encoded_words(text)
    tokens: list[str] = []
    run: list[str] = []
    for word in text.split(" "):
        if plain.match(word) and "=?" not in word and len(word) <= _LONGEST_WORD:
            if run:
                tokens += _encoded_words(" ".join(run))
                run = []
            tokens.append(word)
        else:
            run.append(word)
    if run:
        tokens += _encoded_words(" ".join(run))
    return tokens


def _folded(name: str, tokens: Sequence[str], utf8: bool) -> bytes:
    """`name: ` and the tokens separated by spaces, a line broken before a token that would
    take it past 78 characters; a single token longer than that stays whole."""
    lines = [f"{name}:"]
    for token_ in tokens:
        if len(lines[-1]) + 1 + len(token_) > MAX_LINE and lines[-1] != f"{name}:":
            lines.append("")
        lines[-1] += " " + token_
    if max(len(line.encode("utf-8")) for line in lines) > MAX_HARD_LINE:
        raise ValueError(f"{name}: a word is longer than an SMTP line may be")
    return "\r\n".join(lines).encode("utf-8" if utf8 else "ascii") + b"\r\n"


def unstructured(name: str, value: str, utf8: bool = False) -> bytes:
    """A header of free text (Subject): plain ASCII words as they are, the rest as encoded
    words; text that looks like an encoded word is encoded too, so it reads back as typed.
    (The email package would decode it first and write what it says.)"""
    line = f"{name}: {value}"
    if (
        len(line) <= MAX_LINE
        and value.isascii()
        and not _CONTROL.search(value)
        and "=?" not in value
        and value == value.strip()
    ):
        return line.encode("ascii") + b"\r\n"
    return _folded(name, _words(value, _PRINTABLE_WORD), False)


def _quoted(words: Sequence[str]) -> list[str]:
    """Words in quoted strings of at most a line each (a fold inside one is read back as a
    line break by some parsers), `=` escaped so that no parser takes `=?...?=` inside for
    an encoded word (the standard library's does)."""
    strings: list[str] = []
    for word in words:
        word = re.sub(r'([\\"=])', r"\\\1", word)
        if strings and len(strings[-1]) + len(word) + 2 <= _LONGEST_WORD:
            strings[-1] = strings[-1][:-1] + f' {word}"'
        else:
            strings.append(f'"{word}"')
    return strings


def _phrase(display_name: str, utf8: bool) -> list[str]:
    """A display name as header words that a reader takes for exactly this name and nothing
    else: atoms as they are, other words in quoted strings, and non-ASCII ones as encoded
    words (raw UTF-8 in an SMTPUTF8 message). Never the email package, which decodes
    `=?...?=` in a name and writes out the result: a name like
    `=?utf-8?q?x=40evil=2Eexample=2C?= Ann` became a second address once folded."""
    words = display_name.split()
    if " ".join(words) != display_name or _CONTROL.search(display_name):
        return _encoded_words(display_name)  # never the case for the renderer's names
    if display_name.isascii() and not _PLAIN_PHRASE.match(display_name):
        whole = _quoted([display_name])  # `"Dr. Who"`, as the email package writes it
        if len(whole[0]) <= _LONGEST_WORD:
            return whole
    tokens: list[str] = []
    run: list[str] = []
    run_encoded = False
    for word in [*words, ""]:
        atom = bool(word) and _ATOM_WORD.match(word) is not None and "=?" not in word
        encoded = not (utf8 or word.isascii())
        if run and (atom or not word or encoded != run_encoded):
            tokens += _encoded_words(" ".join(run)) if run_encoded else _quoted(run)
            run = []
        if atom:
            tokens.append(word)
        elif word:
            run.append(word)
            run_encoded = encoded
    return tokens


def address(name: str, display_name: str, addr_spec: str, utf8: bool = False) -> bytes:
    """An address header (To) with exactly one address; raises ValueError for an address
    that is not a plain `local@domain`, or not ASCII in a message without SMTPUTF8."""
    if (
        _PLAIN_ADDRESS.match(addr_spec)
        and (not display_name or _PLAIN_PHRASE.match(display_name))
        and "=?" not in display_name
    ):
        line = f"{name}: {display_name} <{addr_spec}>" if display_name else f"{name}: {addr_spec}"
        if len(line) <= MAX_LINE:
            return line.encode("ascii") + b"\r\n"
    if not _ADDR_SPEC.match(addr_spec):
        raise ValueError(f"{name}: {addr_spec[:80]!r} is not a plain email address")
    if not utf8 and not addr_spec.isascii():
        raise ValueError(f"{name}: {addr_spec[:80]!r} needs an SMTPUTF8 message")
    tokens = _phrase(display_name, utf8)
    return _folded(name, [*tokens, f"<{addr_spec}>"] if tokens else [addr_spec], utf8)


@dataclass(frozen=True)
class WireAddress:
    """An address as SMTP and the To header carry it."""

    address: str
    utf8: bool  # the local part is not ASCII: only an SMTPUTF8 session can carry it


def wire_address(address: str) -> WireAddress:
    """The domain in its ASCII form (IDNA) whenever the local part is ASCII, so that no
    SMTPUTF8 is needed: many relays do not offer it. A lead list keeps `bücher.example` as
    typed or normalised; the relay gets `xn--bcher-kva.example`, the same domain."""
    local, _, domain = address.rpartition("@")
    if not local.isascii():
        return WireAddress(address, True)
    if domain.isascii():
        return WireAddress(address, False)
    try:
        ascii_domain = idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:  # not a domain IDNA can write in ASCII: only SMTPUTF8 carries it
        return WireAddress(address, True)
    return WireAddress(f"{local}@{ascii_domain}", False)


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
