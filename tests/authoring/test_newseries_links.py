"""What `new-series` drafts follows the shipped emails' link rules: every link shows words,
never an address (phishing filters flag an address shown over a link that goes elsewhere),
and the text part prints each address once."""

from __future__ import annotations

import re
from pathlib import Path

import lxml.html

from harness.cli import invoke_on
from harness.mail import URL
from harness.schedule import REPO, SHIPPED

ACUPUNCTURE = REPO / "content" / "acupuncture-back-pain.txt"
ADDRESS_LIKE = re.compile(r"(https?://|www\.|\b[\w-]+\.(com|org|net|example)\b)", re.I)


def test_drafted_links_show_words_and_print_each_address_once(tmp_path: Path) -> None:
    made = invoke_on(
        SHIPPED, None, "new-series", str(ACUPUNCTURE), "--id", "draft", "--out", str(tmp_path)
    )
    assert made.exit_code == 0, made.output
    out = tmp_path / "preview"
    previewed = invoke_on(
        tmp_path / "draft.yaml", None, "preview", "--out", str(out), "--no-spam-score"
    )
    assert previewed.exit_code == 0, previewed.output
    pages = sorted(out.glob("*.html"))
    drafts = [p for p in pages if p.name != "index.html"]
    assert drafts
    for page in drafts:
        doc = lxml.html.document_fromstring(page.read_text(encoding="utf-8"))
        for anchor in doc.iter("a"):
            words = " ".join(anchor.text_content().split())
            assert words and not ADDRESS_LIKE.search(words), (page.name, words)
        urls = URL.findall(page.with_suffix(".txt").read_text(encoding="utf-8"))
        urls = [u.rstrip(".,;:") for u in urls]
        assert len(urls) == len(set(urls)), (page.name, urls)
