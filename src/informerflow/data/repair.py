"""The repairs ingestion may make when the user's options ask for them.

Each function changes only the cells its policy covers: filling a gap adds rows and writes only
those; filling missing values writes only the cells that were empty; resolving duplicates
touches only rows that share a timestamp.
"""

from __future__ import annotations

import bisect
import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

POLICY_WORDS = {"interpolate": "time interpolation", "ffill": "carrying the last value forward"}


def rows_out_of_order(keys: np.ndarray) -> int:
    """The fewest rows that must move to put ``keys`` in non-decreasing order.

    That is ``len(keys)`` minus the longest non-decreasing subsequence: a single row moved from
    the end to the top counts as 1, not as every row that shifted by one place.
    """
    tails: list = []
    for key in keys.tolist():
        at = bisect.bisect_right(tails, key)
        if at == len(tails):
            tails.append(key)
        else:
            tails[at] = key
    return len(keys) - len(tails)


def merge_duplicates(
    group: pd.DataFrame, keys: list[str], value_cols: list[str], policy: str
) -> pd.DataFrame:
    """Keep one row per key: the file's last (``last``) or the mean of present values (``mean``).

    ``group`` must be sorted stably so that rows sharing a key stay in file order; the kept row is
    the last one, so its index (the data row) stays meaningful for later messages.
    """
    last = group.drop_duplicates(keys, keep="last")
    if policy == "last":
        return last
    out = last.copy()
    # A row without duplicates averages to itself exactly, so only duplicated rows change.
    means = group.groupby(keys, sort=False)[value_cols].transform("mean")
    out[value_cols] = means.loc[last.index]
    return out


def fill_cells(
    values: pd.Series, stamps: pd.DatetimeIndex, mask: np.ndarray, policy: str
) -> tuple[pd.Series, np.ndarray]:
    """Fill the cells in ``mask`` by ``policy``; return the result and the cells left unfilled.

    Time interpolation only fills between two known values (a leading or trailing run stays
    empty), and forward fill cannot fill before the first known value.
    """
    series = pd.Series(values.to_numpy(dtype=np.float64), index=stamps)
    if policy == "interpolate":
        filled = series.interpolate(method="time", limit_area="inside")
    else:
        filled = series.ffill()
    out = values.to_numpy(dtype=np.float64).copy()
    out[mask] = filled.to_numpy()[mask]
    return pd.Series(out, index=values.index, name=values.name), mask & np.isnan(out)


def fill_new_rows(
    frame: pd.DataFrame, new_stamps: pd.DatetimeIndex, value_cols: list[str], policy: str
) -> pd.DataFrame:
    """Insert rows at ``new_stamps`` into one series (indexed by stamp) and fill only them."""
    blank = pd.DataFrame(np.nan, index=new_stamps, columns=value_cols)
    merged = pd.concat([frame[value_cols], blank]).sort_index()
    if policy == "interpolate":
        filled = merged.interpolate(method="time", limit_area="inside")
    else:
        filled = merged.ffill()
    return filled.loc[new_stamps]
