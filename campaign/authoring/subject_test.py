"""Subject tests judged: each variant's click (and booking) rate against variant A's, by a
two-proportion z-test, said as a verdict a marketer can act on.

Each lead sent a variant either clicked or did not, independently of the other leads, so a
variant is a binomial sample and two of them are compared by the textbook two-proportion
z-test (statsmodels' `proportions_ztest`, pooled variance). The test is two-sided: a new
subject can as well do worse than the old one, and the verdict says which way it leans.
Pure: counts in, verdicts out.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from campaign.config.schedule import variant_name

# Below this many sends per variant no verdict is given. The z-test rests on the normal
# approximation to the binomial, which the usual rule of thumb trusts from about 30 per
# sample; below it one lead's click moves a rate by more than 3 points, and at the click
# rates of a drip series (a few %) a variant would have only one or two clicks.
MIN_SENDS = 30
ALPHA = 0.05  # significant: p below this (written out: 1 - 0.95 is not 0.05 in floating point)
CONFIDENCE_TEXT = f"{(1 - ALPHA) * 100:.0f} %"
REMOVED = "(no longer in the schedule)"


class Outcome(enum.StrEnum):
    """What the comparison of a variant with A came to."""

    TOO_FEW = "too few sends"  # a variant had fewer than MIN_SENDS: not tested
    NO_DIFFERENCE = "no difference"  # the same rate: nothing to test
    NOT_SIGNIFICANT = "not significant"  # tested, p >= ALPHA
    SIGNIFICANT = "significant"  # tested, p < ALPHA


@dataclass(frozen=True)
class Arm:
    """One variant's sample for one metric: the leads sent it, and those of them who acted."""

    sent: int
    hits: int

    @property
    def rate(self) -> float:
        return self.hits / self.sent if self.sent else 0.0


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    text: str
    p_value: float | None  # None when no test was run: too few sends, or the same rate

    @property
    def significant(self) -> bool:
        return self.outcome is Outcome.SIGNIFICANT

    def as_json(self) -> dict[str, object]:
        return {
            "outcome": self.outcome.value,
            "significant": self.significant,
            "p_value": self.p_value,
            "verdict": self.text,
        }


def percent(rate: float) -> str:
    return f"{rate * 100:.1f} %"


def p_text(p: float) -> str:
    """`p = 0.21`, `p = 0.003`: as few decimals as keep the number off the 95 % line, so it
    never prints as 0.05 unless it is 0.05: 0.0496 (significant) and 0.054 (not) say so."""
    if p < 0.001:
        return "p < 0.001"
    decimals = 2 if p >= 0.01 else 3
    while round(p, decimals) == ALPHA != p and decimals < 6:
        decimals += 1
    return f"p = {p:.{decimals}f}"


def compare(name: str, arm: Arm, baseline: Arm, metric: str) -> Verdict:
    """Variant `name` against A (`baseline`) on `metric` (`clicks`, `bookings`)."""
    if min(arm.sent, baseline.sent) < MIN_SENDS:
        return Verdict(
            Outcome.TOO_FEW,
            f"{name} vs A on {metric}: too few sends to judge (fewer than {MIN_SENDS} per variant)",
            None,
        )
    if arm.hits * baseline.sent == baseline.hits * arm.sent:
        return Verdict(
            Outcome.NO_DIFFERENCE,
            f"{name} vs A on {metric}: no difference yet ({percent(arm.rate)} each)",
            None,
        )
    # Imported here: statsmodels takes seconds to import, and every command loads this module.
    from statsmodels.stats.proportion import proportions_ztest

    _z, p_value = proportions_ztest([arm.hits, baseline.hits], [arm.sent, baseline.sent])
    p = float(p_value)
    side = "ahead of" if arm.rate > baseline.rate else "behind"
    rates = f"{percent(arm.rate)} vs {percent(baseline.rate)}"
    if p < ALPHA:
        outcome, said = Outcome.SIGNIFICANT, f"significant at {CONFIDENCE_TEXT}"
    else:
        outcome, said = Outcome.NOT_SIGNIFICANT, f"not yet significant at {CONFIDENCE_TEXT}"
    return Verdict(outcome, f"{name} {side} A on {metric} ({rates}), {said} ({p_text(p)})", p)


class Counts(Protocol):
    """One variant's numbers as the store counts them."""

    @property
    def sent(self) -> int: ...
    @property
    def clicked(self) -> int: ...
    @property
    def booked(self) -> int: ...


@dataclass(frozen=True)
class VariantResult:
    """One variant of a step's subject test: its numbers, and how it compares with A."""

    index: int
    subject: str
    sent: int
    clicked: int  # leads sent this variant who clicked a link in the email (people)
    booked: int  # leads sent this variant who booked afterwards
    clicks: Verdict | None  # against A; None for A itself
    bookings: Verdict | None  # against A; None for A, and while no lead has booked

    @property
    def name(self) -> str:
        return variant_name(self.index)

    @property
    def click_rate(self) -> float:
        return Arm(self.sent, self.clicked).rate

    @property
    def booking_rate(self) -> float:
        return Arm(self.sent, self.booked).rate

    def as_json(self) -> dict[str, object]:
        return {
            "variant": self.name,
            "subject": self.subject,
            "sent": self.sent,
            "clicked": self.clicked,
            "booked": self.booked,
            "click_rate": self.click_rate,
            "booking_rate": self.booking_rate,
            "clicks_vs_a": self.clicks.as_json() if self.clicks else None,
            "bookings_vs_a": self.bookings.as_json() if self.bookings else None,
        }


@dataclass(frozen=True)
class _Zero:
    sent: int = 0
    clicked: int = 0
    booked: int = 0


def judge(subjects: Sequence[str], counts: Mapping[int, Counts]) -> tuple[VariantResult, ...]:
    """Every variant of a step's subject test (the schedule's `subjects`, in order, then any
    the store still has after the list was shortened), each compared with A on clicks, and
    on bookings once any lead sent the step has booked."""
    last = max([len(subjects) - 1, *counts])
    numbers = [counts.get(index, _Zero()) for index in range(last + 1)]
    a = numbers[0]
    any_booked = any(n.booked for n in numbers)
    results = []
    for index, n in enumerate(numbers):
        name = variant_name(index)
        versus = index > 0
        results.append(
            VariantResult(
                index,
                subjects[index] if index < len(subjects) else REMOVED,
                n.sent,
                n.clicked,
                n.booked,
                compare(name, Arm(n.sent, n.clicked), Arm(a.sent, a.clicked), "clicks")
                if versus
                else None,
                compare(name, Arm(n.sent, n.booked), Arm(a.sent, a.booked), "bookings")
                if versus and any_booked
                else None,
            )
        )
    return tuple(results)
