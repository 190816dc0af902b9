"""The marketer's commands that check and show a series: `schedule check`, `preview`,
`report` and `new-series` (the dry runs, `plan`, `simulate` and `schedule diff`, have their
own module)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from campaign.authoring import spamcheck
from campaign.authoring.preview import SAMPLE_LEAD, sent_only_if, variants_text, write_preview
from campaign.authoring.report import (
    CAME_BACK,
    METRICS,
    STAGES,
    Funnel,
    StepFunnel,
    build_funnel,
    render_html,
)
from campaign.authoring.subject_test import percent
from campaign.cli.app import (
    AppContext,
    command,
    console,
    errors,
    existing_store,
    main,
    progress_bar,
    store_if_any,
)
from campaign.config import settings
from campaign.config.schedule import Schedule, step_label
from campaign.model import utc_now
from campaign.rendering.links import LinkSigner
from campaign.rendering.renderer import LeadView


@main.group()
def schedule() -> None:
    """Check and compare schedule files."""


@command(schedule, "check")
@click.option("--strict", is_flag=True, help="Treat warnings as errors (exit 2), for CI.")
def schedule_check(app: AppContext, strict: bool) -> None:
    """Validate the schedule and render every step; exit 2 on any problem.

    Warnings (long subjects, missing preheaders, long emails, a "next week" the delays
    contradict, settings copied from another series) are printed and exit 0 unless --strict.
    """
    from campaign.authoring.checks import all_warnings

    renderer = app.renderer()
    sched = renderer.schedule
    warnings = all_warnings(renderer)
    for warning in warnings:
        label = "[bold red]error[/]" if strict else "[yellow]warning[/]"
        console.print(f"{label} {warning}", highlight=False, soft_wrap=True)
    if strict and warnings:
        errors.print(
            f"[bold red]{len(warnings)} warning(s), errors under --strict[/]", highlight=False
        )
        sys.exit(2)
    console.print(
        f"[green]ok[/] {app.schedule_path}: campaign [bold]{sched.campaign.id}[/], "
        f"{len(sched.steps)} steps, templates in {sched.templates}/"
        + (f", {len(warnings)} warning(s)" if warnings else "")
    )
    for line in branch_lines(sched):
        console.print(f"  {line}", markup=False, highlight=False)


def branch_lines(sched: Schedule) -> list[str]:
    """The steps not every lead gets alike: subject tests with each subject's share, and
    conditional steps with their condition in words."""
    lines = []
    for number, step in enumerate(sched.steps, 1):
        label = step_label(number, step.id)
        if len(step.subjects) > 1:
            lines.append(f"{label}: subject test, {variants_text(step)}")
        if step.condition is not None:
            lines.append(f"{label}: {sent_only_if(sched, step.condition)}, otherwise skipped")
    return lines


@command(main, "preview")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("preview"),
    show_default=True,
    help="Folder to write STEP.html, STEP.txt, STEP.eml (STEP.B.html… for the other subjects "
    "of a subject test) and index.html into.",
)
@click.option("--lead", "lead_email", default=None, help="Preview for this email address.")
@click.option("--name", default=None, help="Preview with this first name.")
@click.option(
    "--serve", is_flag=True, help="Serve a live preview on 127.0.0.1 instead of writing files."
)
@click.option("--port", type=int, default=8025, show_default=True, help="Port for --serve.")
@click.option(
    "--spam-score/--no-spam-score",
    default=True,
    show_default=True,
    help="Print SpamAssassin's score of each email (when installed; a few seconds).",
)
def preview(
    app: AppContext,
    out: Path,
    lead_email: str | None,
    name: str | None,
    serve: bool,
    port: int,
    spam_score: bool,
) -> None:
    """Write every step, rendered, to files (or --serve them). Nothing is sent."""
    if serve:
        serve_preview(app, port)
        return
    renderer = app.renderer()
    lead = LeadView(
        email=lead_email or SAMPLE_LEAD.email,
        first_name=SAMPLE_LEAD.first_name if name is None else name,
    )
    signer = LinkSigner(settings.base_url(), settings.secret_key(required=False))
    written = write_preview(renderer, out, lead, signer)
    console.print(f"wrote {len(written)} files; open [bold]{out / 'index.html'}[/]")
    if spam_score:
        print_spam_scores([path for path in written if path.suffix == ".eml"])


def print_spam_scores(emails: list[Path]) -> None:
    """SpamAssassin's score of each previewed email (local rules only), counting the rules
    the templates and the engine control; 0.0 is the aim. Skipped when it is not installed."""
    if spamcheck.available() is None:
        console.print(
            "spam scores: install SpamAssassin to see each email's "
            "(Debian: apt-get install spamassassin)",
            highlight=False,
        )
        return
    try:
        verdicts = spamcheck.check_all([path.read_bytes() for path in emails])
    except spamcheck.SpamCheckError as exc:
        errors.print(f"[yellow]spam scores unavailable:[/] {exc}", highlight=False)
        return
    console.print(
        "SpamAssassin, local tests (rules about relays, DKIM and SPF left out):", highlight=False
    )
    width = max(len(path.stem) for path in emails)
    for path, verdict in zip(emails, verdicts, strict=True):
        colour = "green" if verdict.engine_score == 0 and not verdict.engine_rules else "red"
        console.print(
            f"  {path.stem:<{width}}  spam score [{colour}]{verdict.summary()}[/]",
            highlight=False,
        )


def serve_preview(app: AppContext, port: int) -> None:
    """`preview --serve`: sample leads, plus the database's leads when there is one."""
    from campaign.authoring.preview_server import LivePreview, serve

    signer = LinkSigner(settings.base_url(), settings.secret_key(required=False))
    live = LivePreview(app.schedule_path, signer, store_if_any(app))
    console.print(
        f"live preview of {app.schedule_path} at [bold]http://127.0.0.1:{port}/[/] "
        "(Ctrl-C to stop)",
        highlight=False,
    )
    serve(live, "127.0.0.1", port)


@command(main, "report")
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the report as one self-contained HTML page.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def report_command(app: AppContext, html_path: Path | None, as_json: bool) -> None:
    """The funnel per step: sent, clicked (people), scanned (link scanners), unsubscribed,
    converted (people only), failed; and each subject test's variants against A."""
    loaded = app.load()
    store = existing_store(app, migrate=True)
    try:
        with progress_bar("reading the database", STAGES) as tick:
            funnel = build_funnel(store, loaded.schedule, utc_now(), tick)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(funnel.as_json(), indent=2))
    else:
        print_funnel(console, funnel)
    if html_path is not None:
        html_path.write_text(render_html(funnel), encoding="utf-8")
        console.print(f"wrote [bold]{html_path}[/]", highlight=False)


def print_funnel(console: Console, funnel: Funnel, bar_width: int = 30) -> None:
    """A rich table per step with a bar of emails sent (share of leads enrolled)."""
    table = Table(
        title=f"{funnel.name} ({funnel.campaign_id}): {funnel.enrolled} leads enrolled",
        title_justify="left",
    )
    table.add_column("#", justify="right")
    table.add_column("step")
    for metric in METRICS:
        table.add_column(metric, justify="right")
    table.add_column("click rate", justify="right")
    table.add_column("sent, of enrolled")
    scale = max([funnel.enrolled, *(s.sent for s in funnel.steps)]) or 1
    for step in funnel.steps:
        size = round(step.sent / scale * bar_width)
        bar = Text("█" * size, style="green").append("░" * (bar_width - size), style="dim")
        table.add_row(
            str(step.number or ""),
            step.step,
            *(str(getattr(step, m)) for m in METRICS),
            f"{step.click_rate:.0%}" if step.sent else "",
            bar,
        )
    table.add_section()
    table.add_row("", "total", *(str(funnel.total(m)) for m in METRICS), "", "")
    console.print(table)
    console.print(
        "came back by mail or webhook: "
        + ", ".join(f"{metric} {funnel.total(metric)}" for metric in CAME_BACK),
        highlight=False,
    )
    for step in funnel.steps:
        if step.variants:
            print_subject_test(console, step)


def print_subject_test(console: Console, step: StepFunnel) -> None:
    """A step's subject test in a table of its own, so the funnel keeps its width, then each
    variant's verdict against A."""
    table = Table(title=f"Subject test, step {step.number} ({step.step})", title_justify="left")
    table.add_column("variant")
    table.add_column("subject", overflow="fold")
    for name in ("sent", "clicked", "click rate", "booked", "booking rate"):
        table.add_column(name, justify="right")
    for variant in step.variants:
        table.add_row(
            variant.name,
            variant.subject,
            str(variant.sent),
            str(variant.clicked),
            percent(variant.click_rate) if variant.sent else "",
            str(variant.booked),
            percent(variant.booking_rate) if variant.sent else "",
        )
    console.print(table)
    for variant in step.variants:
        for verdict in (variant.clicks, variant.bookings):
            if verdict is not None:
                console.print(f"  {verdict.text}", highlight=False)


@command(main, "new-series")
@click.argument("article", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--id", "campaign_id", required=True, help="The new campaign's id (a-z, 0-9, -).")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where ID.yaml and templates/ID/ are written.",
)
@click.option(
    "--steps",
    type=click.IntRange(1, 20),
    default=4,
    show_default=True,
    help="How many content emails (a booking email follows).",
)
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
@click.option(
    "--article-url",
    default=None,
    help="The article's web address: each email keeps to ~350 words and links to the rest "
    "(without it, a long article is spread over more steps).",
)
def new_series(
    app: AppContext,
    article: Path,
    campaign_id: str,
    out: Path,
    steps: int,
    force: bool,
    article_url: str | None,
) -> None:
    """Draft a weekly series from an article (.txt, .md or .html), split at its headings.

    Sender, clinic and send window are copied from the schedule in use (--schedule).
    """
    from campaign.authoring.newseries import NewSeriesError, draft_delay, write_series

    try:
        written = write_series(
            article,
            campaign_id,
            out,
            app.schedule_path,
            steps=steps,
            force=force,
            article_url=article_url,
        )
    except NewSeriesError as exc:
        errors.print(f"[bold red]new-series:[/] {exc}", highlight=False)
        sys.exit(2)
    table = Table(title=f"Draft series {campaign_id}: {written.schedule}", title_justify="left")
    for column in ("#", "step", "delay", "subject"):
        table.add_column(column)
    for number, step in enumerate(written.steps, 1):
        table.add_row(str(number), step.id, draft_delay(number - 1), step.subject)
    console.print(table)
    console.print(
        f"templates in {written.templates}/. Next:\n"
        f"  python run.py --schedule {written.schedule} schedule check\n"
        f"  python run.py --schedule {written.schedule} preview --serve\n"
        f"  python run.py --schedule {written.schedule} simulate",
        highlight=False,
    )
