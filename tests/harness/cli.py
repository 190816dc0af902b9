"""Running the command line as a marketer or an operator does: `run.py` in a subprocess with
only environment variables set, or the click command in this process where a test needs many
quick runs rather than a process boundary. Either way, no `CAMPAIGN_` setting of the machine
running the tests leaks in."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from click.testing import CliRunner, Result

from campaign.cli import main
from harness.mail import BASE_URL, SIGNING_KEY
from harness.schedule import REPO

CLI_TIMEOUT = 60.0
RUN_PY = REPO / "run.py"


def cli_env(**extra: str) -> dict[str, str]:
    """This process's environment without its `CAMPAIGN_` settings, plus the tests' link
    signing and `extra`; wide columns keep tables on one line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMPAIGN_")}
    env.update(
        CAMPAIGN_SECRET_KEY=SIGNING_KEY,
        CAMPAIGN_BASE_URL=BASE_URL,
        COLUMNS="200",
        PYTHONPATH=str(REPO),
    )
    env.update(extra)
    return env


def run_py_argv(*args: str) -> list[str]:
    return [sys.executable, str(RUN_PY), *args]


def run_py(
    *args: str,
    env: Mapping[str, str] | None = None,
    expect: int | None = None,
    timeout: float = CLI_TIMEOUT,
    cwd: Path = REPO,
) -> subprocess.CompletedProcess[str]:
    """`run.py ARGS` to completion in a subprocess with `cli_env(**env)`. With `expect`, the
    exit code must be that and nothing may have crashed."""
    result = subprocess.run(
        run_py_argv(*args),
        cwd=cwd,
        env=cli_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if expect is not None:
        assert result.returncode == expect, (
            f"{' '.join(args)}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
        assert "Traceback" not in result.stderr, result.stderr
    return result


def start_run_py(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path = REPO,
    output: IO[Any] | int = subprocess.PIPE,
) -> subprocess.Popen[str]:
    """`run.py ARGS` started in a subprocess with `cli_env(**env)`; the test stops it. Both
    output streams go to `output` when given, else each to its own pipe."""
    return subprocess.Popen(
        run_py_argv(*args),
        cwd=cwd,
        env=cli_env(**(env or {})),
        text=True,
        stdout=output,
        stderr=output,
    )


def invoke(*args: str, env: Mapping[str, str | None] | None = None) -> Result:
    """`run.py ARGS` in this process; an unexpected exception fails the test with its
    traceback instead of becoming an exit code."""
    hidden: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CAMPAIGN_")}
    settings = {**hidden, "CAMPAIGN_SECRET_KEY": SIGNING_KEY, "CAMPAIGN_BASE_URL": BASE_URL}
    return CliRunner().invoke(
        main, list(args), env={**settings, **(env or {})}, catch_exceptions=False
    )


def invoke_on(schedule: Path, db: Path | None, *args: str) -> Result:
    """`run.py --schedule SCHEDULE [--db sqlite:///DB] ARGS` in this process."""
    options = ["--schedule", str(schedule)]
    if db is not None:
        options += ["--db", f"sqlite:///{db}"]
    return invoke(*options, *args)


def lines_of(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


def block(lines: Sequence[str], first: str, count: int) -> list[str]:
    """`count` lines starting at the one that starts with `first`."""
    starts = [i for i, line in enumerate(lines) if line.startswith(first)]
    assert starts, f"no line starts with {first!r} in:\n" + "\n".join(lines)
    return list(lines[starts[0] : starts[0] + count])
