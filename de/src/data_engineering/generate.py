"""A seeded, deterministic generator of the challenge's raw file layout.

Scale and distributions follow the real files (see shared/challenge-data/README.md), with one
deliberate difference: there the label is independent of every feature, so no model can
learn anything. Here the label is drawn from `true_probability` of the client's *current*
features, so a model has a known, imperfect signal to find, and the benchmark can compare it
with the best achievable ROC AUC.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

log = logging.getLogger(__name__)

START = date(2020, 1, 1)
STORES = ("New York", "Lisbon", "London", "Berlin", "Paris")
# Shares of the real January 2020 sales totals (New York 1107.1 ... Paris 419.5).
STORE_WEIGHTS = np.array([1107.1, 128.0, 186.1, 255.2, 419.5]) / 2095.9
ATTR_B = np.array(["a", "b", "c", "d"])
# Closed history rows per client: ~10 % of clients changed at least once, 16,617 closed rows
# per 150,000 clients in the real data.
HISTORY_SHARES = np.array([0.9, 0.09, 0.009, 0.001])

# The planted signal: a log-odds of main effects, a non-linear bump in scd_a and one
# interaction, so that a linear model falls measurably short of a flexible one.
_INTERCEPT = -3.45
_ATTR_A = 0.35
_ATTR_B = {"a": -0.6, "b": 0.0, "c": 0.35, "d": 0.8}
_SCD_B = np.array([0.0, -0.3, 0.0, 0.2, 0.5, 0.9])  # index = scd_b (1..5); 0 unused


@dataclass(frozen=True)
class GeneratorConfig:
    customers: int = 150_000
    months: int = 34  # 2020-01 through 2022-10, as in the original bucket
    seed: int = 42
    # Share of attr_a and attr_b cells left empty in customer_profiles.csv, as in real exports.
    # The labels are drawn from the complete values first, so the signal is the same.
    missing_rate: float = 0.0

    def __post_init__(self) -> None:
        if self.customers < 1 or self.months < 1:
            raise ValueError("customers and months must be at least 1")
        if not 0.0 <= self.missing_rate < 1.0:
            raise ValueError("missing_rate must be at least 0 and below 1")


def true_probability(attr_a: np.ndarray, attr_b: np.ndarray, scd_a: np.ndarray, scd_b: np.ndarray) -> np.ndarray:
    """P(label = 1) given a client's current features; NaN scd (no activity) adds nothing."""
    attr_b_effect = pd.Series(attr_b).map(_ATTR_B).fillna(0.0).to_numpy()
    scd_a = np.asarray(scd_a, dtype=float)
    scd_b = np.asarray(scd_b, dtype=float)
    bump = np.nan_to_num(1.4 * np.exp(-(((scd_a - 0.7) / 0.12) ** 2)))
    scd_b_effect = np.where(np.isnan(scd_b), 0.0, _SCD_B[np.nan_to_num(scd_b).astype(int).clip(0, 5)])
    interaction = 0.6 * ((attr_b == "d") & (np.nan_to_num(scd_b) >= 4))
    logit = _INTERCEPT + _ATTR_A * (np.asarray(attr_a) - 3) + attr_b_effect + bump + scd_b_effect + interaction
    probability: np.ndarray = 1.0 / (1.0 + np.exp(-logit))
    return probability


def _month_starts(months: int) -> list[date]:
    return [date(START.year + (START.month - 1 + m) // 12, (START.month - 1 + m) % 12 + 1, 1) for m in range(months)]


def _activity(rng: np.random.Generator, idx: np.ndarray, days: int) -> pd.DataFrame:
    """One open row per client, preceded by 0-3 closed rows whose periods chain exactly."""
    closed = rng.choice(len(HISTORY_SHARES), size=len(idx), p=HISTORY_SHARES)
    rows_per_client = closed + 1
    client = np.repeat(idx, rows_per_client)
    position = np.arange(len(client)) - np.repeat(np.cumsum(rows_per_client) - rows_per_client, rows_per_client)
    # Strictly increasing change days per client: sorted draws plus their rank.
    draws = rng.integers(1, days - 4, size=len(client))
    draws[position == 0] = 0
    order = np.lexsort((draws, client))
    start_day = draws[order] + position
    start_day[position == 0] = 0
    is_open = position == np.repeat(closed, rows_per_client)
    next_start = np.append(start_day[1:], 0)
    start = np.datetime64(START, "D")
    valid_from = (start + start_day).astype(str)
    valid_to = np.where(is_open, "", (start + next_start).astype(str))
    return pd.DataFrame(
        {
            "idx": client,
            "valid_from": valid_from,
            "valid_to": valid_to,
            "scd_a": rng.random(len(client)),
            "scd_b": rng.integers(1, 6, size=len(client)),
        }
    )


def _sales(rng: np.random.Generator, month: date) -> pd.DataFrame:
    n = int(rng.poisson(400))
    first = np.datetime64(month, "D")
    days = (np.datetime64(month, "M") + 1).astype("datetime64[D]") - first
    return pd.DataFrame(
        {
            "idx": np.sort(rng.choice(50_000, size=n, replace=False)),
            "value": np.round(rng.uniform(0.0, 10.0, size=n), 1),
            "date": (first + rng.integers(0, days.astype(int), size=n)).astype(str),
            "store_idx": rng.choice(np.arange(1, 6), size=n, p=STORE_WEIGHTS),
        }
    )


def generate(out: Path, config: GeneratorConfig = GeneratorConfig(), truth: Path | None = None) -> None:
    """Write the raw layout under `out`; the same config always writes the same bytes."""
    rng = np.random.default_rng(config.seed)
    month_starts = _month_starts(config.months)
    days = (np.datetime64(_month_starts(config.months + 1)[-1], "D") - np.datetime64(START, "D")).astype(int)
    out.mkdir(parents=True, exist_ok=True)
    steps = tqdm(total=4 + config.months, desc="generate", unit="file", disable=not sys.stderr.isatty())

    idx = np.arange(config.customers)
    profiles = pd.DataFrame(
        {
            "idx": idx,
            "attr_a": rng.integers(1, 6, size=config.customers),
            "attr_b": ATTR_B[rng.integers(0, 4, size=config.customers)],
            "attr_c": np.where(rng.random(config.customers) < 0.5, "yes", "no"),
        }
    )
    steps.update()

    activity = _activity(rng, idx, max(int(days), 8))
    activity.to_csv(out / "customer_activity.csv", index=False)
    steps.update()

    current = activity[activity["valid_to"] == ""].set_index("idx").reindex(idx)
    p = true_probability(
        profiles["attr_a"].to_numpy(),
        profiles["attr_b"].to_numpy(),
        current["scd_a"].to_numpy(),
        current["scd_b"].to_numpy(),
    )
    pd.DataFrame({"idx": idx, "label": (rng.random(config.customers) < p).astype(int)}).to_csv(
        out / "labels.csv", index=False
    )
    if config.missing_rate > 0:  # its own random stream: the default dataset's bytes stay the same
        blank = np.random.default_rng([config.seed, 1])
        for column in ("attr_a", "attr_b"):
            profiles[column] = (
                profiles[column].astype(object).where(blank.random(config.customers) >= config.missing_rate)
            )
    profiles.to_csv(out / "customer_profiles.csv", index=False)
    if truth is not None:
        truth.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"idx": idx, "p_label": p}).to_csv(truth, index=False)
    steps.update()

    pd.DataFrame({"idx": np.arange(1, 6), "location": STORES}).to_csv(out / "stores.csv", index=False)
    steps.update()

    for month in month_starts:
        folder = out / "sales" / f"{month:%Y-%m}-01"
        folder.mkdir(parents=True, exist_ok=True)
        _sales(rng, month).to_csv(folder / "sales.csv", index=False)
        steps.update()
    steps.close()
    log.info(
        "generated %s clients (%s activity rows) and %d sales months in %s (seed %d)",
        f"{config.customers:,}",
        f"{len(activity):,}",
        config.months,
        out,
        config.seed,
    )
