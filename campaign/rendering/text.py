"""The text part of an email, written from its HTML as plain text a person would write.

Mail programs that show the text part show it as it is, so it carries no Markdown (`#`,
`**`, `* `): headings and paragraphs are plain lines, list items start with a dash. Each link
reads `words (address)` the first time its address appears and just `words` after that, so no
address is printed twice. Lines wrap near 78 characters; an address is never broken and
stands on its own line, since tracked and unsubscribe addresses are longer than a line.

The HTML given here still has placeholders for each lead's values and links (see
`renderer`): an address placeholder is measured as a whole line, any other as its own length.
Elements with the class `preheader` or `html-only` belong to the HTML alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum

import lxml.html
from lxml.etree import _Element

WIDTH = 78
HTML_ONLY = frozenset({"preheader", "html-only"})  # classes the text part leaves out
_SKIPPED = frozenset({"head", "style", "script", "title", "img"})
_BLOCKS = frozenset(
    {"address", "blockquote", "body", "center", "div", "footer", "header", "section"}
    | {"h1", "h2", "h3", "h4", "h5", "h6", "hr", "li", "ol", "p", "table", "td", "th", "tr", "ul"}
)


class Kind(Enum):
    """How a paragraph is laid out."""

    PLAIN = "plain"
    ITEM = "item"  # a list item: "- " then lines indented under its first word


@dataclass
class Paragraph:
    """One block of the text part: its words, line by line where the HTML had `<br>`."""

    kind: Kind = Kind.PLAIN
    lines: list[list[str]] = field(default_factory=lambda: [[]])  # words, per <br> line
    glued: bool = False  # the last text added ended inside a word

    def add(self, text: str) -> None:
        """Text as HTML shows it: `<b>a</b>b` is one word, `(link).` ends with its dot."""
        words, line = text.split(), self.lines[-1]
        if words and line and self.glued and not text[0].isspace():
            line[-1] += words.pop(0)
        line.extend(words)
        if text:
            self.glued = not text[-1].isspace()

    def newline(self) -> None:
        self.lines.append([])
        self.glued = False

    def empty(self) -> bool:
        return not any(self.lines)


@dataclass
class _Writer:
    """Walks the HTML once, collecting paragraphs of words."""

    link_targets: Mapping[str, str]
    paragraphs: list[Paragraph] = field(default_factory=list)
    printed: set[str] = field(default_factory=set)  # addresses already written out
    addresses: set[str] = field(default_factory=set)

    @property
    def current(self) -> Paragraph:
        if not self.paragraphs:
            self.paragraphs.append(Paragraph())
        return self.paragraphs[-1]

    def start(self, kind: Kind = Kind.PLAIN) -> None:
        if self.paragraphs and self.current.empty():
            self.current.kind = kind
        else:
            self.paragraphs.append(Paragraph(kind))

    def walk(self, element: _Element) -> None:
        tag = element.tag if isinstance(element.tag, str) else ""
        classes = set((element.get("class") or "").split()) if tag else set()
        if tag and tag not in _SKIPPED and not classes & HTML_ONLY:
            self._element(element, tag)
        if element.tail:
            self.current.add(element.tail)

    def _element(self, element: _Element, tag: str) -> None:
        block = tag in _BLOCKS
        if block:
            self.start(Kind.ITEM if tag == "li" else Kind.PLAIN)
        if tag == "br":
            self.current.newline()
        elif tag == "a":
            self._link(element)
            return
        if element.text:
            self.current.add(element.text)
        for child in element:
            self.walk(child)
        if block:
            self.start()

    def _link(self, anchor: _Element) -> None:
        words = " ".join("".join(str(part) for part in anchor.itertext()).split())
        href = anchor.get("href") or ""
        target = self.link_targets.get(href, href)
        if not href.strip() or href.startswith("#"):
            self.current.add(words)
            return
        if href.startswith("mailto:"):  # short: the address as a reader would type it
            address = href.removeprefix("mailto:").split("?")[0]
            self.current.add(words if address in words else f"{words} ({address})")
            return
        self.addresses.add(href)
        if href in self.printed:
            self.current.add(words)
        elif words in ("", href, target):
            self.current.add(href)
        else:
            self.current.add(f"{words} ({href})")
        self.printed.add(href)


def _measure(addresses: set[str]) -> Callable[[str], int]:
    """A word's width; one holding an address counts as a whole line."""

    def width(word: str) -> int:
        return WIDTH + 1 if any(a in word for a in addresses) else len(word)

    return width


def _wrap(words: list[str], width: Callable[[str], int], room: int) -> Iterator[str]:
    line: list[str] = []
    used = 0
    for word in words:
        size = width(word)
        if line and used + 1 + size > room:
            yield " ".join(line)
            line, used = [], 0
        used += size + (1 if line else 0)
        line.append(word)
    if line:
        yield " ".join(line)


def _layout(paragraph: Paragraph, width: Callable[[str], int]) -> str:
    first, rest = ("- ", "  ") if paragraph.kind is Kind.ITEM else ("", "")
    out: list[str] = []
    for words in paragraph.lines:
        for line in _wrap(words, width, WIDTH - len(first)):
            out.append((rest if out else first) + line)
    return "\n".join(out)


def html_to_text(body: str, link_targets: Mapping[str, str]) -> str:
    """The text part for an email's HTML. `link_targets` maps an href placeholder to the
    address it stands for, so a link whose words are its own address prints it once."""
    writer = _Writer(link_targets)
    doc = lxml.html.document_fromstring(body)
    found = doc.find("body")
    writer.walk(doc if found is None else found)
    width = _measure(writer.addresses)
    text, previous = "", None
    for paragraph in writer.paragraphs:
        block = _layout(paragraph, width)
        if not block.strip():
            continue
        together = previous is Kind.ITEM and paragraph.kind is Kind.ITEM  # one list
        text += ("\n" if together else "\n\n") + block if text else block
        previous = paragraph.kind
    return text + "\n"
