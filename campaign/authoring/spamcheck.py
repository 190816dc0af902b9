"""SpamAssassin's verdict on an email, before any lead gets it.

Runs Debian's `spamassassin -L -t` (local tests only: no DNS blocklists, no network) on the
message bytes and reads back its report: the total score and each rule that matched. Rules
about how a message travelled (no relay, no DKIM/SPF for the test domain) say nothing about
what the engine writes, so `OUTSIDE_THE_ENGINE` names them; any other rule that matches is a
defect of the templates or of the engine.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

TIMEOUT = 120.0  # seconds for one message; perl and the rule set load in 1-3 s
WORKERS = 3

# Rules SpamAssassin may match that neither the templates nor the engine control.
OUTSIDE_THE_ENGINE: dict[str, str] = {
    # The message is scored as handed to the first SMTP server: nothing has relayed it yet.
    "NO_RECEIVED": "no Received headers before the first relay",
    "NO_RELAYS": "not relayed yet",
    # Informational (0 points): every email has an HTML part on purpose.
    "HTML_MESSAGE": "the email has an HTML part",
    # DKIM and SPF belong to the sending domain's DNS and the relay (`CAMPAIGN_DKIM_*`).
    "DKIM_SIGNED": "signed: informational",
    "DKIM_INVALID": "the test domain publishes no key",
    "DKIM_VALID": "informational",
    "DKIM_VALID_AU": "informational",
    "DKIM_VALID_EF": "informational",
    "SPF_NONE": "the test domain publishes no SPF record",
    "SPF_HELO_NONE": "the relay's name has no SPF record",
}

_DETAILS = re.compile(r"Content analysis details:\s+\((-?\d+(?:\.\d+)?) points")
_RULE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+([A-Z0-9_]+)\s")


@dataclass(frozen=True)
class Verdict:
    """What SpamAssassin said about one message."""

    score: float
    rules: dict[str, float]  # every rule that matched → its points

    @property
    def engine_rules(self) -> dict[str, float]:
        """The matched rules that the templates or the engine could avoid."""
        return {r: p for r, p in self.rules.items() if r not in OUTSIDE_THE_ENGINE}

    @property
    def engine_score(self) -> float:
        return round(sum(self.engine_rules.values()), 1)

    def summary(self) -> str:
        """`0.0` or `1.7 (FONT_INVIS_MSGID 1.0, HTML_FONT_LOW_CONTRAST 0.7)`."""
        counted = ", ".join(f"{r} {p:g}" for r, p in sorted(self.engine_rules.items()))
        return f"{self.engine_score:.1f}" + (f" ({counted})" if counted else "")


class SpamCheckError(Exception):
    """SpamAssassin ran but gave no report (a broken install or an unreadable message)."""


def available() -> str | None:
    """The `spamassassin` program, if installed (Debian: apt-get install spamassassin)."""
    return shutil.which("spamassassin")


def parse_report(output: str) -> Verdict:
    """The verdict from `spamassassin -t` output: its last "Content analysis details" table."""
    start = output.rfind("Content analysis details:")
    found = _DETAILS.match(output, start) if start >= 0 else None
    if found is None:
        raise SpamCheckError("spamassassin printed no report")
    rules: dict[str, float] = {}
    table = output[start:].split("\n\n", 2)[1] if "\n\n" in output[start:] else ""
    for line in table.splitlines():
        rule = _RULE.match(line)
        if rule:
            rules[rule[2]] = float(rule[1])
    return Verdict(float(found[1]), rules)


def check(message: bytes, program: str) -> Verdict:
    """One message's verdict from `spamassassin -L -t`: local tests only, nothing learnt."""
    try:
        done = subprocess.run(
            [program, "-L", "-t"], input=message, capture_output=True, timeout=TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise SpamCheckError(f"spamassassin took over {TIMEOUT:.0f} s") from None
    return parse_report(done.stdout.decode("utf-8", "replace"))


def check_all(messages: Sequence[bytes], program: str | None = None) -> list[Verdict]:
    """Each message's verdict, in order, a few at a time: most of the time goes into perl
    loading the rules, once per process."""
    program = program or available()
    if program is None:
        raise SpamCheckError("spamassassin is not installed")
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return list(pool.map(lambda message: check(message, program), messages))
