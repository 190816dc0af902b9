"""`preview --serve`: the series in a browser, re-rendered from disk on every request.

Marketers edit a template or `schedules.yaml` and reload, so each request compares the
digests of the schedule file and the templates folder with the last ones and rebuilds the
renderer only when they changed; the page also polls `/version` and reloads itself. A
broken schedule or template is shown on the page with its file and line, never as a stack
trace, and the server keeps running so the fix shows up at once.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from campaign.authoring.preview import SAMPLE_LEAD, PreviewStep, preview_steps
from campaign.config.schedule import ScheduleError, load_schedule
from campaign.pages import PAGES
from campaign.rendering.links import LinkSigner
from campaign.rendering.renderer import LeadView, Renderer, TemplateProblem, series_version
from campaign.store import Store

DESKTOP_WIDTH = 600
MOBILE_WIDTH = 375
STORE_LEADS = 20  # leads from the store offered in the picker
SAMPLES: tuple[tuple[str, str, LeadView], ...] = (
    ("sample-1", "Alex (sample)", SAMPLE_LEAD),
    ("sample-2", "no first name (shows the fallback)", LeadView(email="sam@example.com")),
    (
        "sample-3",
        "Zoë-Marie O'Neil (sample)",
        LeadView(email="zoe@example.com", first_name="Zoë-Marie O'Neil", timezone="Europe/Paris"),
    ),
)


@dataclass(frozen=True)
class Problem:
    """What to show instead of an email: where the mistake is and what it is."""

    where: str
    message: str


@dataclass(frozen=True)
class Rendered:
    version: str
    campaign: dict[str, str] = field(default_factory=dict)
    sender: str = ""
    steps: list[PreviewStep] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class PickerLead:
    key: str
    label: str
    view: LeadView


def template_problem(exc: TemplateProblem, templates: str) -> Problem:
    """`templates/emails/step.html.j2, line 12` — or the schedule file for a subject error."""
    path = exc.template
    if not path.endswith((".yaml", ".yml")):
        path = f"{templates}/{path}"
    message = f"{exc.where}: {exc.message}" if exc.where else exc.message
    return Problem(f"{path}, line {exc.line}" if exc.line else path, message)


class LivePreview:
    """The schedule and templates on disk, rendered for one lead at a time."""

    def __init__(
        self,
        schedule_path: Path,
        signer: LinkSigner,
        store: Store | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.schedule_path = schedule_path
        self.signer = signer
        self.store = store
        self.clock = clock
        self._lock = threading.Lock()  # requests run in a thread pool; compiling is not shared
        self._renderer: Renderer | None = None

    def _current(self) -> tuple[str, Renderer | None, list[Problem]]:
        """The renderer for the files as they are now, rebuilt only when a digest changed."""
        try:
            loaded = load_schedule(self.schedule_path)
        except ScheduleError as exc:
            raw = self.schedule_path.read_bytes() if self.schedule_path.is_file() else b""
            problems = [
                Problem(
                    f"{i.file}, line {i.line}" if i.line else i.file,
                    i.text,
                )
                for i in exc.issues
            ]
            return "invalid-" + hashlib.sha256(raw).hexdigest()[:16], None, problems
        version = series_version(loaded)
        if self._renderer is None or version != self._renderer.version:
            self._renderer = Renderer(loaded)
        return version, self._renderer, []

    def version(self) -> str:
        with self._lock:
            return self._current()[0]

    def render(self, lead: LeadView) -> Rendered:
        with self._lock:
            version, renderer, problems = self._current()
            if renderer is None:
                return Rendered(version, problems=problems)
            schedule = renderer.schedule
            header = (version, schedule.campaign.model_dump(), schedule.sender.from_)
            try:
                return Rendered(*header, preview_steps(renderer, lead, self.signer, self.clock()))
            except TemplateProblem as exc:
                found = [template_problem(one, schedule.templates) for one in exc.each()]
                return Rendered(*header, problems=found)

    def picker(self) -> list[PickerLead]:
        """Sample leads, then the first leads of the store (if there is one)."""
        found = [PickerLead(key, label, view) for key, label, view in SAMPLES]
        if self.store is None:
            return found
        for lead in self.store.reads.first_leads(STORE_LEADS):
            label = f"{lead.first_name} <{lead.email}>" if lead.first_name else lead.email
            found.append(PickerLead(f"lead-{lead.id}", label, LeadView.of(lead)))
        return found

    def lead(self, key: str | None) -> PickerLead:
        choices = self.picker()
        return next((c for c in choices if c.key == key), choices[0])


def create_app(preview: LivePreview) -> Starlette:
    pages = PAGES

    def index(request: Request) -> Response:
        chosen = preview.lead(request.query_params.get("lead"))
        rendered = preview.render(chosen.view)
        page = pages.get_template("preview_server.html.j2").render(
            rendered=rendered,
            leads=preview.picker(),
            chosen=chosen,
            desktop=DESKTOP_WIDTH,
            mobile=MOBILE_WIDTH,
        )
        return HTMLResponse(page, status_code=500 if rendered.problems else 200)

    def email(request: Request) -> Response:
        step_id, kind = request.path_params["step"], request.path_params["kind"]
        rendered = preview.render(preview.lead(request.query_params.get("lead")).view)
        if rendered.problems:
            text = "\n".join(f"{p.where}: {p.message}" for p in rendered.problems)
            return PlainTextResponse(text, status_code=500)
        step = next((s for s in rendered.steps if s.id == step_id), None)
        if step is None or kind not in ("html", "txt"):
            return PlainTextResponse(f"no step {step_id!r} in the schedule", status_code=404)
        variant = step.variant(request.query_params.get("variant"))
        if variant is None:
            names = ", ".join(v.name for v in step.variants if v.name) or "none: one subject"
            return PlainTextResponse(
                f"step {step_id!r} has no subject {request.query_params['variant']!r} "
                f"(its subjects: {names})",
                status_code=404,
            )
        if kind == "html":
            return HTMLResponse(variant.email.html)
        return PlainTextResponse(variant.email.text)

    def version(_request: Request) -> Response:
        return JSONResponse({"version": preview.version()}, headers={"Cache-Control": "no-store"})

    return Starlette(
        routes=[
            Route("/", index),
            Route("/email/{step}.{kind}", email),  # ?variant=B: a subject test's other subject
            Route("/version", version),
        ]
    )


def serve(preview: LivePreview, host: str, port: int) -> None:
    """Run until Ctrl-C; uvicorn handles the signals."""
    uvicorn.run(create_app(preview), host=host, port=port, log_level="warning")
