"""`run.py new-series ARTICLE --id ID`: a draft series from an article, valid and previewable.

Checked on the clinic's plain-text article (headings guessed), on a Markdown article with a
different structure (`tests/marketer_article.md`: sub-headings, lists, a link, Jinja-looking
text) and on an HTML article.
"""

from __future__ import annotations

from pathlib import Path

import lxml.html
import pytest
import yaml

from campaign.authoring.newseries import group_sections, parse_text
from harness.cli import invoke_on
from harness.schedule import REPO, SHIPPED

ACUPUNCTURE = REPO / "content" / "acupuncture-back-pain.txt"
MARKDOWN = Path(__file__).parent / "marketer_article.md"
ACUPUNCTURE_SECTIONS = [
    "Understanding Acupuncture for Back Pain",
    "Mechanisms of Action",
    "Types of Back Pain Addressed by Acupuncture",
    "The Acupuncture Process",
    "Safety and Considerations",
    "Frequently Asked Questions",
    "Embrace the Healing Power of Acupuncture for a Pain-Free Back",
]
HTML_ARTICLE = """<!DOCTYPE html><html><head><title>Cupping, explained</title>
<style>p { color: red }</style><script>alert(1)</script></head><body>
<nav><a href="/">Home</a></nav>
<h1>Cupping, explained</h1>
<p>Cupping is an old technique with a <strong>modern</strong> following.</p>
<h2>What it is</h2><p>Glass or silicone cups create suction on the skin.</p>
<h2>What it feels like</h2><p>A firm pull, like a deep massage.</p>
<ul><li>Marks fade in a few days</li><li>Most sessions take 15 minutes</li></ul>
<h2>Who should not try it</h2><p>People on blood thinners, or with fragile skin.</p>
<footer>Copyright</footer></body></html>
"""


def make_series(article: Path, campaign_id: str, out: Path, *options: str) -> Path:
    result = invoke_on(
        SHIPPED, None, "new-series", str(article), "--id", campaign_id, "--out", str(out), *options
    )
    assert result.exit_code == 0, result.output
    path = out / f"{campaign_id}.yaml"
    assert path.is_file()
    return path


def check_and_preview(schedule: Path, out: Path) -> dict[str, str]:
    """`schedule check` passes and `preview` renders; returns each step's HTML by step id."""
    checked = invoke_on(schedule, None, "schedule", "check")
    assert checked.exit_code == 0, checked.output
    assert checked.stdout.splitlines()[-1].startswith("ok ")
    previewed = invoke_on(schedule, None, "preview", "--out", str(out), "--no-spam-score")
    assert previewed.exit_code == 0, previewed.output
    steps = yaml.safe_load(schedule.read_text(encoding="utf-8"))["steps"]
    return {s["id"]: (out / f"{s['id']}.html").read_text(encoding="utf-8") for s in steps}


def headings(page: str, tag: str) -> list[str]:
    doc = lxml.html.document_fromstring(page)
    return [" ".join(h.text_content().split()) for h in doc.iter(tag)]


def test_acupuncture_article_becomes_a_valid_weekly_series(tmp_path: Path) -> None:
    path = make_series(ACUPUNCTURE, "acupuncture-draft", tmp_path)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    steps = data["steps"]
    assert data["campaign"] == {
        "id": "acupuncture-draft",
        "name": "Is Acupuncture Good For Back Pain?",
    }
    assert data["templates"] == "templates/acupuncture-draft"
    assert [s["delay"] for s in steps] == ["0d", "7d", "7d", "7d", "7d"]
    assert steps[-1]["id"] == "booking" and "book" in steps[-1]["subject"].lower()
    assert steps[0]["subject"] == "Is Acupuncture Good For Back Pain?"
    # Subjects are headings, a long one shortened at a word to fit an inbox's 60 characters.
    assert [s["subject"] for s in steps[1:-1]] == [
        "Mechanisms of Action",
        "Safety and Considerations",
        "Embrace the Healing Power of Acupuncture for a Pain-Free…",
    ]
    # The clinic's settings come from the schedule in use; the UTM campaign is the new id.
    shipped = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    assert data["sender"] == shipped["sender"] and data["clinic"] == shipped["clinic"]
    assert data["send_window"] == shipped["send_window"]
    assert data["utm"]["utm_campaign"] == "acupuncture-draft"
    assert (tmp_path / "templates" / "acupuncture-draft" / "layout.html.j2").is_file()

    pages = check_and_preview(path, tmp_path / "preview")
    content = [pages[s["id"]] for s in steps[:-1]]
    # Every section of the article is in exactly one email, in order, as a heading.
    shown = [h for page in content for h in headings(page, "h1") + headings(page, "h2")]
    assert [h for h in shown if h in ACUPUNCTURE_SECTIONS] == ACUPUNCTURE_SECTIONS
    faq_page = next(
        page for page in content if "Frequently Asked Questions" in headings(page, "h2")
    )
    assert headings(faq_page, "h3") == [
        "Does acupuncture hurt?",
        "How many sessions are needed for back pain relief?",
        "Are there any side effects?",
    ]
    # `Label: text` paragraphs became a list with bold labels.
    mechanisms = next(page for page in content if "Mechanisms of Action" in headings(page, "h1"))
    items = lxml.html.document_fromstring(mechanisms).xpath("//li/strong/text()")
    assert {"Pain Modulation:", "Anti-Inflammatory Effects:", "Muscle Relaxation:"} <= set(items)
    assert "Hi Alex," in content[0]
    # The keyword line under the title is left out, and the draft says so.
    assert "acupunture for back pain" not in "".join(pages.values())
    assert "acupunture for back pain" in path.read_text(encoding="utf-8")
    # The booking email's recap is the schedule's list of earlier emails.
    booking = headings(pages["booking"], "li")
    assert [item.split(" – ")[0] for item in booking] == [s["subject"] for s in steps[:-1]]


def test_markdown_article_with_a_different_structure(tmp_path: Path) -> None:
    path = make_series(MARKDOWN, "neck-sleep", tmp_path, "--steps", "3")
    steps = yaml.safe_load(path.read_text(encoding="utf-8"))["steps"]
    assert len(steps) == 4  # three content emails and the booking email
    assert steps[0]["subject"] == "Sleeping Well With Neck Pain"
    pages = check_and_preview(path, tmp_path / "preview")
    everything = "".join(pages.values())
    sections = [
        "Why your neck hurts at night",
        "What you can change tonight",
        "Gentle stretches",
        "How acupuncture fits in",
        "When to see someone",
    ]
    shown = [h for page in pages.values() for h in headings(page, "h1") + headings(page, "h2")]
    assert [h for h in shown if h in sections] == sections
    # `###` sub-headings stay inside their section; lists, emphasis and links survive.
    first = pages[steps[0]["id"]]
    assert headings(first, "h3") == ["The pillow problem", "Stress and clenching"]
    assert "<em>position</em>" in first
    stretches = next(
        page
        for page in pages.values()
        if "Gentle stretches" in headings(page, "h1") + headings(page, "h2")
    )
    assert lxml.html.document_fromstring(stretches).xpath("//li/strong/text()")[:3] == [
        "Chin tucks:",
        "Shoulder rolls:",
        "Side bends:",
    ]
    assert "first-visit" in everything  # the article's link, now tracked like any other
    # Text that looks like Jinja is printed as text, never run.
    assert "{{ 7 * 7 }}" in everything and "{% raw %}" in everything
    assert "49" not in lxml.html.document_fromstring(everything).text_content()


def test_html_article(tmp_path: Path) -> None:
    article = tmp_path / "cupping.html"
    article.write_text(HTML_ARTICLE, encoding="utf-8")
    path = make_series(article, "cupping", tmp_path / "out", "--steps", "2")
    steps = yaml.safe_load(path.read_text(encoding="utf-8"))["steps"]
    # Sections of 21, 21 and 13 words: the even split is [intro + first], [second + third].
    assert [s["subject"] for s in steps[:-1]] == ["Cupping, explained", "What it feels like"]
    pages = check_and_preview(path, tmp_path / "preview")
    everything = "".join(pages.values())
    assert "Marks fade in a few days" in everything
    assert "alert(1)" not in everything and "Copyright" not in everything
    assert "color: red" not in everything


def test_never_overwrites_without_force(tmp_path: Path) -> None:
    path = make_series(MARKDOWN, "neck-sleep", tmp_path)
    template = next((tmp_path / "templates" / "neck-sleep").glob("neck-hurts-*.html.j2"))
    template.write_text(
        template.read_text(encoding="utf-8") + "<!-- edited -->\n", encoding="utf-8"
    )
    path.write_text(path.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    again = invoke_on(
        SHIPPED, None, "new-series", str(MARKDOWN), "--id", "neck-sleep", "--out", str(tmp_path)
    )
    assert again.exit_code == 2
    assert "would overwrite" in again.stderr and "--force" in again.stderr
    assert path.read_text(encoding="utf-8").endswith("# edited\n")
    assert template.read_text(encoding="utf-8").endswith("<!-- edited -->\n")
    forced = invoke_on(
        SHIPPED,
        None,
        "new-series",
        str(MARKDOWN),
        "--id",
        "neck-sleep",
        "--out",
        str(tmp_path),
        "--force",
    )
    assert forced.exit_code == 0, forced.output
    assert not path.read_text(encoding="utf-8").endswith("# edited\n")
    assert "<!-- edited -->" not in template.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        ("flat.md", "Just one paragraph of text, with no headings at all.\n", "no headings"),
        ("notes.docx", "# Title\n", "use a .txt, .md or .html"),
    ],
)
def test_unusable_articles_are_refused_clearly(
    tmp_path: Path, name: str, text: str, says: str
) -> None:
    article = tmp_path / name
    article.write_text(text, encoding="utf-8")
    result = invoke_on(
        SHIPPED, None, "new-series", str(article), "--id", "x", "--out", str(tmp_path / "out")
    )
    assert result.exit_code == 2
    assert says in result.stderr
    assert not (tmp_path / "out").exists()


def test_bad_id_is_refused(tmp_path: Path) -> None:
    result = invoke_on(
        SHIPPED, None, "new-series", str(MARKDOWN), "--id", "Bad Id", "--out", str(tmp_path)
    )
    assert result.exit_code == 2 and "--id" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_text_headings_are_guessed_from_the_acupuncture_article() -> None:
    article = parse_text(ACUPUNCTURE.read_text(encoding="utf-8"))
    assert article.title == "Is Acupuncture Good For Back Pain?"
    assert [s.title for s in article.sections] == ACUPUNCTURE_SECTIONS
    assert article.ignored == ["acupunture for back pain"]
    assert [b.kind for b in article.intro] == ["p", "p"]


def test_hard_wrapped_text_paragraphs_are_joined() -> None:
    text = (
        "Title Of The Piece\n\nFirst Heading\nThis paragraph is wrapped\nover two lines.\n\n"
        "Second Heading\n\nMore text here.\n"
    )
    article = parse_text(text)
    assert [s.title for s in article.sections] == ["First Heading", "Second Heading"]
    assert article.sections[0].blocks[0].parts == ("This paragraph is wrapped over two lines.",)


@pytest.mark.parametrize(
    ("weights", "groups", "runs"),
    [
        ([10, 10, 10, 10], 2, [(0, 2), (2, 4)]),
        ([30, 5, 5, 5, 5], 2, [(0, 1), (1, 5)]),
        ([5, 5, 30], 2, [(0, 2), (2, 3)]),
        ([7, 8], 4, [(0, 1), (1, 2)]),  # never more groups than sections
    ],
)
def test_sections_are_grouped_into_even_emails(
    weights: list[int], groups: int, runs: list[tuple[int, int]]
) -> None:
    assert group_sections(weights, groups) == runs
