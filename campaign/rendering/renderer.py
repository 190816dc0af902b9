"""Turning a step's template into an email, paying for the expensive parts once per step.

CSS inlining (premailer, ~8 ms) and the HTML-to-text conversion (~3 ms) cost more than the
SMTP hop, so a step is *compiled* once: its template is rendered with opaque placeholders
where personal values go, inlined and converted to text. Each lead then costs only a string
substitution. Lead values are inserted after Jinja has run, so they are data, never template
source (`{{ 7*7 }}` in a name prints literally), and they are HTML-escaped in the HTML part.
"""

from __future__ import annotations

import hashlib
import html
import logging
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime, getaddresses, parseaddr
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import jinja2
from markupsafe import Markup
from premailer import Premailer

from campaign.config.schedule import LoadedSchedule, Schedule, Step, setting_line, step_label
from campaign.model import Lead
from campaign.rendering import mime, template_errors
from campaign.rendering.dkim import DkimSigner
from campaign.rendering.mime import MimeMessage
from campaign.rendering.sandbox import Sandbox, TemplateLimits, include_loop, limited, stream
from campaign.rendering.sequence import neighbours
from campaign.rendering.text import html_to_text

BUILTIN_LEAD_FIELDS = ("email", "first_name", "timezone")
UNSUBSCRIBE = "links.unsubscribe"
CONFIRM = "links.confirm"
# Placeholders for a subject test's subject in a body: the step's own (`step.subject`) and
# another step's (a teaser's `next_step.subject`, followed by that step's id).
SUBJECT = "step.subject"
OTHER_SUBJECT = "subject:"
# Which of a step's subjects a lead gets (`planner.choose_variant` for a real lead).
VariantChoice = Callable[[Step], int]


def first_variant(_step: Step) -> int:
    """The first subject of every step: previews and samples, unless they ask for another."""
    return 0


_HREF = re.compile(r'href="(https?://[^"]+)"')


class TemplateProblem(Exception):
    """A template that cannot be rendered, with the file and line a marketer must open, the
    step it broke (`step 2 (pain-types)`) and the folder the file is in, for people."""

    def __init__(
        self, template: str, line: int | None, message: str, where: str = "", folder: str = ""
    ):
        self.template, self.line, self.message = template, line, message
        self.where, self.folder = where, folder
        path = f"{folder}/{template}" if folder else template
        place = f"{path}:{line}" if line else path
        super().__init__(f"{place}: {where}: {message}" if where else f"{place}: {message}")

    def each(self) -> list[TemplateProblem]:
        """The single problems this stands for."""
        return [self]

    def placed(self, where: str, folder: str) -> TemplateProblem:
        """The same problem naming its step and, for a template file, its folder."""
        return TemplateProblem(
            self.template, self.line, self.message, self.where or where, self.folder or folder
        )


class TemplateProblems(TemplateProblem):
    """Every template problem of a series at once, so the marketer fixes them in one pass;
    caught wherever one problem is, and reads as the list."""

    def __init__(self, problems: list[TemplateProblem]):
        first = problems[0]
        super().__init__(first.template, first.line, first.message, first.where, first.folder)
        self.problems = problems
        self.args = ("\n".join(str(problem) for problem in problems),)

    def __str__(self) -> str:
        return str(self.args[0])

    def each(self) -> list[TemplateProblem]:
        return list(self.problems)


@dataclass(frozen=True)
class LeadView:
    """What a template may know about a lead: its address, name, zone and extra attributes."""

    email: str
    first_name: str = ""
    timezone: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, lead: Lead) -> LeadView:
        """A stored lead as its emails see it: no time zone reads as an empty value."""
        return cls(lead.email, lead.first_name, lead.timezone or "", lead.attributes)

    def value(self, name: str) -> str:
        if name in BUILTIN_LEAD_FIELDS:
            return getattr(self, name) or ""
        return str(self.attributes.get(name, "") or "")


@dataclass(frozen=True)
class Links:
    """Where a lead's links point: straight to the target (previews) or through tracking."""

    unsubscribe: str
    click: Callable[[int, str], str] = staticmethod(lambda index, url: url)
    confirm: str = ""  # the double opt-in link; only the confirmation email has one


@dataclass(frozen=True)
class CompiledStep:
    """A step rendered for everyone at once: HTML and text with placeholders for each lead."""

    step: Step
    number: int
    total: int
    html: str
    text: str
    placeholders: tuple[str, ...]
    urls: tuple[str, ...]
    subjects: tuple[jinja2.Template, ...]  # one per variant of a subject test
    placeholder: re.Pattern[str]
    html_body: mime.Body  # the same HTML and text, quoted-printable encoded but for the
    text_body: mime.Body  # lines with placeholders
    # The placeholders standing for a subject test's subject (this step's or another's), so
    # a series without subject tests spends nothing per lead on them.
    subject_marks: tuple[str, ...] = ()

    def fill(self, values: Mapping[str, str], escape: bool) -> Callable[[re.Match[str]], str]:
        def replace(match: re.Match[str]) -> str:
            value = values[self.placeholders[int(match.group(1))]]
            return html.escape(value, quote=True) if escape else value

        return replace


@dataclass(frozen=True)
class RenderedEmail:
    """One lead's email. Sending needs only `message`; the HTML and text as strings (for
    previews) are filled in when first asked for, not for every email sent."""

    subject: str
    message: MimeMessage  # `message.as_bytes()` is exactly what SMTP carries
    variant: int  # which of the step's subjects (0 unless the step tests several)
    compiled: CompiledStep = field(repr=False)
    fill_html: Callable[[re.Match[str]], str] = field(repr=False)
    fill_text: Callable[[re.Match[str]], str] = field(repr=False)

    @cached_property
    def html(self) -> str:
        return self.compiled.placeholder.sub(self.fill_html, self.compiled.html)

    @cached_property
    def text(self) -> str:
        return self.compiled.placeholder.sub(self.fill_text, self.compiled.text)


def _utm(url: str, params: Mapping[str, str], step_id: str) -> str:
    if not params:
        return url
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update({k: v for k, v in params.items() if k not in query})
    query.setdefault("utm_content", step_id)
    return urlunsplit(parts._replace(query=urlencode(query)))


class _Fields:
    """Stands in for `lead` or `links` while compiling: each attribute prints a placeholder."""

    def __init__(self, prefix: str, names: tuple[str, ...], mint: Callable[[str], Markup]):
        self._prefix, self._names, self._mint = prefix, names, mint

    @property
    def field_names(self) -> tuple[str, ...]:
        """What a template may print here, for the "did you mean" of a misspelt field."""
        return self._names

    def __getattr__(self, name: str) -> Markup | jinja2.StrictUndefined:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._names:
            return jinja2.StrictUndefined(obj=self, name=name)
        return self._mint(f"{self._prefix}.{name}")

    def __bool__(self) -> bool:
        return True


def _template_line(exc: BaseException, templates_dir: Path) -> tuple[str | None, int | None]:
    """Jinja rewrites tracebacks so template frames carry the template's own file and line."""
    found: tuple[str | None, int | None] = (None, None)
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith(".j2") or filename.startswith(str(templates_dir)):
            found = (Path(filename).name, tb.tb_lineno)
        tb = tb.tb_next
    return found


def _templates_digest(templates_dir: Path) -> str:
    """A fingerprint of every template file, names and contents."""
    digest = hashlib.sha256()
    for path in sorted(templates_dir.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(templates_dir)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def series_version(loaded: LoadedSchedule) -> str:
    """The schedule file and every template as one short fingerprint: whoever keeps compiled
    steps (the sender, the web service, the live preview) rebuilds them when it changes."""
    both = loaded.source_digest + _templates_digest(loaded.templates_dir)
    return hashlib.sha256(both.encode()).hexdigest()[:16]


class _Placeholders:
    """Opaque markers standing for a lead's values while a step compiles. The token is new
    for each step, so no text a marketer writes can pass for one."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(4)
        self.names: list[str] = []

    def mint(self, name: str) -> Markup:
        if name not in self.names:
            self.names.append(name)
        return Markup(f"PH{self.token}x{self.names.index(name)}x")

    def pattern(self) -> re.Pattern[str]:
        return re.compile(rf"PH{self.token}x(\d+)x")


def _inline_css(body: str) -> str:
    """Styles moved into each element's `style`, since many mail programs drop `<style>`."""
    return Premailer(
        body,
        keep_style_tags=False,
        strip_important=False,
        disable_validation=True,
        allow_network=False,
        cssutils_logging_level=logging.CRITICAL,
    ).transform()


def _track_links(inlined: str, marks: _Placeholders) -> tuple[str, list[str]]:
    """Each distinct web link becomes a placeholder for the lead's own tracked link; the
    targets are returned in order, since a click token names a link by its number."""
    urls: list[str] = []

    def track(match: re.Match[str]) -> str:
        url = html.unescape(match.group(1))
        if url not in urls:
            urls.append(url)
        return f'href="{marks.mint(f"click.{urls.index(url)}")}"'

    return _HREF.sub(track, inlined), urls


def _require_parts(
    step: Step,
    confirmation: bool,
    postal_address: str,
    marks: _Placeholders,
    html_part: str,
    text_part: str,
) -> None:
    """Refuses a step whose HTML or text part leaves out what every email must carry, so a
    template edit stops at compile time rather than going out unlawful or useless."""
    unsubscribe = marks.mint(UNSUBSCRIBE)
    for part, content in (("HTML", html_part), ("text", text_part)):
        if unsubscribe not in content:
            raise TemplateProblem(
                step.template,
                None,
                f"the {part} part has no unsubscribe link "
                "({{ links.unsubscribe }}); every email must carry one",
            )
        if postal_address not in html.unescape(content):
            raise TemplateProblem(
                step.template,
                None,
                f"the {part} part does not show the clinic's postal address "
                "({{ clinic.postal_address }}); the law requires it",
            )
        if confirmation and marks.mint(CONFIRM) not in content:
            raise TemplateProblem(
                step.template,
                None,
                f"the {part} part has no confirmation link ({{{{ links.confirm }}}}); "
                "the double opt-in email exists to carry it",
            )


class Renderer:
    """Compiles each step of a schedule once and personalises it for any number of leads."""

    def __init__(
        self,
        loaded: LoadedSchedule,
        dkim: DkimSigner | None = None,
        *,
        limits: TemplateLimits = TemplateLimits(),
    ):
        self.loaded = loaded
        self.dkim = dkim  # signs every message when set (CAMPAIGN_DKIM_*)
        self.limits = limits
        self.schedule: Schedule = loaded.schedule
        self.templates_dir = loaded.templates_dir
        self.version = series_version(loaded)
        self.env = Sandbox(
            loader=jinja2.FileSystemLoader(self.templates_dir),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self._subject_env = Sandbox(autoescape=False, undefined=jinja2.StrictUndefined)
        self._compiled: dict[str, CompiledStep] = {}
        self._skeletons: dict[str, mime.Skeleton] = {}
        reply = getaddresses([self.schedule.sender.reply_to or self.schedule.sender.from_])[0][1]
        self._unsubscribe_mailto = f"<mailto:{reply}?subject=unsubscribe>"
        self._lead_fields = tuple(
            dict.fromkeys((*BUILTIN_LEAD_FIELDS, *self.schedule.personal_fields))
        )
        sender = parseaddr(self.schedule.sender.from_)[1]
        self.sender_domain = sender.rpartition("@")[2]
        self._clinic = self.schedule.clinic.model_dump()  # what subjects may name
        self._campaign = self.schedule.campaign.model_dump()

    # -- once per step ---------------------------------------------------------------------

    def compile(self, step_id: str) -> CompiledStep:
        if step_id not in self._compiled:
            self._compiled[step_id] = self._compile(step_id)
        return self._compiled[step_id]

    def compile_all(self) -> list[CompiledStep]:
        """The series' steps in order. The double opt-in email is compiled too (not returned),
        so a broken one stops `schedule check` and sending like a broken step does. Every
        step is tried even when one fails, and all their problems raised together (a
        problem in a file several steps share, the layout, is listed once)."""
        confirmation = self.schedule.confirmation
        compiled: list[CompiledStep] = []
        problems: dict[tuple[str, int | None, str], TemplateProblem] = {}
        for step in [*([confirmation] if confirmation else []), *self.schedule.steps]:
            try:
                compiled.append(self.compile(step.id))
            except TemplateProblem as exc:
                for problem in exc.each():
                    problems.setdefault((problem.template, problem.line, problem.message), problem)
        if problems:
            raise TemplateProblems(list(problems.values()))
        return compiled[1:] if confirmation else compiled

    def _find(self, step_id: str) -> tuple[int, Step]:
        """A step and its number in the series; the confirmation email is number 0."""
        confirmation = self.schedule.confirmation
        if confirmation is not None and step_id == confirmation.id:
            return 0, confirmation
        return next((i, s) for i, s in enumerate(self.schedule.steps, 1) if s.id == step_id)

    def _compile(self, step_id: str) -> CompiledStep:
        number, step = self._find(step_id)
        try:
            return self._compile_step(number, step)
        except TemplateProblem as exc:
            where = step_label(number, step.id) if number else "the confirmation email"
            folder = "" if exc.template == self.loaded.path.name else self.schedule.templates
            raise exc.placed(where, folder) from exc

    def _compile_step(self, number: int, step: Step) -> CompiledStep:
        marks = _Placeholders()
        body = self._render_template(step.template, self._context(step, number, marks))
        inlined, urls = _track_links(_inline_css(body), marks)
        text = html_to_text(inlined, {marks.mint(f"click.{i}"): url for i, url in enumerate(urls)})
        _require_parts(step, number == 0, self.schedule.clinic.postal_address, marks, inlined, text)
        subjects = tuple(self._subject_template(step, i) for i in range(len(step.subjects)))
        placeholder = marks.pattern()
        compiled = CompiledStep(
            step,
            number,
            len(self.schedule.steps),
            inlined,
            text,
            tuple(marks.names),
            tuple(urls),
            subjects,
            placeholder,
            mime.Body(inlined, placeholder),
            mime.Body(text, placeholder),
            tuple(n for n in marks.names if n == SUBJECT or n.startswith(OTHER_SUBJECT)),
        )
        # A subject naming an unknown field fails here, when the schedule is checked, not
        # later for each lead.
        sample = self.lead_values(LeadView(email="preview@example.com"))
        for variant in range(len(subjects)):
            self._render_subject(compiled, sample, variant)
        return compiled

    def _context(self, step: Step, number: int, marks: _Placeholders) -> dict[str, Any]:
        """What a step's template may name: the lead and its links stand for placeholders,
        everything else is the schedule's own values, the same for every lead."""
        schedule = self.schedule
        return {
            "lead": _Fields("lead", self._lead_fields, marks.mint),
            "links": {
                "booking": _utm(str(schedule.booking_url), schedule.utm, step.id),
                "unsubscribe": marks.mint(UNSUBSCRIBE),
                **({"confirm": marks.mint(CONFIRM)} if number == 0 else {}),
            },
            "clinic": schedule.clinic.model_dump(),
            "campaign": schedule.campaign.model_dump(),
            "step": {
                "id": step.id,
                # A subject test's subject is the lead's own variant, filled in per lead.
                "subject": self._own_subject(step, marks),
                "preheader": step.preheader,
                "number": number,
                "total": len(schedule.steps),
            },
            # The emails around this one, so teasers and recaps follow the schedule.
            **neighbours(schedule.steps, number, lambda other: self._subject_for(other, marks)),
        }

    def _own_subject(self, step: Step, marks: _Placeholders) -> str:
        if len(step.subjects) > 1:
            return marks.mint(SUBJECT)
        return step.first_subject

    def _subject_for(self, other: Step, marks: _Placeholders) -> str:
        """Another step's subject as a template prints it (a teaser, a recap), lead fields as
        placeholders like the rest of the body. A subject test's subject is a placeholder
        for the variant this lead gets (or got), so a teaser never names the other one."""
        if len(other.subjects) > 1:
            return marks.mint(f"{OTHER_SUBJECT}{other.id}")
        context = {
            "lead": _Fields("lead", self._lead_fields, marks.mint),
            "clinic": dict(self._clinic),
            "campaign": dict(self._campaign),
        }
        try:
            with limited(self.limits):
                text = self._subject_template(other).render(context)
        except jinja2.TemplateError:
            # Reported where it belongs, when `other` itself compiles; here it would hide
            # this step's own problems behind another step's.
            return other.first_subject
        return " ".join(text.split())

    def _subject_problem(
        self, step: Step, variant: int, exc: jinja2.TemplateError, context: dict[str, Any]
    ) -> TemplateProblem:
        """A subject that does not render, pointing at its line in the schedule file."""
        numbers = {s.id: n for n, s in enumerate(self.schedule.steps, 1)}
        number = numbers.get(step.id, 0)
        path: tuple[str | int, ...] = (
            ("steps", number - 1, "subject") if number else ("confirm", "subject")
        )
        if len(step.subjects) > 1:
            path = (*path, variant)
        source = step.subjects[variant].text
        message = exc.message or type(exc).__name__
        if isinstance(exc, jinja2.TemplateSyntaxError):
            message = template_errors.syntax(exc, source, self._subject_env)[1]
        elif isinstance(exc, jinja2.UndefinedError):
            message = template_errors.undefined(message, source, 1, context)
        return TemplateProblem(
            self.loaded.path.name,
            setting_line(self.loaded, path),
            f"the subject: {message}",
            step_label(number, step.id) if number else "the confirmation email",
        )

    def _subject_template(self, step: Step, variant: int = 0) -> jinja2.Template:
        """The subject is a template of its own, rendered per lead without HTML escaping."""
        try:
            return self._subject_env.from_string(step.subjects[variant].text)
        except jinja2.TemplateSyntaxError as exc:
            raise self._subject_problem(step, variant, exc, {}) from exc

    def _source(self, name: str) -> str:
        """A template's text, for the line an error points at; empty if it went away."""
        try:
            assert self.env.loader is not None
            return self.env.loader.get_source(self.env, name)[0]
        except (jinja2.TemplateNotFound, OSError):
            return ""

    def _render_template(self, name: str, context: dict[str, Any]) -> str:
        loop = include_loop(self.env, name)
        if loop:
            chain, at = loop
            raise TemplateProblem(
                name, at, "templates include or extend each other in a loop: " + " → ".join(chain)
            )
        problem: TemplateProblem | None = None
        try:
            with limited(self.limits):
                return stream(self.env.get_template(name), context, self.limits)
        except (MemoryError, OverflowError) as exc:  # a last resort: the limits come first
            file, line = _template_line(exc, self.templates_dir)
            problem = TemplateProblem(
                file or name, line, f"the template built a value too large ({type(exc).__name__})"
            )
        except jinja2.TemplateSyntaxError as exc:
            source = exc.source or self._source(exc.name or name)
            line, message = template_errors.syntax(exc, source, self.env)
            raise TemplateProblem(exc.name or name, line, message) from exc
        except jinja2.TemplateNotFound as exc:
            raise TemplateProblem(name, None, f"template {exc.name!r} not found") from exc
        except jinja2.UndefinedError as exc:
            file, line = _template_line(exc, self.templates_dir)
            source = self._source(file or name)
            message = template_errors.undefined(exc.message or "", source, line, context)
            raise TemplateProblem(file or name, line, message) from exc
        except jinja2.TemplateError as exc:
            file, line = _template_line(exc, self.templates_dir)
            raise TemplateProblem(file or name, line, exc.message or type(exc).__name__) from exc
        except RecursionError as exc:
            raise TemplateProblem(
                name, None, "templates include or extend each other in a loop"
            ) from exc
        assert problem is not None
        raise problem  # outside `except`, so the failed rendering's memory is let go

    # -- once per lead ---------------------------------------------------------------------

    def lead_values(self, lead: LeadView) -> dict[str, str]:
        fields = self.schedule.personal_fields
        values = {}
        for name in self._lead_fields:
            value = " ".join(lead.value(name).split())  # no CR/LF or tabs from lead data
            if not value and name in fields:
                value = fields[name].fallback
            values[f"lead.{name}"] = value
        return values

    def _render_subject(
        self, compiled: CompiledStep, lead_values: dict[str, str], variant: int = 0
    ) -> str:
        context = {
            "lead": {name.removeprefix("lead."): value for name, value in lead_values.items()},
            # Copies: a template in Jinja's sandbox may still change a dict it is given.
            "clinic": dict(self._clinic),
            "campaign": dict(self._campaign),
        }
        try:
            with limited(self.limits):
                subject = compiled.subjects[variant].render(context)
        except jinja2.TemplateError as exc:
            raise self._subject_problem(compiled.step, variant, exc, context) from exc
        return " ".join(subject.split())

    def render(
        self,
        step_id: str,
        lead: LeadView,
        links: Links,
        *,
        now: datetime,
        message_id: str | None = None,
        unsubscribe_mailto: str | None = None,
        variant: VariantChoice = first_variant,
    ) -> RenderedEmail:
        """One lead's email. `unsubscribe_mailto` is the address List-Unsubscribe's
        `mailto:` names: the delivery's own return path when the sender has one (made once
        per message by the dispatcher, which sends from it too), else the reply-to.
        `variant` says which subject of a step's subject test this lead gets."""
        compiled = self.compile(step_id)
        values = self.lead_values(lead)
        chosen = variant(compiled.step)
        subject = self._render_subject(compiled, values, chosen)
        if compiled.subject_marks:
            self._fill_subjects(compiled, values, subject, variant)
        values[UNSUBSCRIBE] = links.unsubscribe
        values[CONFIRM] = links.confirm
        for index, url in enumerate(compiled.urls):
            values[f"click.{index}"] = links.click(index, url)
        fill_html = compiled.fill(values, escape=True)
        fill_text = compiled.fill(values, escape=False)
        message = self._message(
            compiled,
            lead,
            subject,
            (compiled.html_body.encode(fill_html), compiled.text_body.encode(fill_text)),
            links,
            now,
            message_id,
            unsubscribe_mailto,
        )
        return RenderedEmail(subject, message, chosen, compiled, fill_html, fill_text)

    def _fill_subjects(
        self, compiled: CompiledStep, values: dict[str, str], own: str, variant: VariantChoice
    ) -> None:
        """The lead's own variant of each subject test the body names (its own subject, a
        teaser's, a recap's), from the lead's fields alone (`values` holds only those yet)."""
        lead_values = dict(values)
        for name in compiled.subject_marks:
            if name == SUBJECT:
                values[name] = own
            else:
                other = self.compile(name.removeprefix(OTHER_SUBJECT))
                values[name] = self._render_subject(other, lead_values, variant(other.step))

    def _message(
        self,
        compiled: CompiledStep,
        lead: LeadView,
        subject: str,
        bodies: tuple[bytes, bytes],
        links: Links,
        now: datetime,
        message_id: str | None,
        unsubscribe_to: str | None,
    ) -> MimeMessage:
        """Only the lead's own headers are encoded here; the rest is the step's skeleton."""
        mailto = (
            f"<mailto:{unsubscribe_to}?subject=unsubscribe>"
            if unsubscribe_to
            else self._unsubscribe_mailto
        )
        recipient = mime.wire_address(lead.email)  # SMTPUTF8 only for a non-ASCII local part
        utf8 = recipient.utf8
        headers = [
            mime.address("To", " ".join(lead.first_name.split()), recipient.address, utf8),
            mime.unstructured("Subject", subject, utf8),
            mime.token("Date", format_datetime(now)),
            mime.token(
                "Message-ID", message_id or f"<{secrets.token_hex(12)}@{self.sender_domain}>"
            ),
            mime.url_list("List-Unsubscribe", [f"<{links.unsubscribe}>", mailto]),
        ]
        if links.unsubscribe.startswith("https://"):
            headers.append(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
        html, text = bodies
        message = self._skeleton(compiled.step).message(headers, text, html, utf8)
        return message if self.dkim is None else self.dkim.sign(message, self.sender_domain)

    def _skeleton(self, step: Step) -> mime.Skeleton:
        """The step's constant headers, encoded once by the email package itself."""
        if step.id not in self._skeletons:
            schedule = self.schedule
            static = [("From", schedule.sender.from_)]
            if schedule.sender.reply_to:
                static.append(("Reply-To", schedule.sender.reply_to))
            static += [
                (
                    "List-Id",
                    f"{schedule.campaign.name} <{schedule.campaign.id}.{self.sender_domain}>",
                ),
                ("Feedback-ID", f"{step.id}:{schedule.campaign.id}"),
                ("X-Campaign-Step", f"{schedule.campaign.id}/{step.id}"),
            ]
            self._skeletons[step.id] = mime.Skeleton(static)
        return self._skeletons[step.id]
