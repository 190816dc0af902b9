"""The benchmark: how close the engine gets to the mail server's own limit, and how it scales.

    .venv/bin/python bench/run.py [--leads 20000] [--quick] [--no-postgres] [--markdown FILE]

Every measurement runs in a child process (bench/tasks.py) against one counting SMTP sink
in another process (bench/sink.py), on a SQLite file and on a throwaway PostgreSQL cluster
(tests/harness/postgres.py: initdb + pg_ctl in a temp folder). All tables of one run share the
machine's noise, so the ratios between them hold even where the absolute numbers do not.
Not part of the test suite: it takes minutes, and it measures, it does not assert.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import create_engine, text

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests"))  # the throwaway PostgreSQL cluster the tests use

from sink import Sink  # noqa: E402

from harness.postgres import PgCluster, find_bindir  # noqa: E402

CHILD_TIMEOUT = 3600
PROCESSES = 2  # the end-to-end runs also split the connections over this many workers
ZONES = ("America/Chicago", "Europe/Paris", "Asia/Tokyo", "")


@dataclass
class Report:
    """Tables as Markdown, printed as they are made and kept for --markdown."""

    parts: list[str] = field(default_factory=list)
    targets: list[list[str]] = field(default_factory=list)

    def target(self, goal: str, measured: str, met: bool) -> None:
        self.targets.append([goal, measured, "met" if met else "**not met**"])

    def table(self, title: str, header: list[str], rows: list[list[Any]], note: str = "") -> None:
        lines = [
            f"### {title}",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "|".join("---" for _ in header) + "|",
        ]
        lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
        if note:
            lines += ["", note]
        text = "\n".join(lines) + "\n"
        self.parts.append(text)
        print(text, flush=True)


def children(task: str, copies: int, /, **args: Any) -> list[dict[str, Any]]:
    """Run a task in `copies` fresh processes started together; return their JSON answers."""
    argv = [sys.executable, str(BENCH / "tasks.py"), task, json.dumps(args)]
    procs = [
        subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(copies)
    ]
    answers = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=CHILD_TIMEOUT)
            if proc.returncode != 0:
                raise RuntimeError(f"{task} failed:\n{err[-3000:]}")
            answers.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    return answers


def child(task: str, /, **args: Any) -> dict[str, Any]:
    return children(task, 1, **args)[0]


def send_workers(url: str, schedule: Path, sink: Sink, processes: int, connections: int) -> dict:
    """`processes` workers (each with `connections` SMTP connections) drain one database."""
    sink.reset()
    sink_cpu = sink.cpu()
    results = children(
        "send", processes, db=url, schedule=str(schedule), port=sink.port, connections=connections
    )
    return {
        "sink_cpu": sink.cpu() - sink_cpu,
        "sent": sum(r["sent"] for r in results),
        "per_worker": sorted(r["sent"] for r in results),
        "seconds": max(r["end"] for r in results) - min(r["start"] for r in results),
        "cpu": sum(r["cpu"] for r in results),
        "db_cpu": sum(r["db_cpu"] for r in results),
        "peak_mb": max(r["peak_mb"] for r in results),
        "received": sink.count(),
        "rows_sent": sent_rows(url),
    }


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {mem_kb / 1024 / 1024:.1f} GB RAM, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}; "
        f"load average at start {load[0]:.2f}"
    )


def bench_schedule(folder: Path) -> Path:
    """The shipped series with no rate limit and an always-open window: the engine's speed,
    not the clinic's sending policy, is what is measured."""
    shutil.copy(REPO / "schedules.yaml", folder / "schedules.yaml")
    shutil.copytree(REPO / "templates", folder / "templates")
    path = folder / "schedules.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["rate_limit"] = {"per_connection": 100}
    data["send_window"] = {
        "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "start": "00:00",
        "end": "24:00",
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


@dataclass
class Databases:
    """Fresh databases on demand: SQLite files in the work folder, PostgreSQL databases."""

    folder: Path
    cluster: PgCluster | None
    made: int = 0

    def kinds(self) -> list[str]:
        return ["sqlite", "postgresql"] if self.cluster else ["sqlite"]

    def fresh(self, kind: str) -> str:
        self.made += 1
        if kind == "postgresql":
            assert self.cluster is not None
            return self.cluster.database()
        return f"sqlite:///{self.folder / f'bench{self.made}.db'}"

    def drop(self, url: str) -> None:
        if url.startswith("postgresql") and self.cluster:
            self.cluster.drop(url)
        else:
            path = Path(url.removeprefix("sqlite:///"))
            for file in path.parent.glob(path.name + "*"):
                file.unlink()


@contextmanager
def databases(folder: Path, use_postgres: bool) -> Iterator[Databases]:
    bindir = find_bindir() if use_postgres else None
    if use_postgres and bindir is None:
        print("no PostgreSQL server binaries found: PostgreSQL rows are skipped\n")
    # Commits reach the OS but are not fsynced, like SQLite's synchronous=NORMAL in WAL mode.
    cluster = PgCluster.start(bindir, synchronous_commit="on") if bindir else None
    try:
        yield Databases(folder, cluster)
    finally:
        if cluster:
            cluster.stop()


def end_to_end(
    report: Report,
    dbs: Databases,
    schedule: Path,
    sink: Sink,
    leads: int,
    naive_count: int,
    connections: int,
) -> None:
    def seeded_send(kind: str, processes: int) -> dict[str, Any]:
        url = dbs.fresh(kind)
        child("seed", db=url, schedule=str(schedule), leads=leads)
        result = send_workers(url, schedule, sink, processes, connections // processes)
        dbs.drop(url)
        return result

    def measured(task: str, **args: Any) -> dict[str, Any]:
        """A task sending to the sink, with what the sink received and the CPU it spent."""
        sink.reset()
        sink_cpu = sink.cpu()
        result = child(task, schedule=str(schedule), port=sink.port, **args)
        result["received"] = sink.count()
        result["sink_cpu"] = sink.cpu() - sink_cpu
        return result

    def raw() -> dict[str, Any]:
        return measured("raw", connections=connections, count=leads)

    runs: list[tuple[str, dict[str, Any]]] = [("raw limit (before)", raw())]
    for kind in dbs.kinds():
        runs.append((f"engine, {kind}, 1 process × {connections}", seeded_send(kind, 1)))
        split = f"{PROCESSES} processes × {connections // PROCESSES}"
        runs.append((f"engine, {kind}, {split}", seeded_send(kind, PROCESSES)))
    runs.append(("raw limit (after)", raw()))
    runs.append(("naive baseline", measured("naive", count=naive_count)))
    rate = {name: r["sent"] / r["seconds"] for name, r in runs}
    limit = (rate["raw limit (before)"] + rate["raw limit (after)"]) / 2
    naive_rate = rate["naive baseline"]
    rows = []
    for name, r in runs:
        engine = name.startswith("engine")
        rows.append(
            [
                name,
                f"{r['sent']:,}",
                f"{r['received']:,}",
                f"{rate[name]:,.0f}",
                f"{1000 * r['cpu'] / r['sent']:.2f}",
                f"{1000 * r['db_cpu'] / r['sent']:.2f}" if r.get("db_cpu") else "",
                f"{1000 * r['sink_cpu'] / r['sent']:.2f}",
                f"{r['peak_mb']:.0f}",
                f"{rate[name] / naive_rate:.1f}×" if engine else "",
                f"{100 * rate[name] / limit:.0f} %" if engine else "",
            ]
        )
    report.table(
        f"End to end: {leads:,} emails due now → local SMTP sink, {connections} connections",
        [
            "run",
            "sent",
            "sink got",
            "msg/s",
            "CPU s / 1000",
            "DB server CPU s / 1000",
            "sink CPU s / 1000",
            "peak MB",
            "vs naive",
            "vs raw",
        ],
        rows,
        f"Raw limit for the ratios: mean of the two raw runs, {limit:,.0f} msg/s. The naive "
        f"baseline (per email: Jinja render, premailer, html2text, EmailMessage, a new SMTP "
        f"connection) ran {naive_count:,} emails on one connection. CPU is the sender "
        "process's own; the sink runs in another process and its CPU is counted apart.",
    )
    stages(report, dbs, schedule, leads, runs, connections)
    for kind in dbs.kinds():
        best = max((rate[name], name) for name, _ in runs if name.startswith(f"engine, {kind}"))
        report.target(
            f"end to end ≥ 10× naive ({kind}, {connections} connections)",
            f"{best[0] / naive_rate:.1f}× ({best[1]})",
            best[0] >= 10 * naive_rate,
        )
        report.target(
            f"end to end ≥ 80 % of raw ({kind}, {connections} connections)",
            f"{100 * best[0] / limit:.0f} % ({best[1]})",
            best[0] >= 0.8 * limit,
        )


def stages(
    report: Report,
    dbs: Databases,
    schedule: Path,
    leads: int,
    runs: list[tuple[str, dict[str, Any]]],
    connections: int,
) -> None:
    """Where a sent email's CPU goes, so that the distance to the raw limit has a reason."""
    url = dbs.fresh("sqlite")
    child("seed", db=url, schedule=str(schedule), leads=leads)
    parts = child("stages", db=url, schedule=str(schedule))
    dbs.drop(url)
    by_name = dict(runs)
    raw = by_name["raw limit (before)"]
    engine = by_name[f"engine, sqlite, 1 process × {connections}"]
    smtp = raw["cpu"] / raw["sent"]
    total = engine["cpu"] / engine["sent"]
    measured = parts["database"] + parts["rendering"] + smtp
    sink = raw["sink_cpu"] / raw["sent"]
    sink_at_engine_pace = engine["sink_cpu"] / engine["sent"]
    cores = os.cpu_count() or 1
    ceiling = cores / (total + sink_at_engine_pace)
    limit = sum(r["sent"] / r["seconds"] for name, r in runs if name.startswith("raw")) / 2
    rows = [
        ["the database: reserve 16 rows, then one commit per message", parts["database"]],
        ["rendering: personal fields, signed links, MIME bytes", parts["rendering"]],
        ["the SMTP client (smtplib), as in the raw limit", smtp],
        ["the rest: dispatching, planning the next step, threads", total - measured],
        [f"the engine in all (sqlite, 1 process × {connections})", total],
        ["the sink, per message at the raw limit's pace", sink],
        ["the sink, per message at the engine's pace", sink_at_engine_pace],
    ]
    report.table(
        f"Where a sent email's CPU goes (SQLite, {connections} connections)",
        ["stage", "CPU ms per email"],
        [[name, f"{1000 * seconds:.2f}"] for name, seconds in rows],
        "Each stage timed alone in a fresh process over the same leads; the SMTP client's "
        "share is the raw limit's CPU per email, and the rest is what the engine run cost "
        "beyond the three. The sink and the engine share the machine: at the raw limit the "
        f"sink alone keeps {sink * raw['sent'] / raw['seconds']:.1f} core busy, so "
        f"{cores} cores ÷ ({1000 * total:.2f} + {1000 * sink_at_engine_pace:.2f}) ms of CPU "
        f"per email caps this engine at {ceiling:,.0f} msg/s here, "
        f"{100 * ceiling / limit:.0f} % of the raw limit, however its work is scheduled; "
        f"one process runs its Python on one core at a time, at most {1 / total:,.0f} msg/s "
        f"({100 / total / limit:.0f} %).",
    )


def workers(report: Report, dbs: Databases, schedule: Path, sink: Sink, leads: int) -> None:
    """1 and 4 worker processes on one PostgreSQL database: duplicates and speed."""
    if dbs.cluster is None:
        return
    rows, speeds, duplicates = [], [], 0
    for count in (1, 4):
        url = dbs.fresh("postgresql")
        child("seed", db=url, schedule=str(schedule), leads=leads)
        r = send_workers(url, schedule, sink, count, 1)
        dbs.drop(url)
        rows.append(
            [
                count,
                f"{leads:,}",
                f"{r['received']:,}",
                f"{r['rows_sent']:,}",
                f"{r['received'] - r['rows_sent']:,}",
                " / ".join(str(n) for n in r["per_worker"]),
                f"{r['sent'] / r['seconds']:,.0f}",
            ]
        )
        speeds.append(r["sent"] / r["seconds"])
        duplicates += r["received"] - r["rows_sent"]
    report.target(
        "4 workers on PostgreSQL: zero duplicates, faster than 1",
        f"{duplicates} duplicates; {speeds[1] / speeds[0]:.1f}× the speed of 1 worker",
        duplicates == 0 and speeds[1] > speeds[0],
    )
    report.table(
        f"Worker processes sharing one PostgreSQL queue ({leads:,} due, 1 connection each)",
        [
            "workers",
            "due",
            "sink got",
            "rows sent",
            "duplicates",
            "sent per worker",
            "msg/s",
        ],
        rows,
        "Duplicates = messages the sink accepted beyond the rows marked sent. The workers "
        "are separate processes started together; the time runs from the first one's first "
        "claim to the last one's last record.",
    )


def sent_rows(url: str) -> int:
    """Deliveries marked sent, read straight from the database."""
    engine = create_engine(url)
    with engine.connect() as conn:
        count = conn.execute(text("SELECT count(*) FROM deliveries WHERE status = 'sent'"))
        value = int(count.scalar() or 0)
    engine.dispose()
    return value


def due_query(report: Report, dbs: Databases, schedule: Path, leads: int, samples: int) -> None:
    rows = []
    for kind in dbs.kinds():
        url = dbs.fresh(kind)
        r = child("due_query", db=url, schedule=str(schedule), leads=leads, samples=samples)
        dbs.drop(url)
        for name, label in (
            ("select", "find the next due delivery (SELECT)"),
            ("claim", "reserve 16 due + their leads and histories, start one; committed"),
            ("next_due", "next_due_at"),
            ("sent_last_hour", "rate-limit budget: sent in the last hour"),
        ):
            p50, p95 = r[name]
            rows.append([kind, label, f"{p50:.2f}", f"{p95:.2f}"])
        report.target(
            f"due query over {leads:,} leads < 50 ms ({kind})",
            f"claim p95 {r['claim'][1]:.2f} ms, SELECT p95 {r['select'][1]:.2f} ms",
            max(r["claim"][1], r["select"][1]) < 50,
        )
        rows.append(
            [
                kind,
                f"(generated {r['rows']:,} rows in {r['generate_s']:.0f} s; "
                f"{r['due_now']:,} due now)",
                "",
                "",
            ]
        )
    report.table(
        f"Due query with {leads:,} enrolled leads",
        ["database", "query", "median ms", "p95 ms"],
        rows,
        f"Each lead has one sent and one pending delivery; {samples} timed runs each.",
    )


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["email", "first_name", "timezone", "clinic_branch"])
        for n in range(rows):
            writer.writerow(
                [
                    f"person{n:07d}@example.com",
                    f"Person{n}",
                    ZONES[n % 4],
                    ("North", "South", "Zürich")[n % 3],
                ]
            )


def imports(report: Report, dbs: Databases, schedule: Path, rows: int) -> None:
    path = dbs.folder / "leads.csv"
    write_csv(path, rows)
    table = []
    for kind in dbs.kinds():
        url = dbs.fresh(kind)
        r = child("import", db=url, schedule=str(schedule), path=str(path))
        dbs.drop(url)
        if kind == "sqlite":
            report.target(
                f"{rows:,}-lead import < {10 * rows // 100_000} s on SQLite",
                f"{r['seconds']:.1f} s",
                r["seconds"] < 10 * rows / 100_000,
            )
        table.append(
            [
                kind,
                f"{r['imported']:,}",
                f"{r['seconds']:.1f}",
                f"{r['imported'] / r['seconds']:,.0f}",
                f"{r['peak_mb']:.0f}",
            ]
        )
    report.table(
        f"CSV import of {rows:,} leads (campaign.leads.import_csv)",
        ["database", "imported", "seconds", "leads/s", "peak MB"],
        table,
        "Every row is validated (email syntax, zone, attribute names) and enrolled "
        "with its first step planned.",
    )


def inbound(report: Report, dbs: Databases, schedule: Path, sink: Sink, count: int) -> None:
    """Mail that comes back, on one core: DSNs through the inbound processor, and provider
    webhook events through the web app, each marking its lead bounced."""
    url = dbs.fresh("sqlite")
    r = child("inbound", db=url, schedule=str(schedule), port=sink.port, count=count)
    dbs.drop(url)
    rows = []
    for way, kind in (
        ("DSN by mail (inbound receive, serve, poll)", "mail"),
        ("SendGrid bounce event (POST /webhooks/sendgrid)", "hook"),
    ):
        seconds, cpu = r[f"{kind}_seconds"], r[f"{kind}_cpu"]
        rows.append(
            [
                way,
                f"{count:,}",
                f"{seconds:.2f}",
                f"{cpu / count * 1000:.2f}",
                f"{count / cpu:,.0f}",
            ]
        )
    report.table(
        "Inbound processing, one core, SQLite (campaign.inbound, campaign.webhooks)",
        ["way in", "messages", "wall s", "CPU ms each", "per CPU second"],
        rows,
        "Each is parsed, classified, matched to its delivery by Message-ID, recorded once and "
        "applied (the lead bounced, its queue cancelled, the address suppressed) in one "
        "transaction. Per CPU second is what one core carries; the webhooks' wall time also "
        "holds the loopback HTTP round trip to a server in a thread of the same process.",
    )


def memory(
    report: Report,
    dbs: Databases,
    schedule: Path,
    sink: Sink,
    sizes: tuple[int, int],
    connections: int,
) -> None:
    rows, peaks = [], []
    for size in sizes:
        url = dbs.fresh("sqlite")
        child("seed", db=url, schedule=str(schedule), leads=size)
        r = child("send", db=url, schedule=str(schedule), port=sink.port, connections=connections)
        dbs.drop(url)
        peaks.append(r["peak_mb"])
        rows.append([f"{size:,}", f"{r['sent']:,}", f"{r['peak_mb']:.1f}"])
    report.target(
        f"peak memory for {sizes[1]:,} due within 1.2× of {sizes[0]:,}",
        f"{peaks[1] / peaks[0]:.2f}×",
        peaks[1] <= 1.2 * peaks[0],
    )
    report.table(
        "Memory while sending (SQLite, peak RSS of the sending process)",
        ["emails due", "sent", "peak MB"],
        rows,
        f"Ratio {sizes[1] // sizes[0]}× the emails: {peaks[1] / peaks[0]:.2f}× the "
        "memory (deliveries are reserved 16 at a time; nothing loads all leads).",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=20_000, help="end-to-end emails")
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument(
        "--connections",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[4],
        help="SMTP connections of the end-to-end runs; several (4,8) make a run each",
    )
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    args = parser.parse_args()
    quick = args.quick
    leads = 2_000 if quick else args.leads
    report = Report()
    header = f"Machine: {machine()}\n"
    print(header)
    with (
        tempfile.TemporaryDirectory(prefix="campaign-bench-") as tmp,
        databases(Path(tmp), not args.no_postgres) as dbs,
        Sink() as sink,
    ):
        schedule = bench_schedule(Path(tmp))
        for connections in args.connections:
            naive = 200 if quick else 1_000
            end_to_end(report, dbs, schedule, sink, leads, naive, connections)
        workers(report, dbs, schedule, sink, 1_000 if quick else 10_000)
        due_query(report, dbs, schedule, 50_000 if quick else 1_000_000, 50 if quick else 200)
        imports(report, dbs, schedule, 10_000 if quick else 100_000)
        inbound(report, dbs, schedule, sink, 500 if quick else 5_000)
        memory(
            report,
            dbs,
            schedule,
            sink,
            (1_000, 10_000) if quick else (10_000, 100_000),
            args.connections[0],
        )
    report.table("Targets", ["target", "measured", ""], report.targets)
    if args.markdown:
        args.markdown.write_text(header + "\n" + "\n".join(report.parts), encoding="utf-8")


if __name__ == "__main__":
    main()
