"""Dry-run previews: every step as HTML, text and .eml files, with an index in send order.

A subject test's step is rendered once per subject, so the marketer sees every variant a
lead may get (and any teaser or recap that names it), and a conditional step says when it
is sent."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from campaign.config.schedule import Condition, Schedule, Step, step_label, variant_name
from campaign.pages import PAGES
from campaign.rendering.links import LinkSigner
from campaign.rendering.renderer import LeadView, RenderedEmail, Renderer

SAMPLE_LEAD = LeadView(email="alex@example.com", first_name="Alex")
PREVIEW_LEAD_ID = 0


def step_labeller(schedule: Schedule) -> Callable[[str], str]:
    """A step id as a marketer counts it in this series (`step 1 (mechanisms)`)."""
    numbers = {step.id: number for number, step in enumerate(schedule.steps, 1)}
    return lambda step_id: step_label(numbers[step_id], step_id) if step_id in numbers else step_id


def sent_only_if(schedule: Schedule, condition: Condition) -> str:
    """A step's condition as a sentence: `sent only if the lead clicked step 1 (mechanisms)`."""
    whose = "the lead's" if condition.attribute is not None else "the lead"
    return f"sent only if {whose} {condition.describe(step_labeller(schedule))}"


def shares(step: Step) -> list[str]:
    """Each subject's share of the leads, in percent, as the index and the diff print it."""
    total = sum(variant.weight for variant in step.subjects)
    return [f"{variant.weight / total:.0%}" for variant in step.subjects]


def variants_text(step: Step) -> str:
    """A subject test in one line: `A 'How…' (50%), B 'Why…' (50%)`."""
    return ", ".join(
        f"{variant_name(i)} {v.text!r} ({share})"
        for i, (v, share) in enumerate(zip(step.subjects, shares(step), strict=True))
    )


@dataclass(frozen=True)
class PreviewVariant:
    """One subject of a step (the only one, or one of a subject test) and the email with it."""

    name: str  # "A", "B"…; "" for a step with one subject
    weight: int
    share: str  # "50%"
    email: RenderedEmail

    @property
    def subject(self) -> str:
        return self.email.subject

    def file_stem(self, step_id: str) -> str:
        """`pain-types` for the first subject, `pain-types.B` for the others; a step id has no
        dot, so no other step's files can be named the same."""
        return step_id if self.name in ("", "A") else f"{step_id}.{self.name}"


@dataclass(frozen=True)
class PreviewStep:
    id: str
    number: int
    day: int
    preheader: str
    variants: tuple[PreviewVariant, ...]
    condition: str  # "sent only if …", or "" for a step every lead gets

    @property
    def email(self) -> RenderedEmail:
        return self.variants[0].email

    @property
    def subject(self) -> str:
        return self.variants[0].subject

    @property
    def subject_test(self) -> bool:
        return len(self.variants) > 1

    def variant(self, name: str | None) -> PreviewVariant | None:
        """The variant called `name` (A, B…); the first when no name is given."""
        if not name:
            return self.variants[0]
        return next((v for v in self.variants if v.name == name.upper()), None)


def _only(step_id: str, index: int) -> Callable[[Step], int]:
    """Variant `index` of this step and the first subject of every other step it names."""
    return lambda step: index if step.id == step_id else 0


def preview_steps(
    renderer: Renderer, lead: LeadView, signer: LinkSigner, now: datetime | None = None
) -> list[PreviewStep]:
    """Render every step (each subject of a subject test) for one lead, with the nominal day
    each is sent (delays add up)."""
    now = now or datetime.now(UTC)
    schedule = renderer.schedule
    steps, elapsed = [], timedelta(0)
    for compiled in renderer.compile_all():
        step = compiled.step
        elapsed += step.delay
        links = signer.links(PREVIEW_LEAD_ID, schedule.campaign.id, step.id, track=False)
        several = len(step.subjects) > 1
        variants = tuple(
            PreviewVariant(
                variant_name(index) if several else "",
                subject.weight,
                share,
                renderer.render(
                    step.id, lead, links, now=now + elapsed, variant=_only(step.id, index)
                ),
            )
            for index, (subject, share) in enumerate(zip(step.subjects, shares(step), strict=True))
        )
        condition = sent_only_if(schedule, step.condition) if step.condition else ""
        steps.append(
            PreviewStep(step.id, compiled.number, elapsed.days, step.preheader, variants, condition)
        )
    return steps


def write_preview(renderer: Renderer, out: Path, lead: LeadView, signer: LinkSigner) -> list[Path]:
    """Write STEP.html, STEP.txt and STEP.eml for each step (STEP.B.html… for each further
    subject of a subject test), and index.html linking them."""
    out.mkdir(parents=True, exist_ok=True)
    steps = preview_steps(renderer, lead, signer)
    written = []
    for step in steps:
        for variant in step.variants:
            for suffix, data in (
                ("html", variant.email.html.encode()),
                ("txt", variant.email.text.encode()),
                ("eml", variant.email.message.as_bytes()),
            ):
                path = out / f"{variant.file_stem(step.id)}.{suffix}"
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
