"""The operator's commands: `status`, the `web` service, the local `catcher` and the `demo`."""

from __future__ import annotations

import json
import signal
import threading
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import click
from rich.markup import escape
from rich.table import Table

from campaign.cli.app import AppContext, command, console, errors, log_to_stderr, main, open_store
from campaign.config import settings
from campaign.config.settings import SettingsError
from campaign.devtools.catcher import Catcher, CatchHandler, Caught
from campaign.devtools.demo import Delivered, run_demo
from campaign.model import utc_now
from campaign.monitoring.status import STATUS_COLUMNS, campaign_status
from campaign.sending.runner import Engine
from campaign.store import Store


@command(main, "status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(app: AppContext, as_json: bool) -> None:
    """Per step: sent, pending, failed, unknown, clicked, converted; and leads by status."""
    loaded = app.load()
    store = open_store(app)
    snapshot = campaign_status(store, loaded.schedule)
    if as_json:
        click.echo(json.dumps(snapshot, indent=2, default=str))
        return
    table = Table(title=f"{loaded.schedule.campaign.name} ({loaded.schedule.campaign.id})")
    table.add_column("step")
    for column in STATUS_COLUMNS:
        table.add_column(column, justify="right")
    for row in snapshot["steps"]:
        table.add_row(row["step"], *(str(row[c]) for c in STATUS_COLUMNS))
    console.print(table)
    console.print("leads: " + ", ".join(f"{k} {v}" for k, v in snapshot["leads"].items()))
    suppressed = snapshot["suppressed"]
    console.print(
        f"suppressed addresses: {sum(suppressed.values())}"
        + "".join(f", {reason} {count}" for reason, count in sorted(suppressed.items())),
        highlight=False,
    )
    inbound = snapshot["inbound"]
    console.print(
        f"inbound messages: {sum(inbound.values())}"
        + "".join(f", {kind} {count}" for kind, count in inbound.items()),
        highlight=False,
    )
    sender = snapshot["sender"]
    if sender["state"] != "ok":
        errors.print(
            f"[yellow]sender backing off[/]: the SMTP server failed {sender['failures']} "
            f"time(s) in a row since {sender['since']}; next try after {sender['until']}: "
            f"{escape(sender['reason'])}",
            highlight=False,
        )
    paused = snapshot["paused"]
    if paused["series_since"] is not None:
        since = datetime.fromisoformat(paused["series_since"])
        console.print(
            f"[yellow]series {snapshot['campaign']} is paused[/] since {since:%Y-%m-%d %H:%M}Z: "
            f"nothing is sent until `series resume {snapshot['campaign']}`",
            highlight=False,
        )
    if paused["leads"]:
        console.print(f"paused leads: {paused['leads']}", highlight=False)
    for item in snapshot["unknown"]:
        errors.print(
            f"[yellow]in doubt[/] delivery {item['id']} to {item['email']} "
            f"({item['step_id']}), claimed {item['claimed_at']}: not resent",
            highlight=False,
        )


@command(main, "catcher")
@click.option("--port", type=int, default=1025, show_default=True)
@click.option(
    "--maildir",
    type=click.Path(path_type=Path),
    default=Path("outbox"),
    show_default=True,
    help="Where accepted messages are stored (Maildir).",
)
def catcher_command(app: AppContext, port: int, maildir: Path) -> None:
    """A local SMTP server on 127.0.0.1 that keeps every message: try the engine safely."""

    def show(item: Caught) -> None:
        message = item.message
        console.print(
            f"{datetime.now():%H:%M:%S} to {', '.join(item.recipients)}: {message['Subject']}",
            highlight=False,
        )

    with Catcher(CatchHandler(maildir=maildir, on_message=show), port=port) as catcher:
        console.print(f"catching mail on 127.0.0.1:{catcher.port} into {maildir}/ (Ctrl-C to stop)")
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()


def local_time(item: Delivered) -> str:
    return item.at.astimezone(ZoneInfo(item.zone)).strftime("%a %d %b %H:%M %Z")


@command(main, "demo")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("demo-out"),
    show_default=True,
    help="Folder for the demo database and the caught emails.",
)
def demo(app: AppContext, out: Path) -> None:
    """Replay the whole series for sample leads through real SMTP, in seconds."""
    app.renderer()
    table = Table(title="Every email, as the local SMTP catcher received it")
    for column in ("#", "sent (UTC)", "lead's local time", "to", "subject"):
        table.add_column(column)
    delivered = run_demo(app.schedule_path, out)
    for number, item in enumerate(delivered, 1):
        table.add_row(
            str(number), f"{item.at:%a %d %b %H:%M}", local_time(item), item.email, item.subject
        )
    console.print(table)
    console.print(
        f"{len(delivered)} emails delivered over real SMTP to a local catcher.\n"
        f"Open them: [bold]{out / 'emails'}/[/] (.eml files open in any mail app); "
        f"Maildir: {out / 'maildir'}; database: {out / 'demo.db'}.\n"
        "Next: python run.py preview, python run.py --help"
    )


@command(main, "web")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8080, show_default=True, help="Port to listen on.")
def web(app: AppContext, host: str, port: int) -> None:
    """Serve signups, unsubscribe, click and booking links (emails point at CAMPAIGN_BASE_URL),
    the providers' bounce and complaint webhooks, /healthz and /metrics."""
    from campaign.web.app import (  # only this command needs the web stack
        create_app,
        serve,
    )
    from campaign.webhooks import Webhooks

    app.renderer()
    settings.secret_key(required=True)  # before a new database is made for nothing
    store = open_store(app, create_missing=True)  # signups arrive here: it takes leads in
    engine = Engine.from_env(app.schedule_path, store)
    engine.renderer()  # compiled before the first request; later edits in the background
    token = settings.api_token()
    if not engine.signer.base_url.startswith("https://"):
        errors.print(
            f"[yellow]warning:[/] CAMPAIGN_BASE_URL is {engine.signer.base_url}; "
            "mailbox providers offer one-click unsubscribe only for https links",
            highlight=False,
        )
    if token is None:
        errors.print(
            "[yellow]warning:[/] CAMPAIGN_API_TOKEN is not set; POST /leads, "
            "POST /leads/EMAIL/converted and GET /metrics answer 503",
            highlight=False,
        )
    hooks = Webhooks(settings.webhook_settings())
    if hooks.settings.secret is None:
        errors.print(
            "[yellow]warning:[/] CAMPAIGN_WEBHOOK_SECRET is not set; POST /webhooks/... answer 503",
            highlight=False,
        )
    serve_metrics_apart(store, engine)
    log_to_stderr()
    web_app = create_app(
        store, engine.serving_renderer, engine.signer, token, utc_now, hooks, engine.renderer
    )
    serve(web_app, host, port)


def serve_metrics_apart(store: Store, engine: Engine) -> None:
    """With CAMPAIGN_METRICS_ADDRESS, /metrics without a token on that address too (a thread
    beside the web service), for a Prometheus on a private network."""
    from prometheus_client import start_http_server

    from campaign.monitoring.metrics import campaign_registry

    address = settings.metrics_address()
    if address is None:
        return
    host, port = address
    registry = campaign_registry(store, engine.serving_renderer, engine.renderer, utc_now)
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise SettingsError(
            f"{settings.METRICS_ADDRESS_VAR}={host}:{port}: cannot listen there ({exc.strerror})"
        ) from None
    note = "" if settings.is_loopback(host) else " (no token: keep this address private)"
    errors.print(f"metrics on http://{host}:{port}/metrics{note}", markup=False, highlight=False)
