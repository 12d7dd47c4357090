"""Drift measures against a compressed reference profile (issue 7).

The reference keeps 1,001 quantiles instead of the raw training values, so the KS statistic is
compared with scipy's two-sample test on the raw values: over 200 seeded normal cases
(1,500-20,000 reference points, 50-3,000 sample points, shifts up to 0.3 sd) the statistic
differed by at most 6.1e-4 and the p-value by at most 0.034. The p-value differs more than the
statistic because ``drift.ks`` uses the limiting Kolmogorov distribution while scipy's
``method="asymp"`` uses the finite-n one; the tolerances below hold that gap with some room.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from informerflow.monitoring import drift

STAT_TOL = 1e-3  # measured worst case 6.1e-4, see the module docstring
PVALUE_TOL = 0.04  # measured worst case 0.034


def _normal(seed: int, n: int, loc: float = 0.0, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(loc, scale, size=n)


# -- Kolmogorov-Smirnov -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_ref", "n_sample", "shift", "seed"),
    [(5000, 300, 0.0, 0), (2000, 500, 0.1, 1), (2000, 2000, 0.05, 2), (20000, 200, 0.0, 3)],
)
def test_ks_matches_scipy_on_raw_samples(n_ref: int, n_sample: int, shift: float,
                                         seed: int) -> None:
    reference = _normal(seed, n_ref)
    sample = _normal(seed + 1000, n_sample, loc=shift)
    stat, pvalue = drift.ks(drift.ColumnProfile.of(reference), sample)
    exact = stats.ks_2samp(reference, sample, method="asymp")
    assert stat == pytest.approx(exact.statistic, abs=STAT_TOL)
    assert pvalue == pytest.approx(exact.pvalue, abs=PVALUE_TOL)


def test_ks_of_a_clear_shift_matches_scipy_and_is_significant() -> None:
    reference = _normal(10, 5000)
    sample = _normal(11, 300, loc=0.3)
    stat, pvalue = drift.ks(drift.ColumnProfile.of(reference), sample)
    exact = stats.ks_2samp(reference, sample, method="asymp")
    assert stat == pytest.approx(exact.statistic, abs=STAT_TOL)
    assert stat > 0.1
    # Both p-values are tiny; the limiting distribution puts ours within a factor 2 of scipy's.
    assert pvalue < 1e-4 and exact.pvalue < 1e-4
    assert abs(math.log10(pvalue) - math.log10(exact.pvalue)) < 0.3


def test_ks_of_the_reference_against_itself_is_near_zero() -> None:
    values = _normal(5, 3000)
    stat, pvalue = drift.ks(drift.ColumnProfile.of(values), values)
    assert stat < STAT_TOL
    assert pvalue == pytest.approx(1.0)


def test_ks_of_identical_discrete_samples_is_zero() -> None:
    reference = np.array([0.0] * 500 + [1.0] * 500)
    sample = np.array([0.0] * 50 + [1.0] * 50)
    stat, _ = drift.ks(drift.ColumnProfile.of(reference), sample)
    assert stat == pytest.approx(stats.ks_2samp(reference, sample).statistic, abs=STAT_TOL)


# -- PSI --------------------------------------------------------------------------------------


def test_psi_of_a_sample_from_the_reference_distribution_is_near_zero() -> None:
    reference = drift.ColumnProfile.of(_normal(0, 5000))
    assert drift.psi(reference, _normal(100, 2000)) < 0.02  # measured 0.0057


def test_psi_of_a_shifted_sample_is_large() -> None:
    reference = drift.ColumnProfile.of(_normal(0, 5000))
    assert drift.psi(reference, _normal(100, 2000, loc=1.0)) > 0.5  # measured 0.96


def test_psi_equals_a_hand_computation_with_two_bins() -> None:
    # Quantiles 0..1000: the median edge is 500, so 500 of the 1001 quantiles fall below it.
    profile = drift.ColumnProfile(1001, 500.0, 1.0, [float(v) for v in range(1001)])
    expected = np.array([500 / 1001, 501 / 1001])
    actual = np.array([0.75, 0.25])  # three of the four values lie below 500
    hand = float(np.sum((actual - expected) * np.log(actual / expected)))
    assert drift.psi(profile, np.array([10.0, 20.0, 30.0, 600.0]), bins=2) == pytest.approx(
        hand, rel=1e-12)
    assert hand == pytest.approx(0.2757023, rel=1e-6)


def test_psi_floors_empty_bins_instead_of_going_infinite() -> None:
    # Deciles of 0..1000 have edges 100, 200, ... 900: every value below 100 is in bin 0.
    profile = drift.ColumnProfile(1001, 500.0, 1.0, [float(v) for v in range(1001)])
    expected = np.array([100 / 1001] * 9 + [101 / 1001])
    actual = np.array([1.0] + [1e-4] * 9)
    hand = float(np.sum((actual - expected) * np.log(actual / expected)))
    assert drift.psi(profile, np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(hand, rel=1e-12)
    assert math.isfinite(hand)


# -- measure ----------------------------------------------------------------------------------


def test_measure_gives_exact_level_and_spread_on_tiny_arrays() -> None:
    profile = drift.ColumnProfile.of(np.array([0.0, 2.0]))  # mean 1, std 1
    result = drift.measure(profile, np.array([2.0, np.nan, 6.0, np.inf]))  # mean 4, std 2
    assert result is not None
    assert result.n == 2
    assert result.mean_shift == 3.0
    assert result.std_ratio == 2.0
    assert result.as_dict()["mean_shift"] == 3.0


def test_measure_of_no_finite_value_is_none() -> None:
    profile = drift.ColumnProfile.of(np.array([0.0, 2.0]))
    assert drift.measure(profile, np.array([np.nan, -np.inf])) is None


def test_constant_reference_gives_nan_spread_and_a_finite_level() -> None:
    profile = drift.ColumnProfile.of(np.full(10, 5.0))
    assert profile.std == 0.0
    result = drift.measure(profile, np.array([5.0, 7.0]))
    assert result is not None
    assert math.isnan(result.std_ratio)
    assert result.mean_shift == 1.0  # no spread to scale by: the raw difference of means
    assert math.isfinite(result.psi) and math.isfinite(result.ks)


# -- the profile ------------------------------------------------------------------------------


def test_profile_ignores_non_finite_values() -> None:
    profile = drift.ColumnProfile.of(np.array([1.0, np.nan, 3.0, np.inf]))
    assert (profile.n, profile.mean, profile.std) == (2, 2.0, 1.0)
    assert len(profile.quantiles) == drift.N_QUANTILES
    assert profile.quantiles[0] == 1.0 and profile.quantiles[500] == 2.0
    assert profile.quantiles[-1] == 3.0


def test_profile_json_round_trips() -> None:
    values = np.column_stack([_normal(1, 50), np.arange(50.0)])
    profile = drift.build_profile(values, ["load", "step"])
    back = drift.profile_from_json(drift.profile_to_json(profile))
    assert back == profile
    assert list(back) == ["load", "step"]
    assert back["step"].mean == 24.5 and back["step"].n == 50
