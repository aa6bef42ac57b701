"""analysis/stats.py against values computed by hand: permutation p-values, Welch and paired
intervals, Holm's correction."""

from __future__ import annotations

import math

import pytest
from scipy import stats as scipy_stats

from analysis.stats import compare, holm, paired_permutation_p, permutation_p, smallest_p


def test_exact_p_of_separated_seeds():
    """{1, 2, 3} vs {4, 5, 6}: difference -3. Of the C(6, 3) = 20 relabellings only the observed one
    and its mirror ({4, 5, 6} vs {1, 2, 3}) reach |difference| 3: p = 2/20."""
    result = compare([1, 2, 3], [4, 5, 6])
    assert result.difference == -3
    assert result.p == pytest.approx(2 / 20) and result.relabellings == 20 and result.exact
    assert result.test() == "exact, all 20 relabellings"


def test_ties_up_to_rounding_count_as_extreme():
    """{1.1, 2.2, 3.3} vs {4.4, 5.5, 6.6} is 1.1 x ({1, 2, 3} vs {4, 5, 6}): in floating point the
    mirror's |difference| falls short of the observed one by rounding only, and still counts: p = 2/20
    (1/20 without the tolerance)."""
    assert compare([1.1, 2.2, 3.3], [4.4, 5.5, 6.6]).p == pytest.approx(2 / 20)


def test_the_tie_tolerance_grows_with_the_values():
    """Near 10^6 (a count summed over many videos) rounding exceeds any fixed tolerance such as 1e-12:
    these arms are separated, so only the observed labelling and its mirror are extreme (2/20); an
    absolute tolerance of 1e-12 missed the mirror (1/20)."""
    a, b = [1000009.6, 1000007.2, 1000005.4], [1000022.4, 1000018.7999999999, 1000025.1]
    assert compare(a, b).p == pytest.approx(2 / 20)
    assert paired_permutation_p([x - y for x, y in zip(a, b)])[0] == pytest.approx(2 / 8)


def test_smallest_attainable_p():
    """5 vs 5 seeds: C(10, 5) = 252 relabellings, the observed one and its mirror: 2/252, reached by
    separated values. 3 vs 4: C(7, 3) = 35; {10, 11, 12} vs {0, 1, 2, 3} has |difference| 11 - 1.5 =
    9.5, its mirror {0, 1, 2} vs {3, 10, 11, 12} only |1 - 9| = 8: p = 1/35."""
    assert smallest_p(5, 5) == (2, 252)
    assert compare([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]).p == pytest.approx(2 / 252)
    assert smallest_p(3, 4) == (1, 35)
    assert compare([10, 11, 12], [0, 1, 2, 3]).p == pytest.approx(1 / 35)
    assert smallest_p(5, 5, paired=True) == (2, 32)


def test_random_relabellings_when_there_are_too_many():
    """Above the limit: `draws` random relabellings plus the observed one, from a fixed seed (the same
    p twice); {1, 2, 3} vs {4, 5, 6} has exact p 0.1, so 20 000 draws land within 0.1 +- 0.01 (the
    standard error is sqrt(0.1 x 0.9 / 20 000) = 0.002)."""
    p, count, exact = permutation_p([1.0, 2, 3], [4.0, 5, 6], limit=10, draws=20_000)
    assert not exact and count == 20_001 and abs(p - 0.1) < 0.01
    assert permutation_p([1.0, 2, 3], [4.0, 5, 6], limit=10, draws=20_000)[0] == p
    text = compare([1, 2, 3], [4, 5, 6], limit=10, draws=20_000).test()
    assert text == "20000 random relabellings (seed 0) + the observed"
    # paired, 2^5 = 32 sign flips > 10: exact p 2/32 = 0.0625, standard error of 20 000 draws 0.0017
    p, count, exact = paired_permutation_p([1.0] * 5, limit=10, draws=20_000)
    assert not exact and count == 20_001 and abs(p - 2 / 32) < 0.01


def test_welch_interval_by_hand():
    """a = {1, 2, 3, 4}: mean 2.5, s^2 = 5/3, s^2/n = 5/12. b = {2, 4, 9}: mean 5, s^2 = (9 + 1 + 16)/2
    = 13, s^2/n = 13/3. se^2 = 5/12 + 13/3 = 4.75. Welch-Satterthwaite df = 4.75^2 / ((5/12)^2 / 3 +
    (13/3)^2 / 2) = 22.5625 / (0.0578704 + 9.3888889) = 2.388385. Interval -2.5 +- t(0.975, df) x
    sqrt(4.75)."""
    df = 22.5625 / ((5 / 12) ** 2 / 3 + (13 / 3) ** 2 / 2)
    assert df == pytest.approx(2.388385, abs=1e-6)
    half = scipy_stats.t.ppf(0.975, df) * math.sqrt(4.75)
    result = compare([1, 2, 3, 4], [2, 4, 9])
    assert result.difference == pytest.approx(-2.5)
    assert (result.low, result.high) == pytest.approx((-2.5 - half, -2.5 + half))
    assert math.isnan(compare([1, 2], [3]).low)  # one seed: no interval


def test_paired_sign_flips_by_hand():
    """a = {5, 6, 7, 8}, b = {4, 4, 4, 9} by seed: differences d = (1, 2, 3, -1), mean 1.25, sum 5.
    Of the 2^4 = 16 sign flips, |sum| >= 5: all signs agreeing with |d| (sum 7) and the two with one
    size-1 entry flipped (sum 5), and their mirrors: 6, so p = 6/16. Interval: deviations from 1.25
    are -0.25, 0.75, 1.75, -2.25, squares sum 8.75, s = sqrt(8.75 / 3) = 1.707825, se = s / 2;
    1.25 +- t(0.975, 3) x se = 1.25 +- 3.182446 x 0.853913 = [-1.4675, 3.9675]."""
    result = compare([5, 6, 7, 8], [4, 4, 4, 9], paired=True)
    assert result.p == pytest.approx(6 / 16) and result.relabellings == 16 and result.paired
    assert result.difference == pytest.approx(1.25)
    assert (result.low, result.high) == pytest.approx((-1.4675, 3.9675), abs=1e-4)
    assert result.test() == "exact, all 16 sign flips"


def test_pairing_by_seed_sees_what_relabelling_cannot():
    """b = a - 1 on every seed of a widely spread a = {10, ..., 50}: all five differences are +1, so only
    all-plus and all-minus reach |mean| 1: paired p = 2/32. Unpaired, the shift of 1 is lost in the
    spread: relabelling {10, 20, 30, 40, 50} vs {9, 19, 29, 39, 49} counts, e.g., every labelling
    that swaps one tens value for its neighbour (|difference| = 1 again). The sums of the two halves
    differ by an odd number (the ten values sum to 295), so a labelling misses |difference| >= 1 only
    when they differ by 1 or 3: 42 of the 252 (counted by brute force), p = 210/252 = 5/6."""
    a = [10, 20, 30, 40, 50]
    b = [9, 19, 29, 39, 49]
    assert paired_permutation_p([1.0] * 5)[0] == pytest.approx(2 / 32)
    assert compare(a, b, paired=True).p == pytest.approx(2 / 32)
    assert compare(a, b).p == pytest.approx(210 / 252)
    with pytest.raises(ValueError, match="one value per seed"):
        compare([1, 2, 3], [1, 2], paired=True)


def test_holm_by_hand():
    """p = (0.01, 0.04, 0.03, 0.005), m = 4. Sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06,
    0.04 x 1 = 0.04 -> 0.06 (monotone). A NaN does not count: (0.5, NaN, 0.3) has m = 2: 0.3 x 2 = 0.6,
    0.5 x 1 = 0.5 -> 0.6."""
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = holm([0.5, float("nan"), 0.3])
    assert adjusted[0] == pytest.approx(0.6) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.6)
    assert holm([0.4, 0.9]) == pytest.approx([0.8, 0.9])  # 0.4 x 2 = 0.8; 0.9 x 1 -> max(0.8, 0.9)
