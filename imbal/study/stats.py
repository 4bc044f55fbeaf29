"""Small statistics for `imbal report`: the 95% confidence interval of a mean over seeds, and a
paired t-test over seeds against the baseline (scipy's Student t distribution)."""

from __future__ import annotations

import math
import statistics


def _t_quantile(q: float, df: int) -> float:
    from scipy import stats  # a dependency already; imported only when a report needs it

    return float(stats.t.ppf(q, df))


def ci95(values: list[float]) -> float | None:
    """Half-width of the 95% confidence interval of the mean (Student t, n-1 degrees of
    freedom); None below two values."""
    n = len(values)
    if n < 2:
        return None
    return _t_quantile(0.975, n - 1) * statistics.stdev(values) / math.sqrt(n)


def paired_t(pairs: list[tuple[float, float]]) -> dict[str, float] | None:
    """Two-sided paired t-test of (value, baseline value) pairs, one per seed pair: n, the mean
    difference and p. None below two pairs. Identical differences: p is 0 (all differ the same
    way) or 1 (no difference)."""
    n = len(pairs)
    if n < 2:
        return None
    diffs = [a - b for a, b in pairs]
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    if sd == 0.0:
        return {"n": n, "mean_diff": mean, "p": 1.0 if mean == 0.0 else 0.0}
    from scipy import stats

    t = mean / (sd / math.sqrt(n))
    return {"n": n, "mean_diff": mean, "p": float(2.0 * stats.t.sf(abs(t), n - 1))}
