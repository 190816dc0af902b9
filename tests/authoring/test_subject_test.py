"""The subject test's verdict on its own: known numbers against statsmodels' own p-value, the
minimum number of sends, ties, zero clicks, a variant never sent, and (Hypothesis) that a
verdict never calls a difference significant unless p < 0.05."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st
from statsmodels.stats.proportion import proportions_ztest

from campaign.authoring.subject_test import (
    MIN_SENDS,
    REMOVED,
    Arm,
    Outcome,
    compare,
    judge,
    p_text,
)


def statsmodels_p(arm: Arm, baseline: Arm) -> float:
    return float(proportions_ztest([arm.hits, baseline.hits], [arm.sent, baseline.sent])[1])


def test_ahead_but_not_yet_significant() -> None:
    b, a = Arm(100, 12), Arm(100, 8)
    verdict = compare("B", b, a, "clicks")
    assert verdict.outcome is Outcome.NOT_SIGNIFICANT and not verdict.significant
    assert verdict.p_value == pytest.approx(statsmodels_p(b, a))
    assert verdict.p_value == pytest.approx(0.3458, abs=1e-4)  # the z-test by hand: z = 0.943
    assert verdict.text == (
        "B ahead of A on clicks (12.0 % vs 8.0 %), not yet significant at 95 % (p = 0.35)"
    )


def test_ahead_and_significant() -> None:
    b, a = Arm(300, 45), Arm(300, 21)
    verdict = compare("B", b, a, "clicks")
    assert verdict.significant
    assert verdict.p_value == pytest.approx(statsmodels_p(b, a))
    assert verdict.p_value == pytest.approx(0.00174, abs=1e-5)  # by hand: z = 3.131
    assert verdict.text == (
        "B ahead of A on clicks (15.0 % vs 7.0 %), significant at 95 % (p = 0.002)"
    )


def test_behind_on_bookings() -> None:
    verdict = compare("C", Arm(200, 2), Arm(200, 12), "bookings")
    assert verdict.significant
    assert verdict.text.startswith("C behind A on bookings (1.0 % vs 6.0 %), significant")


def test_the_minimum_number_of_sends() -> None:
    few = compare("B", Arm(MIN_SENDS - 1, 20), Arm(200, 2), "clicks")
    assert few.outcome is Outcome.TOO_FEW and few.p_value is None
    assert few.text == (
        f"B vs A on clicks: too few sends to judge (fewer than {MIN_SENDS} per variant)"
    )
    assert compare("B", Arm(200, 2), Arm(MIN_SENDS - 1, 20), "clicks").outcome is Outcome.TOO_FEW
    enough = compare("B", Arm(MIN_SENDS, 20), Arm(MIN_SENDS, 2), "clicks")
    assert enough.significant


@pytest.mark.parametrize(
    ("b", "a", "rate"),
    [
        (Arm(40, 4), Arm(40, 4), "10.0 %"),  # the same counts
        (Arm(40, 2), Arm(80, 4), "5.0 %"),  # the same rate from different counts
        (Arm(50, 0), Arm(60, 0), "0.0 %"),  # no clicks at all (the z-test would divide by 0)
        (Arm(35, 35), Arm(30, 30), "100.0 %"),  # every lead
    ],
)
def test_ties_are_no_difference(b: Arm, a: Arm, rate: str) -> None:
    verdict = compare("B", b, a, "clicks")
    assert verdict.outcome is Outcome.NO_DIFFERENCE and verdict.p_value is None
    assert verdict.text == f"B vs A on clicks: no difference yet ({rate} each)"


def test_zero_clicks_on_one_side() -> None:
    b, a = Arm(60, 0), Arm(60, 5)
    verdict = compare("B", b, a, "clicks")
    assert verdict.p_value == pytest.approx(statsmodels_p(b, a))
    assert verdict.text.startswith("B behind A on clicks (0.0 % vs 8.3 %), significant at 95 %")


@pytest.mark.parametrize(
    ("p", "text"),
    [
        (0.21, "p = 0.21"),
        (0.003, "p = 0.003"),
        (0.0004, "p < 0.001"),
        (0.0496, "p = 0.0496"),  # not "0.05": it is significant
        (0.0536, "p = 0.054"),  # not "0.05" either: it is not significant
        (0.0501, "p = 0.0501"),
        (0.05, "p = 0.05"),
        (0.0449, "p = 0.04"),
        (0.04999, "p = 0.04999"),
    ],
)
def test_p_values_stay_on_their_side_of_the_line(p: float, text: str) -> None:
    assert p_text(p) == text


@dataclass(frozen=True)
class Counted:
    sent: int
    clicked: int
    booked: int


SUBJECTS = ["How acupuncture eases back pain", "Why needles ease back pain"]


def test_a_variant_with_no_sends() -> None:
    results = judge(SUBJECTS, {0: Counted(40, 3, 0)})
    assert [(r.name, r.subject, r.sent, r.clicked) for r in results] == [
        ("A", SUBJECTS[0], 40, 3),
        ("B", SUBJECTS[1], 0, 0),
    ]
    assert results[0].clicks is None, "A is the baseline"
    assert results[1].clicks is not None and results[1].clicks.outcome is Outcome.TOO_FEW
    assert results[1].click_rate == 0.0
    assert results[1].bookings is None, "nobody booked: no booking verdict"


def test_bookings_are_judged_once_anyone_booked() -> None:
    results = judge(SUBJECTS, {0: Counted(40, 3, 0), 1: Counted(41, 6, 1)})
    b = results[1]
    assert b.booked == 1 and b.booking_rate == pytest.approx(1 / 41)
    assert b.bookings is not None and b.bookings.outcome is Outcome.NOT_SIGNIFICANT
    assert b.bookings.text.startswith("B ahead of A on bookings (2.4 % vs 0.0 %)")
    assert b.as_json()["bookings_vs_a"] == b.bookings.as_json()


def test_a_variant_since_removed_from_the_schedule_is_still_shown() -> None:
    results = judge(SUBJECTS, {0: Counted(40, 3, 0), 2: Counted(35, 1, 0)})
    assert [(r.name, r.subject, r.sent) for r in results] == [
        ("A", SUBJECTS[0], 40),
        ("B", SUBJECTS[1], 0),
        ("C", REMOVED, 35),
    ]


arms = st.integers(min_value=0, max_value=2000).flatmap(
    lambda sent: st.builds(Arm, st.just(sent), st.integers(min_value=0, max_value=sent))
)


@given(b=arms, a=arms)
def test_never_significant_unless_p_is_below_005(b: Arm, a: Arm) -> None:
    verdict = compare("B", b, a, "clicks")
    said_significant = ", significant at" in verdict.text
    assert said_significant == verdict.significant
    if verdict.significant:
        assert statsmodels_p(b, a) < 0.05
    elif verdict.outcome is Outcome.NOT_SIGNIFICANT:
        assert statsmodels_p(b, a) >= 0.05
        assert "not yet significant at 95 %" in verdict.text
    else:
        assert verdict.p_value is None and "significant" not in verdict.text
