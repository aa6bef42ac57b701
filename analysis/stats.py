"""Is a difference between two arms more than seed noise? Pure functions on per-seed values.

    compare(a, b)                 # a, b: (n_a,), (n_b,) one value per seed, same unit
    compare(a, b, paired=True)    # a[i], b[i] from the same seed
    holm([p1, p2, ...])           # several endpoints

- Interval: the difference of means with a 95 % Welch t interval (unequal variances,
  Welch-Satterthwaite degrees of freedom); paired: the mean per-seed difference with a t interval
  on n - 1 degrees of freedom.
- p-value: two-sided permutation test of the difference of means. Unpaired: relabel the pooled
  values into the two group sizes; paired: flip the sign of each per-seed difference. Every
  relabelling when there are at most `limit` of them (exact), else `draws` random ones from a
  generator seeded with `seed` plus the observed one. p = (relabellings with |difference| >=
  observed |difference| - tolerance) / all relabellings counted, the observed one included, so p > 0;
  the tolerance (`RELATIVE_TOLERANCE` x the largest |value|, at least 1) absorbs the rounding of sums
  taken in another order.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

LIMIT = 100_000  # relabellings enumerated in full up to this many
DRAWS = 100_000  # random relabellings above it
SEED = 0  # of the generator drawing them
RELATIVE_TOLERANCE = 1e-9  # a relabelling whose |difference| equals the observed one up to rounding counts
_CHUNK = 10_000  # relabellings evaluated at once (memory: _CHUNK x n values)


@dataclass(frozen=True)
class Comparison:
    """Arm a minus arm b: difference of means with its interval, and the permutation p-value."""

    difference: float
    low: float  # 95 % interval; NaN when an arm has fewer than 2 values
    high: float
    p: float
    relabellings: int  # how many relabellings p counts (the observed one included)
    exact: bool  # all relabellings (True) or random ones (False)
    paired: bool

    def test(self) -> str:
        """The test in words, e.g. 'exact, all 252 relabellings'."""
        kind = "sign flips" if self.paired else "relabellings"
        if self.exact:
            return f"exact, all {self.relabellings} {kind}"
        return f"{self.relabellings - 1} random {kind} (seed {SEED}) + the observed"


def welch_interval(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Welch's t interval of mean(a) - mean(b); NaN when an arm has fewer than 2 values."""
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan
    difference = a.mean() - b.mean()
    var_a, var_b = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(var_a + var_b)
    if se == 0:
        return difference, difference
    df = (var_a + var_b) ** 2 / (var_a**2 / (len(a) - 1) + var_b**2 / (len(b) - 1))
    half = scipy_stats.t.ppf(0.5 + level / 2, df) * se
    return difference - half, difference + half


def paired_interval(d: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """t interval (n - 1 degrees of freedom) of the mean of per-seed differences `d`, shape (n,)."""
    if len(d) < 2:
        return math.nan, math.nan
    se = d.std(ddof=1) / math.sqrt(len(d))
    if se == 0:
        return d.mean(), d.mean()
    half = scipy_stats.t.ppf(0.5 + level / 2, len(d) - 1) * se
    return d.mean() - half, d.mean() + half


def tolerance(values: np.ndarray) -> float:
    """How far apart two differences of means of `values` may be and still tie: rounding grows with
    the values' magnitude (AP in percent, ID switch counts in the hundreds)."""
    return RELATIVE_TOLERANCE * max(1.0, float(np.abs(values).max(initial=0.0)))


def _chunks(total: int):
    for start in range(0, total, _CHUNK):
        yield min(_CHUNK, total - start)


def permutation_p(
    a: Sequence[float], b: Sequence[float], limit: int = LIMIT, draws: int = DRAWS, seed: int = SEED
) -> tuple[float, int, bool]:
    """Two-sided permutation p of mean(a) - mean(b): (p, relabellings counted, exact)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    pooled = np.concatenate([a, b])
    n, n_a = len(pooled), len(a)
    observed = abs(a.mean() - b.mean()) - tolerance(pooled)
    total = pooled.sum()

    def extreme(sums_a: np.ndarray) -> int:  # sums_a: (k,) sum of arm a under k relabellings
        return int(np.count_nonzero(np.abs(sums_a / n_a - (total - sums_a) / (n - n_a)) >= observed))

    count = math.comb(n, n_a)
    if count <= limit:
        index = np.fromiter(
            itertools.chain.from_iterable(itertools.combinations(range(n), n_a)), int, count * n_a
        )
        return extreme(pooled[index.reshape(count, n_a)].sum(axis=1)) / count, count, True
    rng = np.random.default_rng(seed)
    hits = 1  # the observed labelling
    for size in _chunks(draws):
        order = np.argsort(rng.random((size, n)), axis=1)[:, :n_a]
        hits += extreme(pooled[order].sum(axis=1))
    return hits / (draws + 1), draws + 1, False


def paired_permutation_p(
    d: Sequence[float], limit: int = LIMIT, draws: int = DRAWS, seed: int = SEED
) -> tuple[float, int, bool]:
    """Two-sided sign-flip p of the mean of per-seed differences `d`, shape (n,): (p, flips, exact)."""
    d = np.asarray(d, dtype=float)
    n = len(d)
    observed = abs(d.mean()) - tolerance(d)

    def extreme(signs: np.ndarray) -> int:  # signs: (k, n) of +-1
        return int(np.count_nonzero(np.abs(signs @ d / n) >= observed))

    if 2**n <= limit:
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
        return extreme(signs) / 2**n, 2**n, True
    rng = np.random.default_rng(seed)
    hits = 1
    for size in _chunks(draws):
        hits += extreme(rng.choice([-1.0, 1.0], size=(size, n)))
    return hits / (draws + 1), draws + 1, False


def compare(
    a: Sequence[float], b: Sequence[float], paired: bool = False, limit: int = LIMIT, draws: int = DRAWS
) -> Comparison:
    """Arm a against arm b. `paired`: a[i] and b[i] come from the same seed (equal lengths)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if paired:
        if len(a) != len(b):
            raise ValueError(
                f"a paired comparison needs one value per seed in each arm, got {len(a)}, {len(b)}"
            )
        d = a - b
        p, count, exact = paired_permutation_p(d, limit, draws)
        return Comparison(float(d.mean()), *map(float, paired_interval(d)), p, count, exact, True)
    p, count, exact = permutation_p(a, b, limit, draws)
    interval = welch_interval(a, b)
    return Comparison(float(a.mean() - b.mean()), *map(float, interval), p, count, exact, False)


def smallest_p(n_a: int, n_b: int, paired: bool = False) -> tuple[int, int]:
    """The smallest exact two-sided p that n_a vs n_b seeds can reach, as (numerator, denominator):
    2 / C(n, n_a) for equal groups (the observed labelling and its mirror), 1 / C(n, n_a) otherwise;
    paired (n_a = n_b seeds): 2 / 2^n."""
    if paired:
        return 2, 2**n_a
    return (2 if n_a == n_b else 1), math.comb(n_a + n_b, n_a)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order: the i-th smallest of m becomes
    max over j <= i of min(1, (m - j + 1) p_(j)). NaN entries stay NaN and do not count in m."""
    p = np.asarray(pvalues, dtype=float)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = len(order)
    adjusted = np.full(len(p), np.nan)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()
