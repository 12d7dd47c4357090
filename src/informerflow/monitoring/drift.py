"""Has the input moved away from what the model was trained on?

A model carries a *reference profile* of its training split (``reference.json`` beside its
weights): per input column, the count, mean, standard deviation and 1,001 evenly spaced quantiles.
Quantiles rather than the raw values keep the file small (~20 KB) whatever the data size, and
still pin the distribution down to 0.1% of its mass, which is finer than any test below resolves.

Recent values are compared with it four ways:

* **PSI** (population stability index) over the reference's ten deciles; by the usual reading
  < 0.1 is stable, 0.1-0.25 a moderate shift and > 0.25 a major one.
* **Kolmogorov-Smirnov**: the largest gap between the two distribution functions, with its
  asymptotic p-value. With thousands of points the p-value flags even harmless differences, so
  alerts use the statistic itself.
* **Level**: the shift in mean, in units of the reference's standard deviation.
* **Spread**: the ratio of standard deviations, recent over reference.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

N_QUANTILES = 1001
PSI_BINS = 10
# Empty bins would make PSI infinite; this floor is the usual small-count correction.
_PSI_FLOOR = 1e-4


@dataclass
class ColumnProfile:
    """The training distribution of one column."""

    n: int
    mean: float
    std: float
    quantiles: list[float]

    @classmethod
    def of(cls, values: np.ndarray) -> ColumnProfile:
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        qs = np.quantile(values, np.linspace(0.0, 1.0, N_QUANTILES))
        return cls(len(values), float(values.mean()), float(values.std()), qs.tolist())


def build_profile(values: np.ndarray, columns: list[str]) -> dict[str, ColumnProfile]:
    """Profiles of the columns of ``values`` (rows, columns)."""
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    return {name: ColumnProfile.of(values[:, i]) for i, name in enumerate(columns)}


def profile_to_json(profile: dict[str, ColumnProfile]) -> str:
    return json.dumps({name: asdict(p) for name, p in profile.items()})


def profile_from_json(text: str) -> dict[str, ColumnProfile]:
    return {name: ColumnProfile(**raw) for name, raw in json.loads(text).items()}


@dataclass
class Drift:
    """How far a sample is from a reference profile."""

    n: int
    psi: float
    ks: float
    ks_pvalue: float
    mean_shift: float  # (recent mean - reference mean) / reference std
    std_ratio: float  # recent std / reference std

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def psi(reference: ColumnProfile, sample: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population stability index of ``sample`` over the reference's ``bins`` quantile bins."""
    qs = np.asarray(reference.quantiles)
    inner = np.unique(qs[np.linspace(0, len(qs) - 1, bins + 1).round().astype(int)[1:-1]])
    expected = _bin_shares(qs, inner)
    actual = _bin_shares(np.asarray(sample, dtype=np.float64), inner)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def ks(reference: ColumnProfile, sample: np.ndarray) -> tuple[float, float]:
    """KS statistic of ``sample`` against the reference, and its asymptotic p-value."""
    sample = np.sort(np.asarray(sample, dtype=np.float64))
    qs = np.asarray(reference.quantiles)
    grid = np.concatenate([qs, sample])
    # Both distribution functions at every point and just below it: with repeated values
    # (quantised metrics) comparing one side's P(X <= v) with the other's P(X < v) would count
    # each repeated value's whole mass as a difference.
    stat = 0.0
    for side in ("right", "left"):
        ref_cdf = np.searchsorted(qs, grid, side=side) / len(qs)
        sample_cdf = np.searchsorted(sample, grid, side=side) / len(sample)
        stat = max(stat, float(np.max(np.abs(sample_cdf - ref_cdf))))
    n_eff = reference.n * len(sample) / (reference.n + len(sample))
    return stat, float(stats.kstwobign.sf(stat * math.sqrt(n_eff)))


def measure(reference: ColumnProfile, sample: np.ndarray) -> Drift | None:
    """Every drift figure of ``sample``; None when it holds no finite value."""
    sample = np.asarray(sample, dtype=np.float64)
    sample = sample[np.isfinite(sample)]
    if len(sample) == 0:
        return None
    stat, pvalue = ks(reference, sample)
    scale = reference.std if reference.std > 0 else 1.0
    return Drift(
        n=len(sample),
        psi=psi(reference, sample),
        ks=stat,
        ks_pvalue=pvalue,
        mean_shift=float((sample.mean() - reference.mean) / scale),
        std_ratio=float(sample.std() / scale) if reference.std > 0 else math.nan,
    )


def _bin_shares(values: np.ndarray, inner_edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(inner_edges, values, side="right"),
                         minlength=len(inner_edges) + 1)
    return np.maximum(counts / max(len(values), 1), _PSI_FLOOR)
