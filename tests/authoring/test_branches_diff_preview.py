"""Conditional steps and subject tests, seen before they run: `run.py schedule diff` lists
the leads whose path or subject an edit changes, and `run.py preview` (files and the live
server) shows every subject of a subject test and each step's condition.

Leads are added with the real `leads add` / `leads import`, and step 1 goes out through the
real `send-due` to the harness's SMTP catcher, so the store holds what a running engine
leaves. Which subject a lead gets is worked out with the planner's own `choose_variant`.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import lxml.html
import pytest

from campaign.config.schedule import load_schedule
from campaign.devtools.catcher import free_port
from campaign.model import utc_now
from campaign.planner import choose_variant
from harness.cli import lines_of, start_run_py
from harness.clock import iso
from harness.db import dump_tables, read_rows
from harness.engine import Campaign
from harness.schedule import any_hour, edit_schedule
from harness.web import wait_listening

pytestmark = pytest.mark.slow  # `run.py` runs in subprocesses

SUBJECT_A = "Which kinds of back pain acupuncture can help"
SUBJECT_B = "Does acupuncture help your kind of back pain?"


def step_of(data: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(step for step in data["steps"] if step["id"] == step_id)


def subject_test(*weights: int) -> Callable[[dict[str, Any]], None]:
    """pain-types (step 2) as a subject test of A and B with these weights."""

    def change(data: dict[str, Any]) -> None:
        step_of(data, "pain-types")["subject"] = [
            {"subject": text, "weight": weight}
            for text, weight in zip((SUBJECT_A, SUBJECT_B), weights, strict=True)
        ]

    return change


def clicked_mechanisms(data: dict[str, Any]) -> None:
    step_of(data, "faqs")["if"] = {"clicked": "mechanisms"}


def gold_plan_only(data: dict[str, Any]) -> None:
    step_of(data, "mechanisms")["if"] = {"attribute": {"plan": "gold"}}


def edited_copy(campaign: Campaign, *changes: Callable[[dict[str, Any]], None]) -> Path:
    """The campaign's schedule copied beside it (so its templates resolve), then edited."""
    path = campaign.schedule_path.parent / "new.yaml"
    path.write_text(campaign.schedule_path.read_text(encoding="utf-8"), encoding="utf-8")
    for change in changes:
        edit_schedule(path, change)
    return path


def diff_lines(campaign: Campaign, new: Path, now: str) -> list[str]:
    """`schedule diff OLD NEW` on the campaign's database, which it must not change."""
    before = dump_tables(campaign.db_path)
    result = campaign.cli(
        "schedule", "diff", str(campaign.schedule_path), str(new), "--now", now, "--db"
    )
    assert dump_tables(campaign.db_path) == before, "schedule diff must not change the database"
    return lines_of(result.stdout)


def lead_lines(lines: list[str], kind_text: str) -> dict[str, str]:
    """email -> the line of each lead change that says `kind_text`."""
    found = {}
    for line in lines:
        text = line.strip()
        if "@example.com: " in text and kind_text in text:
            address = text.split(":", 1)[0]
            assert address not in found, f"{address} listed twice: {text}"
            found[address] = text
    return found


def lead_ids(campaign: Campaign) -> dict[str, int]:
    return {row["email"]: row["id"] for row in read_rows(campaign.db_path, "SELECT * FROM leads")}


def import_leads(campaign: Campaign, emails: list[str]) -> None:
    csv = campaign.schedule_path.parent / f"leads-{len(lead_ids(campaign))}.csv"
    csv.write_text("email,first_name\n" + "".join(f"{e},Lee\n" for e in emails), encoding="utf-8")
    campaign.cli("leads", "import", str(csv))


def test_adding_a_condition_lists_the_leads_still_to_get_the_step(campaign: Campaign) -> None:
    campaign.edit(any_hour)
    for address in ("ann@example.com", "bob@example.com"):
        campaign.cli("leads", "add", address, "--attr", "plan=silver")
    first_send = utc_now() + timedelta(minutes=1)
    campaign.send_due_cli(first_send)
    assert sorted(to for to, _ in campaign.received()) == ["ann@example.com", "bob@example.com"]
    campaign.cli("leads", "add", "cat@example.com", "--attr", "plan=gold")  # step 1 not yet sent
    new = edited_copy(campaign, clicked_mechanisms, gold_plan_only)

    lines = diff_lines(campaign, new, iso(first_send + timedelta(hours=1)))

    assert (
        "  condition mechanisms       added: now sent only if the lead's attribute plan=gold "
        "(was sent to every lead)"
    ) in lines
    assert (
        "  condition faqs             added: now sent only if the lead clicked step 1 "
        "(mechanisms) (was sent to every lead)"
    ) in lines
    assert "3 of 3 lead(s) in the series are affected" in lines
    assert any(line.startswith("path: the step's condition (if:) changed") for line in lines)
    faqs = lead_lines(lines, " faqs at ")
    assert set(faqs) == {"ann@example.com", "bob@example.com", "cat@example.com"}
    assert all(
        line.endswith("now sent only if the lead clicked step 1 (mechanisms) (was always sent)")
        for line in faqs.values()
    )
    # Ann and Bob already got step 1: its new condition changes nothing for them.
    mechanisms = lead_lines(lines, " mechanisms at ")
    assert list(mechanisms) == ["cat@example.com"]
    assert mechanisms["cat@example.com"].endswith(
        "now sent only if the lead's attribute plan=gold (was always sent)"
    )
    assert lead_lines(lines, "gets subject") == {}


def test_reweighting_a_subject_test_lists_exactly_the_leads_whose_subject_changes(
    campaign: Campaign,
) -> None:
    campaign.edit(any_hour)
    campaign.edit(subject_test(1, 1))
    got_it = [f"early{n}@example.com" for n in range(1, 9)]
    import_leads(campaign, got_it)
    start = utc_now()
    campaign.send_due_cli(start + timedelta(minutes=1))  # step 1
    campaign.send_due_cli(start + timedelta(days=8))  # step 2, the subject test
    tested = [to for to, subject in campaign.received() if subject in (SUBJECT_A, SUBJECT_B)]
    assert sorted(tested) == sorted(got_it)
    still_to_come = [f"late{n}@example.com" for n in range(1, 9)]
    import_leads(campaign, still_to_come)
    new = edited_copy(campaign, subject_test(1, 3))

    lines = diff_lines(campaign, new, iso(start + timedelta(days=8, hours=1)))

    assert (
        "  variant   pain-types       re-weighted: A 50%, B 50% -> A 25%, B 75% of the leads "
        "still to get it"
    ) in lines
    old_step = load_schedule(campaign.schedule_path).schedule.steps_by_id["pain-types"]
    new_step = load_schedule(new).schedule.steps_by_id["pain-types"]
    ids = lead_ids(campaign)

    def moves(address: str) -> bool:
        return choose_variant("acupuncture-back-pain", old_step, ids[address]) != choose_variant(
            "acupuncture-back-pain", new_step, ids[address]
        )

    expected = {address for address in still_to_come if moves(address)}
    listed = lead_lines(lines, "gets subject")
    assert set(listed) == expected
    assert expected and len(expected) < len(still_to_come), "the test needs both kinds of lead"
    # The early leads got step 2 with the subject their delivery recorded: never listed,
    # though re-weighting would have moved some of them.
    assert any(moves(address) for address in got_it)
    recorded = read_rows(
        campaign.db_path,
        "SELECT l.email, d.variant FROM deliveries d JOIN leads l ON l.id = d.lead_id "
        "WHERE d.step_id = 'pain-types' AND d.status = 'sent'",
    )
    assert {row["email"]: row["variant"] for row in recorded} == {
        address: choose_variant("acupuncture-back-pain", old_step, ids[address])
        for address in got_it
    }
    for address in expected:
        assert listed[address].endswith(
            f"gets subject B {SUBJECT_B!r} instead of A {SUBJECT_A!r}"
        ), listed[address]
    assert f"{len(expected)} of 16 lead(s) in the series are affected" in lines
    assert any(line.startswith("variant: these leads would now see another") for line in lines)


def preview_schedule(campaign: Campaign) -> None:
    campaign.edit(subject_test(1, 3))
    campaign.edit(clicked_mechanisms)


def test_preview_files_show_every_subject_and_the_condition(
    campaign: Campaign, tmp_path: Path
) -> None:
    preview_schedule(campaign)
    out = tmp_path / "out"
    campaign.cli("preview", "--out", str(out), "--no-spam-score")

    subjects = {}
    for name in ("pain-types.eml", "pain-types.B.eml"):
        message = email.message_from_bytes((out / name).read_bytes(), policy=email.policy.default)
        subjects[name] = str(message["Subject"])
    assert subjects == {"pain-types.eml": SUBJECT_A, "pain-types.B.eml": SUBJECT_B}
    assert (out / "pain-types.B.html").stat().st_size > 0
    assert (out / "pain-types.B.txt").stat().st_size > 0
    assert not (out / "mechanisms.B.eml").exists()
    doc = lxml.html.document_fromstring((out / "index.html").read_text(encoding="utf-8"))
    variants = [li.text_content().strip() for li in doc.find_class("variant")]
    assert variants == [
        f"A (weight 1, 25% of leads): {SUBJECT_A}",
        f"B (weight 3, 75% of leads): {SUBJECT_B}",
    ]
    assert "pain-types.B.eml" in doc.xpath("//a/@href")
    conditions = [span.text_content() for span in doc.find_class("if")]
    assert conditions == ["Sent only if the lead clicked step 1 (mechanisms); otherwise skipped."]

    check = campaign.cli("schedule", "check")
    assert (
        f"  step 2 (pain-types): subject test, A {SUBJECT_A!r} (25%), B {SUBJECT_B!r} (75%)"
    ) in lines_of(check.stdout)
    assert (
        "  step 4 (faqs): sent only if the lead clicked step 1 (mechanisms), otherwise skipped"
    ) in lines_of(check.stdout)


def test_live_preview_shows_every_subject(campaign: Campaign, tmp_path: Path) -> None:
    preview_schedule(campaign)
    port = free_port()
    process = start_run_py(
        "--schedule", str(campaign.schedule_path), "preview", "--serve", "--port", str(port),
        env={"CAMPAIGN_DB": f"sqlite:///{tmp_path / 'absent.db'}"},
        cwd=tmp_path,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_listening(process, base + "/")
        with httpx.Client(base_url=base, timeout=5) as client:
            page = client.get("/")
            assert page.status_code == 200
            doc = lxml.html.document_fromstring(page.text)
            section = doc.get_element_by_id("pain-types")
            shown = [s.text_content() for s in section.find_class("variant-subject")]
            assert shown == [SUBJECT_A, SUBJECT_B]
            frames = section.xpath(".//iframe[@class='desktop']/@src")
            assert frames == [
                "/email/pain-types.html?lead=sample-1&variant=A",
                "/email/pain-types.html?lead=sample-1&variant=B",
            ]
            faqs = doc.get_element_by_id("faqs").find_class("if")[0].text_content()
            assert faqs.startswith("Sent only if the lead clicked step 1 (mechanisms)")
            b_text = client.get("/email/pain-types.txt", params={"variant": "B"})
            assert b_text.status_code == 200 and "Hi Alex," in b_text.text
            missing = client.get("/email/pain-types.html", params={"variant": "C"})
            assert missing.status_code == 404 and "its subjects: A, B" in missing.text
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert not (tmp_path / "absent.db").exists(), "previewing must not create a database"
