from __future__ import annotations

import numpy as np

from data_science.evaluate import auc_interval, baselines, choose_threshold, evaluate


def signal(n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.beta(1, 9, n)
    return (rng.random(n) < p).astype(int), p


def test_threshold_maximises_f1_below_one_half_for_a_rare_label() -> None:
    y, p = signal()
    threshold = choose_threshold(y, p)
    assert 0.05 < threshold < 0.5


def test_baselines_have_no_skill() -> None:
    y, _ = signal()
    base = baselines(y[:10_000], y[10_000:], seed=0)
    assert base["majority"]["roc_auc"] == 0.5
    assert abs(base["majority"]["accuracy"] - (1 - y[10_000:].mean())) < 1e-9
    assert abs(base["stratified"]["roc_auc"] - 0.5) < 0.03


def test_verdict_separates_signal_from_noise() -> None:
    y, p = signal()
    good = evaluate(y[:10_000], y[10_000:], p[10_000:], choose_threshold(y, p), seed=0)
    assert good["has_skill"] and good["verdict"].startswith("skill")
    noise = np.random.default_rng(5).random(10_000)
    bad = evaluate(y[:10_000], y[10_000:], noise, 0.5, seed=0)
    assert not bad["has_skill"] and bad["verdict"].startswith("NO SKILL")
    low, high = auc_interval(y[10_000:], noise, seed=0)
    assert low < 0.5 < high


def test_ranking_without_calibration_is_not_called_skill() -> None:
    y, p = signal()
    overconfident = np.clip(p * 6, 0, 0.999)  # same ranking, probabilities far too high
    report = evaluate(y[:10_000], y[10_000:], overconfident[10_000:], 0.5, seed=0)
    assert report["metrics"]["roc_auc"] > 0.6 and not report["has_skill"]
    assert "ranks clients, but its log loss" in report["verdict"]
