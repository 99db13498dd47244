"""The audit's paired test and multiple-comparison correction against scipy and hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from medexplain.metrics.significance import holm, wilcoxon_signed_rank


@pytest.mark.parametrize("n", [6, 12, 25, 40, 200])
def test_wilcoxon_equals_scipy_exact_and_approximate(n: int) -> None:
    rng = np.random.default_rng(n)
    first = rng.normal(0.3, 1.0, n)
    second = rng.normal(0.0, 1.0, n)
    ours = wilcoxon_signed_rank(first, second)
    method = "exact" if n <= 25 else "approx"
    expected = stats.wilcoxon(first, second, alternative="greater", zero_method="wilcox", correction=False,
                              method=method)  # fmt: skip
    assert ours.method == ("exact" if n <= 25 else "normal")
    assert ours.statistic == pytest.approx(expected.statistic)
    assert ours.p == pytest.approx(expected.pvalue, rel=1e-9)


def test_wilcoxon_with_ties_zeros_and_nans_equals_scipy() -> None:
    first = np.array([1, 2, 2, 3, 3, 3, 4, 0.5, 7, 1, np.nan, 2], dtype=float)
    second = np.array([0, 1, 1, 1, 3, 2, 1, 1.5, 1, 1, 0.0, np.nan], dtype=float)
    ours = wilcoxon_signed_rank(first, second)
    kept = ~(np.isnan(first) | np.isnan(second))
    expected = stats.wilcoxon(first[kept], second[kept], alternative="greater", zero_method="wilcox",
                              correction=False, method="approx")  # fmt: skip
    assert ours.method == "normal" and ours.n == 8  # two zero differences and two NaN pairs dropped; ties
    assert ours.p == pytest.approx(expected.pvalue, rel=1e-9)


def test_wilcoxon_hand_made_case() -> None:
    # differences +1, +2, +3, -4: W+ = 1 + 2 + 3 = 6, against the W+ of all 16 sign patterns of the ranks 1..4
    ours = wilcoxon_signed_rank([1, 2, 3, 0], [0, 0, 0, 4])
    patterns = [sum(r for r, s in zip((1, 2, 3, 4), signs, strict=True) if s) for signs in np.ndindex(2, 2, 2, 2)]
    assert ours.statistic == 6 and ours.p == pytest.approx(sum(w >= 6 for w in patterns) / 16)
    assert math.isnan(wilcoxon_signed_rank([1, 2], [1, 2]).p)  # no differences: no evidence either way


def test_holm_equals_its_definition() -> None:
    p = [0.01, 0.04, 0.03, float("nan"), 0.005]
    # sorted: 0.005 (x4), 0.01 (x3), 0.03 (x2), 0.04 (x1), monotone
    assert holm(p)[:3] == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(holm(p)[3])
    assert holm(p)[4] == pytest.approx(0.02) and holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
