"""Dry-run previews: every step as HTML, text and .eml files, with an index in send order."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from campaign.pages import PAGES
from campaign.rendering.links import LinkSigner
from campaign.rendering.renderer import LeadView, RenderedEmail, Renderer

SAMPLE_LEAD = LeadView(email="alex@example.com", first_name="Alex")
PREVIEW_LEAD_ID = 0


@dataclass(frozen=True)
class PreviewStep:
    id: str
    number: int
    day: int
    subject: str
    preheader: str
    email: RenderedEmail


def preview_steps(
    renderer: Renderer, lead: LeadView, signer: LinkSigner, now: datetime | None = None
) -> list[PreviewStep]:
    """Render every step for one lead, with the nominal day each is sent (delays add up)."""
    now = now or datetime.now(UTC)
    campaign_id = renderer.schedule.campaign.id
    steps, elapsed = [], timedelta(0)
    for compiled in renderer.compile_all():
        step = compiled.step
        elapsed += step.delay
        links = signer.links(PREVIEW_LEAD_ID, campaign_id, step.id, track=False)
        email = renderer.render(step.id, lead, links, now=now + elapsed)
        steps.append(
            PreviewStep(
                step.id, compiled.number, elapsed.days, email.subject, step.preheader, email
            )
        )
    return steps


def write_preview(renderer: Renderer, out: Path, lead: LeadView, signer: LinkSigner) -> list[Path]:
    """Write STEP.html, STEP.txt and STEP.eml for each step, and index.html linking them."""
    out.mkdir(parents=True, exist_ok=True)
    steps = preview_steps(renderer, lead, signer)
    written = []
    for step in steps:
        for suffix, data in (
            ("html", step.email.html.encode()),
            ("txt", step.email.text.encode()),
            ("eml", step.email.message.as_bytes()),
        ):
            path = out / f"{step.id}.{suffix}"
            path.write_bytes(data)
            written.append(path)
    schedule = renderer.schedule
    index = PAGES.get_template("preview_index.html.j2").render(
        campaign=schedule.campaign,
        sender=schedule.sender.from_,
        lead_label=f"{lead.first_name or '(no name)'} <{lead.email}>",
        steps=steps,
    )
    (out / "index.html").write_text(index, encoding="utf-8")
    written.append(out / "index.html")
    return written
