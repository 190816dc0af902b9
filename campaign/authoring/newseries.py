"""A draft series from an article: split it at its headings, one email per group of sections,
a week apart, with a booking email at the end.

The draft is a starting point the marketer edits, so it is written as plain files in the
usual layout (a schedule file beside a templates folder that extends `layout.html.j2`) and
is checked to load and render before the command reports success. Article text is data:
it is HTML-escaped and Jinja's braces are written as entities, so nothing in an article can
run as template code. Plain-text articles have no markup, so their headings are guessed:
short lines without closing punctuation that are followed by body text.
"""

from __future__ import annotations

import html
import re
import shutil
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

import lxml.html
import yaml
from markdown_it import MarkdownIt

from campaign.config.schedule import (
    INHERITED_FIELDS,
    MAX_PREHEADER,
    MAX_SUBJECT,
    Schedule,
    format_clock,
    format_delay,
    load_schedule,
    setting_value,
)
from campaign.rendering.renderer import Renderer

LAYOUT = "layout.html.j2"
DEFAULT_STEPS = 4
WEEK = "7d"
MAX_HEADING_WORDS = 12
MAX_HEADING_CHARS = 90
SUBJECT_CHARS = MAX_SUBJECT  # inboxes cut a subject at about 60 characters
# Article words per email: with the greeting, teaser, booking note and footer a draft email
# stays under ~350 words, about as much as readers finish.
BODY_WORDS = 210
_STOPWORDS = frozenset(
    {"a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "how"}
    | {"in", "is", "it", "of", "on", "or", "the", "to", "what", "when", "why", "with", "you"}
    | {"your"}
)
_BULLET = re.compile(r"^(?:[-*•–]|(\d{1,2})[.)])\s+(.*)$")
_UNDERLINE = re.compile(r"^(=+|-+)$")
PREHEADER_CHARS = MAX_PREHEADER  # what `schedule check` accepts without a warning
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_LABELLED = re.compile(r"^([A-Z][^:.!?]{0,40}):\s+(\S.*)$")
_SENTENCE_END = re.compile(r"[.!?…]['\"”’)]?$")
BLOCK_TAGS = ("h1", "h2", "h3", "h4", "h5", "h6", "p", "ul", "ol", "blockquote", "pre")
INLINE_KEEP = {"strong": "strong", "b": "strong", "em": "em", "i": "em", "code": "code"}


class NewSeriesError(ValueError):
    """The article cannot become a series, or the files it would write already exist."""


@dataclass(frozen=True)
class Block:
    """A piece of body content, already safe HTML: a paragraph, a sub-heading or a list."""

    kind: Literal["p", "h3", "ul", "ol"]
    parts: tuple[str, ...]  # one for p and h3; one per item for lists

    @property
    def words(self) -> int:
        return sum(len(_plain(part).split()) for part in self.parts)

    def html(self) -> str:
        if self.kind in ("ul", "ol"):
            items = "\n".join(f"  <li>{part}</li>" for part in self.parts)
            return f"<{self.kind}>\n{items}\n</{self.kind}>"
        return f"<{self.kind}>{self.parts[0]}</{self.kind}>"


@dataclass
class Section:
    title: str  # plain text
    blocks: list[Block] = field(default_factory=list)

    @property
    def words(self) -> int:
        return len(self.title.split()) + sum(block.words for block in self.blocks)


@dataclass
class Article:
    title: str
    intro: list[Block]
    sections: list[Section]
    ignored: list[str] = field(default_factory=list)  # lines left out, named in the draft


# -- safe text -----------------------------------------------------------------------------


def _safe(text: str) -> str:
    """HTML-escaped, with Jinja's braces as entities so article text never runs as code."""
    return (
        html.escape(" ".join(text.split()), quote=True)
        .replace("{", "&#123;")
        .replace("}", "&#125;")
    )


def _plain(fragment: str) -> str:
    """Text of a safe HTML fragment, for word counts, subjects and preheaders."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def _one_line(text: str, limit: int) -> str:
    """For YAML fields: one line, no template braces (subjects are Jinja), at most `limit`."""
    text = " ".join(text.replace("{", "(").replace("}", ")").split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def slug(text: str, words: int = 3) -> str:
    """A step id that reads well: the heading's first few words that carry meaning
    (`Types of Back Pain Addressed` → `types-back-pain`)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    found = re.findall(r"[a-z0-9]+", ascii_text.lower())
    meaningful = [word for word in found if word not in _STOPWORDS] or found
    return "-".join(meaningful[:words])[:40].strip("-") or "step"


def short_subject(text: str, limit: int = SUBJECT_CHARS) -> str:
    """A subject (or preheader) of at most `limit` characters, a long one shortened at a word
    with "…"."""
    text = _one_line(text, 10_000)
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:–—-") + "…"


# -- plain text ----------------------------------------------------------------------------


def _heading_like(line: str) -> bool:
    """Short, starts like a title, and does not end like a sentence (a `:` may end it)."""
    words = line.split()
    if not words or len(line) > MAX_HEADING_CHARS or len(words) > MAX_HEADING_WORDS:
        return False
    if not (line[0].isupper() or line[0].isdigit()) or re.search(r"[.!?;]\s", line):
        return False
    if line.endswith(":"):
        return "," not in line
    return not re.search(r"[.,;!?…]$", line)


def _question_like(line: str) -> bool:
    """A short one-sentence question standing alone, as in a FAQ."""
    words = line.split()
    return (
        line.endswith("?")
        and len(words) <= MAX_HEADING_WORDS
        and line[0].isupper()
        and not re.search(r"[.!?]\s", line)
    )


def _text_paragraphs(text: str) -> list[str]:
    """Paragraphs split on blank lines; a heading on a block's first line stands alone."""
    out = []
    for chunk in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        lines = [line.strip() for line in chunk.splitlines() if line.strip()]
        if len(lines) > 1 and _UNDERLINE.match(lines[1]):  # a Setext heading: Title / =====
            out.append(lines[0].rstrip(":"))
            lines = lines[2:]
        elif len(lines) > 1 and (_heading_like(lines[0]) or _question_like(lines[0])):
            out.append(lines.pop(0))
        if lines and _BULLET.match(lines[0]):
            out.append("\n".join(_list_items(lines)))  # a list keeps one item a line
        elif lines:
            out.append(" ".join(lines))
    return out


def _list_items(lines: list[str]) -> list[str]:
    """`- item` (or `*`, `•`, `1.`) lines as items; other lines continue the item above."""
    items: list[str] = []
    for line in lines:
        if _BULLET.match(line) or not items:
            items.append(line)
        else:
            items[-1] += " " + line
    return items


def _list_block(paragraph: str) -> Block | None:
    """A paragraph of one `- item` a line as a list (numbered items: an ordered list)."""
    matches = [_BULLET.match(line) for line in paragraph.split("\n")]
    if "\n" not in paragraph or not all(matches):
        return None
    ordered = all(match[1] for match in matches if match)
    return Block("ol" if ordered else "ul", tuple(_safe(m[2]) for m in matches if m))


def _text_blocks(paragraphs: list[str]) -> list[Block]:
    """Body paragraphs; runs of `Label: text` paragraphs become a list with bold labels."""
    blocks: list[Block] = []
    run: list[str] = []

    def flush() -> None:
        if len(run) > 1:
            blocks.append(Block("ul", tuple(run)))
        elif run:
            blocks.append(Block("p", (run[0],)))
        run.clear()

    for paragraph in paragraphs:
        listed = _list_block(paragraph)
        if listed is not None:
            flush()
            blocks.append(listed)
            continue
        match = _LABELLED.match(paragraph)
        if match and len(match[1].split()) <= 5:
            run.append(f"<strong>{_safe(match[1])}:</strong> {_safe(match[2])}")
            continue
        flush()
        if _question_like(paragraph):
            blocks.append(Block("h3", (_safe(paragraph),)))
        else:
            blocks.append(Block("p", (_safe(paragraph),)))
    flush()
    return blocks


def parse_text(text: str) -> Article:
    """Guess the structure of a plain-text article (see the module docstring)."""
    paragraphs = _text_paragraphs(text)
    if not paragraphs:
        raise NewSeriesError("the article is empty")
    title = ""
    ignored = []
    if _heading_like(paragraphs[0]) or _question_like(paragraphs[0]):
        title = paragraphs.pop(0).rstrip(":")
        # A short fragment under the title that is neither a heading nor a sentence is a
        # subtitle or a keyword line, not body text.
        if (
            paragraphs
            and not _SENTENCE_END.search(paragraphs[0])
            and len(paragraphs[0].split()) <= 8
            and not _heading_like(paragraphs[0])
        ):
            ignored.append(paragraphs.pop(0))
    chunks: list[tuple[str | None, list[str]]] = [(None, [])]
    for index, paragraph in enumerate(paragraphs):
        following = paragraphs[index + 1] if index + 1 < len(paragraphs) else None
        leads_in = paragraph.endswith(":") and following is not None and "\n" in following
        if (
            following is not None
            and _heading_like(paragraph)
            and not _heading_like(following)
            and not leads_in  # "What to bring:" before a list introduces it
        ):
            chunks.append((paragraph.rstrip(":").strip(), []))
        else:
            chunks[-1][1].append(paragraph)
    intro = _text_blocks(chunks[0][1])
    sections = [Section(heading, _text_blocks(body)) for heading, body in chunks[1:] if heading]
    return Article(title, intro, sections, ignored)


# -- HTML and Markdown ---------------------------------------------------------------------


def _inline(element: lxml.html.HtmlElement) -> str:
    """An element's content as safe inline HTML: emphasis, code and web links kept."""
    out = [_safe(element.text or "")] if element.text else []
    for child in element:
        tag = child.tag if isinstance(child.tag, str) else ""
        inner = _inline(child)
        if tag in INLINE_KEEP:
            out.append(f"<{INLINE_KEEP[tag]}>{inner}</{INLINE_KEEP[tag]}>")
        elif tag == "a" and re.match(r"^(https?://|mailto:)", child.get("href", "")):
            out.append(f'<a href="{_safe(child.get("href"))}">{inner}</a>')
        elif tag == "br":
            out.append("<br>")
        else:
            out.append(inner)
        if child.tail:
            out.append(_safe(child.tail))
    return " ".join(" ".join(out).split()).replace(" </", "</")


def _html_block(element: lxml.html.HtmlElement) -> Block | None:
    if element.tag in ("ul", "ol"):
        items = tuple(_inline(li) for li in element.iter("li"))
        return Block(element.tag, items) if any(items) else None
    content = _inline(element)
    return Block("p", (content,)) if content else None


def _top_blocks(root: lxml.html.HtmlElement) -> list[lxml.html.HtmlElement]:
    """Block elements in document order, skipping those nested in another block."""
    found = []
    for element in root.iter(*BLOCK_TAGS):
        if not any(parent.tag in BLOCK_TAGS for parent in element.iterancestors()):
            found.append(element)
    return found


def parse_html(text: str) -> Article:
    """Sections at the highest heading level under the title (`<h1>`, then `<h2>`...)."""
    # lxml's stubs type parsed trees as plain `_Element`; an HTML parser gives HtmlElements.
    root = cast(lxml.html.HtmlElement, lxml.html.document_fromstring(text or "<p></p>"))
    junk = root.xpath("//script|//style|//nav|//header|//footer|//aside|//form")
    for element in cast(list[lxml.html.HtmlElement], junk):
        element.drop_tree()
    body = root.find("body")
    elements = _top_blocks(body if body is not None else root)
    headings = [e for e in elements if e.tag[0] == "h" and e.tag[1:].isdigit()]
    title = ""
    if headings and headings[0].tag == "h1" and sum(h.tag == "h1" for h in headings) == 1:
        title = headings[0].text_content().strip()
        elements.remove(headings[0])
        headings = headings[1:]
    elif (title_element := root.find(".//title")) is not None:
        title = cast(lxml.html.HtmlElement, title_element).text_content().strip()
    level = min((h.tag for h in headings), default=None)
    intro: list[Block] = []
    sections: list[Section] = []
    for element in elements:
        if element.tag == level:
            sections.append(Section(" ".join(element.text_content().split())))
            continue
        if element.tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            block: Block | None = Block("h3", (_inline(element),))
        else:
            block = _html_block(element)
        if block is not None:
            (sections[-1].blocks if sections else intro).append(block)
    return Article(title, intro, [s for s in sections if s.title])


def parse_markdown(text: str) -> Article:
    """Markdown through CommonMark to HTML (raw HTML in the article is shown as text)."""
    return parse_html(MarkdownIt("commonmark", {"html": False}).render(text))


def read_article(path: Path) -> Article:
    suffix = path.suffix.lower()
    parsers = {
        ".txt": parse_text,
        ".md": parse_markdown,
        ".markdown": parse_markdown,
        ".html": parse_html,
        ".htm": parse_html,
    }
    if suffix not in parsers:
        raise NewSeriesError(f"{path.name}: use a .txt, .md or .html article")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise NewSeriesError(f"{path.name} cannot be read as UTF-8 text: {exc}") from None
    article = parsers[suffix](text)
    if not article.sections:
        raise NewSeriesError(
            f"{path.name}: no headings found, so there is nothing to split the series at "
            "(add headings: '## Heading' in Markdown, <h2> in HTML, or short title lines "
            "followed by paragraphs in text)"
        )
    return article


# -- grouping ------------------------------------------------------------------------------


def group_sections(weights: list[int], groups: int) -> list[tuple[int, int]]:
    """Split into `groups` runs in order, keeping the longest run as short as possible.

    Emails of similar length read better than one long and one short, so this is the
    classic linear partition (dynamic programming over the split points).
    """
    count = len(weights)
    groups = max(1, min(groups, count))
    prefix = [0]
    for weight in weights:
        prefix.append(prefix[-1] + weight)
    inf = float("inf")
    best = [[inf] * (groups + 1) for _ in range(count + 1)]
    cut = [[0] * (groups + 1) for _ in range(count + 1)]
    best[0][0] = 0
    for end in range(1, count + 1):
        for parts in range(1, min(groups, end) + 1):
            for start in range(parts - 1, end):
                cost = max(best[start][parts - 1], prefix[end] - prefix[start])
                if cost < best[end][parts]:
                    best[end][parts], cut[end][parts] = cost, start
    runs, end = [], count
    for parts in range(groups, 0, -1):
        start = cut[end][parts]
        runs.append((start, end))
        end = start
    return runs[::-1]


# -- the draft -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DraftStep:
    id: str
    subject: str
    preheader: str
    body: str  # the template's {% block body %} content

    @property
    def template(self) -> str:
        return f"{self.id}.html.j2"


def _first_sentence(blocks: list[Block]) -> str:
    for block in blocks:
        if block.kind == "p":
            text = _plain(block.parts[0])
            match = re.match(r"(.+?[.!?])(\s|$)", text)
            return short_subject(match[1] if match else text, PREHEADER_CHARS)
    return ""


def _unique(wanted: str, taken: set[str]) -> str:
    candidate, number = wanted, 2
    while candidate in taken:
        candidate = f"{wanted[:36]}-{number}"
        number += 1
    taken.add(candidate)
    return candidate


# The teaser names the next email from the schedule, so it stays true after any edit.
TEASER = (
    "{% if next_step %}<p><strong>Coming {{ next_step.when }}:</strong> "
    "&ldquo;{{ next_step.subject }}&rdquo;{% if next_step.preheader %} &ndash; "
    "{{ next_step.preheader }}{% endif %}</p>{% endif %}"
)
# The recap is the schedule's list of earlier emails, in the order they came.
RECAP = "{% for earlier in earlier_steps %}\n  <li>{{ earlier.subject }}</li>\n{% endfor %}"


def _content_body(
    heading: str, intro: list[Block], sections: list[Section], article_url: str | None = None
) -> str:
    """The intro (first email only), then each section; the first heading is the email's h1.
    With the article's address, a link to read all of it."""
    parts = ["<p>Hi {{ lead.first_name }},</p>", f"<h1>{_safe(heading)}</h1>"]
    parts += [block.html() for block in intro]
    for index, section in enumerate(sections):
        if index or section.title != heading:
            parts.append(f"<h2>{_safe(section.title)}</h2>")
        parts += [block.html() for block in section.blocks]
    if article_url is not None:
        parts.append(
            f'<p><a href="{_safe(article_url)}">Read the whole article</a> on our website.</p>'
        )
    parts += [
        TEASER,
        '<p class="note">Questions in the meantime? <a href="{{ links.booking }}">Book a '
        "session</a> or just reply to this email.</p>",
        "<p>Warmly,<br>\n{{ clinic.name }}</p>",
    ]
    return "\n\n".join(parts)


def _booking_body(title: str) -> str:
    recap = RECAP
    topic = f" on &ldquo;{_safe(title)}&rdquo;" if title else ""
    return "\n".join(
        [
            "<p>Hi {{ lead.first_name }},</p>",
            "",
            "<h1>Ready for the next step?</h1>",
            "",
            f'<p class="lead">Thank you for reading our series{topic}. '
            "Here is what we covered:</p>",
            "",
            f'<table role="presentation" width="100%" cellpadding="0" cellspacing="0"><tr>'
            f'<td class="card">\n<ul>\n{recap}\n</ul>\n</td></tr></table>',
            "",
            "<p>When you are ready, we would be glad to see you.</p>",
            "",
            '<table role="presentation" cellpadding="0" cellspacing="0" border="0"><tr>'
            '<td class="button-cell"><a class="button" href="{{ links.booking }}">Book your first '
            "visit</a></td></tr></table>",
            "",
            # Words, not the address: filters flag an address shown over a tracked link.
            '<p class="note html-only">Button not showing? <a href="{{ links.booking }}">Book '
            "your visit on our website</a>.</p>",
            "",
            "<p>Warmly,<br>\n{{ clinic.name }}</p>",
        ]
    )


def _split_block(block: Block, budget: int) -> list[Block]:
    """A paragraph longer than an email's budget as several, at sentence ends."""
    if block.kind != "p" or block.words <= budget:
        return [block]
    pieces: list[list[str]] = [[]]
    for sentence in re.split(r"(?<=[.!?])\s+", block.parts[0]):
        if pieces[-1] and len(_plain(" ".join([*pieces[-1], sentence])).split()) > budget:
            pieces.append([])
        pieces[-1].append(sentence)
    return [Block("p", (" ".join(piece),)) for piece in pieces]


def _split_section(section: Section, budget: int) -> list[Section]:
    """A section longer than an email's budget as parts ("…, part 2") at paragraph ends."""
    blocks = [piece for block in section.blocks for piece in _split_block(block, budget)]
    parts = [Section(section.title)]
    for block in blocks:
        if parts[-1].blocks and parts[-1].words + block.words > budget:
            parts.append(Section(f"{section.title}, part {len(parts) + 1}"))
        parts[-1].blocks.append(block)
    return parts


def _runs(weights: list[int], wanted: int, budget: int | None) -> list[tuple[int, int]]:
    """`wanted` even runs; with a budget, as many more as it takes to keep each within it."""
    groups = max(1, min(wanted, len(weights)))
    runs = group_sections(weights, groups)
    while budget is not None and groups < len(weights):
        if max(sum(weights[start:end]) for start, end in runs) <= budget:
            break
        groups += 1
        runs = group_sections(weights, groups)
    return runs


def _within(sections: list[Section], budget: int) -> list[Section]:
    """The sections that fit in one email's budget (the first always, cut at a block)."""
    kept: list[Section] = []
    used = 0
    for section in sections:
        blocks: list[Block] = []
        for block in section.blocks:
            if used + block.words > budget and (blocks or kept):
                break
            blocks.append(block)
            used += block.words
        if blocks or not kept:
            kept.append(Section(section.title, blocks))
        if len(blocks) < len(section.blocks):
            break
    return kept


def draft_steps(
    article: Article,
    clinic: str,
    content_steps: int = DEFAULT_STEPS,
    article_url: str | None = None,
) -> list[DraftStep]:
    """One step per group of sections, subjects from headings, then a booking step.

    Each email keeps to about `BODY_WORDS` of the article: with `article_url` the rest of a
    group is left to a "read the whole article" link; without it the article is spread over
    more steps than asked for rather than cut.
    """
    intro_words = sum(block.words for block in article.intro)
    if article_url is None:
        sections = [
            part
            for section in article.sections
            for part in _split_section(section, max(BODY_WORDS - intro_words, BODY_WORDS // 3))
        ]
    else:
        sections = article.sections
    weights = [s.words for s in sections]
    weights[0] += intro_words
    runs = _runs(weights, content_steps, None if article_url else BODY_WORDS)
    taken: set[str] = {"booking"}
    steps = []
    for number, (start, end) in enumerate(runs):
        group = sections[start:end]
        intro = article.intro if number == 0 else []
        if article_url is not None:
            group = _within(group, max(BODY_WORDS - intro_words, 0))
        heading = article.title if number == 0 and article.title else group[0].title
        preheader = _first_sentence(intro + [b for s in group for b in s.blocks])
        body = _content_body(heading, intro, group, article_url)
        step_id = _unique(slug(group[0].title), taken)
        steps.append(DraftStep(step_id, short_subject(heading), preheader, body))
    booking_subject = f"Ready when you are: book your first visit with {clinic}"
    if len(booking_subject) > SUBJECT_CHARS:
        booking_subject = "Ready when you are: book your first visit"
    booking = DraftStep(
        "booking",
        short_subject(booking_subject),
        "What we covered, and how to book your first visit.",
        _booking_body(article.title),
    )
    return [*steps, booking]


# -- files ---------------------------------------------------------------------------------


class Quoted(str):
    """A value written in quotes: `"09:00"` would otherwise read back as a number in YAML 1.1."""


class _DraftDumper(yaml.SafeDumper):
    """Short lists on one line (`days: [mon, tue]`), mappings as blocks, clocks quoted."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flat = all(isinstance(item, str | int | float) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


def _represent_quoted(dumper: yaml.SafeDumper, data: Quoted) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(data), style='"')


_DraftDumper.add_representer(list, _represent_list)
_DraftDumper.add_representer(Quoted, _represent_quoted)


def _settings(base: Schedule, campaign_id: str) -> dict:
    """The clinic's settings, copied from the schedule in use, as a marketer would write them."""
    window = base.send_window
    utm = dict(base.utm)
    if "utm_campaign" in utm:
        utm["utm_campaign"] = campaign_id
    return {
        "sender": base.sender.model_dump(mode="json", by_alias=True, exclude_none=True),
        "clinic": base.clinic.model_dump(mode="json"),
        "booking_url": str(base.booking_url),
        "timezone": base.timezone,
        "send_window": {
            "days": list(window.days),
            "start": Quoted(format_clock(window.start)),
            "end": Quoted(format_clock(window.end)),
        },
        "personal_fields": {name: f.model_dump() for name, f in base.personal_fields.items()},
        "exit_on": list(base.exit_on),
        "rate_limit": base.rate_limit.model_dump(exclude_none=True),
        "retry": {
            "attempts": base.retry.attempts,
            "first_delay": format_delay(base.retry.first_delay),
            "max_delay": format_delay(base.retry.max_delay),
            "max_age": format_delay(base.retry.max_age),
        },
        "utm": utm,
        # Copied from another series: `schedule check` asks for a review of each value until
        # it is changed here or its line below is deleted.
        "inherited": {
            name: value for name in INHERITED_FIELDS if (value := setting_value(base, name))
        },
    }


def draft_delay(index: int) -> str:
    """The draft's delay for its step at `index`: the first email goes out at signup, each
    later one a week after the one before."""
    return "0d" if index == 0 else WEEK


def _series_name(article: Article) -> str:
    """The article's title, else its first heading: leads never see the internal id."""
    return article.title or article.sections[0].title


def schedule_text(
    article: Article,
    steps: list[DraftStep],
    base: Schedule,
    campaign_id: str,
    templates: str,
    source: str,
    base_name: str,
) -> str:
    data = {
        # The name is what leads see ("you signed up for …"); never the internal id.
        "campaign": {"id": campaign_id, "name": _one_line(_series_name(article), 200)},
        "templates": templates,
        **_settings(base, campaign_id),
        "steps": [
            {
                "id": s.id,
                "template": s.template,
                "subject": s.subject,
                "preheader": s.preheader,
                "delay": draft_delay(i),
            }
            for i, s in enumerate(steps)
        ],
    }
    header = [
        f"# Draft series made from {source} by `python run.py new-series`.",
        f"# Sender, clinic, send window and limits were copied from {base_name}: `schedule",
        "# check` warns about each value listed under inherited: until you change it there.",
        f"# Edit the subjects below and the emails in {templates}/, then run:",
        f"#   python run.py --schedule {campaign_id}.yaml schedule check",
        f"#   python run.py --schedule {campaign_id}.yaml preview --serve",
        f"#   python run.py --schedule {campaign_id}.yaml simulate --leads 200 --weeks 8",
    ]
    header += [f"# Left out of the draft (not body text?): {line!r}" for line in article.ignored]
    dumped = yaml.dump(data, Dumper=_DraftDumper, sort_keys=False, allow_unicode=True, width=100)
    # A blank line before each setting and each step, as in a hand-written schedule.
    spaced = re.sub(r"\n(?=[a-z_]+:|- id: )", "\n\n", dumped)
    return "\n".join(header) + "\n\n" + spaced


def template_text(step: DraftStep) -> str:
    return f'{{% extends "{LAYOUT}" %}}\n{{% block body %}}\n{step.body}\n{{% endblock %}}\n'


@dataclass(frozen=True)
class Written:
    schedule: Path
    templates: Path
    steps: list[DraftStep]


def write_series(
    article_path: Path,
    campaign_id: str,
    out: Path,
    base_schedule: Path,
    *,
    steps: int = DEFAULT_STEPS,
    force: bool = False,
    article_url: str | None = None,
) -> Written:
    """Write `OUT/ID.yaml` and `OUT/templates/ID/`, then prove the draft loads and renders.

    Nothing is written if any of those files exists, unless `force`. Longer than most: the
    checks, the writing and the proof, in the order a marketer would do them by hand.
    """
    if not _ID.match(campaign_id):
        raise NewSeriesError(f"--id {campaign_id!r}: use lower-case letters, digits and dashes")
    base = load_schedule(base_schedule)
    layout = base.templates_dir / LAYOUT
    if not layout.is_file():
        raise NewSeriesError(f"{layout.name} not found beside the templates of {base_schedule}")
    article = read_article(article_path)
    if article_url is not None and not re.match(r"^https?://[^\s\"'<>]+$", article_url):
        raise NewSeriesError(f"--article-url {article_url!r}: give a full https:// address")
    drafted = draft_steps(article, base.schedule.clinic.name, steps, article_url)
    templates_dir = out / "templates" / campaign_id
    schedule_path = out / f"{campaign_id}.yaml"
    targets = [
        schedule_path,
        templates_dir / LAYOUT,
        *(templates_dir / step.template for step in drafted),
    ]
    existing = [str(path) for path in targets if path.exists()]
    if existing and not force:
        raise NewSeriesError("would overwrite " + ", ".join(existing) + " (use --force)")
    templates_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(layout, templates_dir / LAYOUT)
    for step in drafted:
        (templates_dir / step.template).write_text(template_text(step), encoding="utf-8")
    schedule_path.write_text(
        schedule_text(
            article,
            drafted,
            base.schedule,
            campaign_id,
            f"templates/{campaign_id}",
            article_path.name,
            base_schedule.name,
        ),
        encoding="utf-8",
    )
    Renderer(load_schedule(schedule_path)).compile_all()  # the draft must load and render
    return Written(schedule_path, templates_dir, drafted)
