"""`companydata-train`: wait for feature_store, train, evaluate, save a candidate, promote it if it passes.

Starts whenever it is started (before the ETL has run is fine: it waits), reads as ds_user,
holds out a stratified slice for evaluation, saves a candidate version and promotes it to
champion only if it passes the gate (`promotion.assess`). Exit status: 0 when a champion
serves afterwards (the candidate's or the previous one: a rejected candidate is reported by
ERROR lines, not by failing the Compose start); 1 when the job failed (timeout, unusable data,
time limit); 3 when no version can serve (the candidate fails its checks and there is no
champion), or with --strict when the candidate was not promoted.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg2
from sklearn.model_selection import train_test_split

from data_science import promotion
from data_science.config import HYPERPARAMETERS, TrainSettings
from data_science.errors import DataScienceError
from data_science.evaluate import evaluate
from data_science.features import FEATURES, LABEL, SCHEMA
from data_science.model import CustomerModel
from machine_learning_engineering import registry
from machine_learning_engineering.cli import run as run_cli
from machine_learning_engineering.config import ConfigError
from machine_learning_engineering.db import TableNotReady, create_engine, wait_for_table
from machine_learning_engineering.schema import FeatureError

log = logging.getLogger("data_science.train")

MIN_PER_CLASS = 10
EXIT_FAILED, EXIT_NOTHING_SERVES = 1, 3


class UnusableData(DataScienceError, ValueError):
    """feature_store cannot make a model; the message says why."""


class TimeLimitExceeded(DataScienceError, RuntimeError):
    """Training took longer than --time-limit; nothing was saved."""


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Interrupt the block after `seconds` (main thread only: a SIGALRM timer)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum: int, frame: object) -> None:
        raise TimeLimitExceeded(f"stopped after the time limit of {seconds:g} s (--time-limit); nothing was saved")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def read_training_data(settings: TrainSettings) -> pd.DataFrame:
    query = resources.files("data_science").joinpath("sql", "training_data.sql").read_text()
    engine = create_engine(settings.database)
    try:
        with engine.connect() as conn:
            return pd.read_sql_query(query, conn)
    except Exception as exc:  # a schema problem surfaces here, wrapped by pandas and SQLAlchemy
        raise UnusableData(f"cannot read feature_store: {_database_reason(exc)}") from None
    finally:
        engine.dispose()


def _database_reason(exc: BaseException) -> str:
    """PostgreSQL's own words, from under the layers that wrap them."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, psycopg2.Error) and seen.diag.message_primary:
            return seen.diag.message_primary
        seen = seen.__cause__ or seen.__context__
    return str(exc).splitlines()[0]


def check_training_data(frame: pd.DataFrame) -> None:
    missing = [c for c in [*FEATURES, LABEL] if c not in frame.columns]
    if missing:
        raise UnusableData(f"feature_store lacks column(s) {', '.join(missing)}")
    if frame.empty:
        raise UnusableData("feature_store has no rows")
    counts = frame[LABEL].value_counts()
    if len(counts) < 2:
        raise UnusableData(f"feature_store has one class only (every label is {counts.index[0]}): nothing to learn")
    if counts.min() < MIN_PER_CLASS:
        raise UnusableData(f"feature_store has {counts.min()} rows of class {counts.idxmin()}; need {MIN_PER_CLASS}")


def _uniform(idx: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random number in [0, 1) per client idx (splitmix64)."""
    z = idx.astype("uint64") + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return (z ^ (z >> np.uint64(31))).astype("float64") / 2.0**64


def split(frame: pd.DataFrame, test_size: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training rows and holdout. A client is held out by its idx alone (a fixed hash below
    test_size), so every version trained with the same test_size holds out the same clients:
    a champion never trained on the rows a later candidate is compared on, whatever else the
    data holds (more rows, fewer). Without idx, or when a class would have fewer than
    MIN_PER_CLASS rows on either side, a stratified random split (by seed) instead."""
    if "idx" in frame.columns and frame["idx"].notna().all():
        held = _uniform(frame["idx"].to_numpy()) < test_size
        fit_part, holdout = frame[~held], frame[held]
        if all(
            part[LABEL].value_counts().reindex([0, 1], fill_value=0).min() >= MIN_PER_CLASS
            for part in (fit_part, holdout)
        ):
            return fit_part, holdout
    return tuple(train_test_split(frame, test_size=test_size, stratify=frame[LABEL], random_state=seed))


def ood_evaluation(model: CustomerModel, holdout: pd.DataFrame) -> dict[str, Any]:
    """How often the version's out-of-distribution gate flags the holdout's ordinary rows."""
    gate = model.ood_gate_
    if gate is None:
        return {}
    verdicts = gate.check_frame(SCHEMA.validate(holdout))
    flagged = sum(v.in_distribution is False for v in verdicts)
    return {
        "holdout_rows": len(verdicts),
        "holdout_flagged": flagged,
        "holdout_flag_rate": flagged / len(verdicts) if verdicts else 0.0,
        "training_flag_rate": gate.training_flag_rate,
    }


def train(
    frame: pd.DataFrame, test_size: float, seed: int, params: dict[str, Any] | None = None
) -> tuple[CustomerModel, pd.DataFrame]:
    """Fit on a stratified training split, fit the out-of-distribution gate and the reference
    sample on the same rows, evaluate both on the rest, compile the scorer and verify it on
    the same holdout (`CustomerModel.compile_scoring`); returns the holdout too."""
    check_training_data(frame)
    fit_part, holdout = split(frame, test_size, seed)
    model = CustomerModel(random_state=seed, **(params or {})).fit(fit_part)
    model.fit_reference(fit_part, seed=seed)
    p = model.predict_proba(holdout)[:, 1]
    model.evaluation_ = evaluate(fit_part[LABEL].to_numpy(), holdout[LABEL].to_numpy(), p, model.threshold_, seed)
    model.evaluation_["ood"] = ood_evaluation(model, holdout)
    model.compile_scoring(holdout)
    return model, holdout


def hyperparameters(settings: TrainSettings) -> tuple[dict[str, Any], str | None]:
    """The explicit ones over --warm-start-from's (that version's recorded hyperparameters)."""
    params: dict[str, Any] = {}
    if settings.warm_start_from:
        recorded = registry.read_metadata(settings.model_dir, settings.warm_start_from).get("params", {})
        params = {k: recorded[k] for k in HYPERPARAMETERS if k in recorded}
    return {**params, **settings.params}, settings.warm_start_from


@dataclass
class Outcome:
    path: Path
    promoted: bool
    decision: promotion.Decision
    champion: str | None  # serving after this run

    @property
    def exit_code(self) -> int:
        # A version that passes but is kept back by --no-promote can still serve (as a fallback).
        return 0 if self.champion or self.decision.promote else EXIT_NOTHING_SERVES


def summary(model: CustomerModel, seconds: float, path: Path) -> str:
    ev, m = model.evaluation_, model.evaluation_["metrics"]
    base = ev["baselines"]
    gate = ev.get("ood") or {}
    serving = model.scoring()
    if serving["path"] == "compiled":
        held = serving["verified"]["at_save"]["holdout"]
        scoring = f" | scoring: {serving['engine']}, equal to scikit-learn on {held['rows']:,} holdout rows"
    else:
        scoring = f" | scoring: scikit-learn ({serving['reason']})"
    ood = ""
    if gate:
        ood = f" | OOD gate flags {gate['training_flag_rate']:.2%} of training, {gate['holdout_flag_rate']:.2%} of "
        ood += "holdout rows"
    return (
        f"model {path.name}: trained on {model.training_['rows']:,} rows in {seconds:.1f} s | holdout "
        f"{ev['holdout_rows']:,} rows: ROC AUC {m['roc_auc']:.3f} (majority {base['majority']['roc_auc']:.3f}, "
        f"stratified {base['stratified']['roc_auc']:.3f}), accuracy {m['accuracy']:.3f} "
        f"(majority {base['majority']['accuracy']:.3f}), F1 {m['f1']:.3f} at threshold {model.threshold_:.3f} "
        f"(stratified {base['stratified']['f1']:.3f}), log loss {m['log_loss']:.4f} "
        f"(prior {base['majority']['log_loss']:.4f}) | {'skill' if ev['has_skill'] else 'NO SKILL'}{ood}{scoring} "
        f"| saved to {path}"
    )


def train_and_register(frame: pd.DataFrame, settings: TrainSettings) -> Outcome:
    """Train a candidate, save it, and promote it if it passes the gate; say loudly if not."""
    params, warm_from = hyperparameters(settings)
    started = time.perf_counter()
    with time_limit(settings.time_limit):
        model, holdout = train(frame, settings.test_size, settings.seed, params)
    seconds = time.perf_counter() - started
    options = {
        "hyperparameters": params,
        "warm_start_from": warm_from,
        "warm_start": "hyperparameters of that version; trees are refitted (no HGB warm_start)" if warm_from else None,
        "seed": settings.seed,
        "test_size": settings.test_size,
        "time_limit": settings.time_limit,
        "promote": settings.promote,
        "tolerance": settings.tolerance,
        "data_rows": len(frame),
        "seconds": round(seconds, 3),
        "by": registry.actor(),
    }
    path = model.save(settings.model_dir, {"training_options": options})
    version = path.name
    if not model.evaluation_["has_skill"]:
        log.warning("%s", model.evaluation_["verdict"])
    log.info("%s", summary(model, seconds, path))
    decision = promotion.assess(settings.model_dir, model, model.metadata_, holdout, settings.tolerance)
    reason = "; ".join(decision.reasons)
    if decision.promote and settings.promote:
        registry.promote(settings.model_dir, version, reason, **decision.checks)
        flag = "" if model.evaluation_["has_skill"] else " (NO SKILL: it serves, and /ready and /model say so)"
        log.info("PROMOTED %s to champion%s: %s", version, flag, reason)
        return Outcome(path, True, decision, version)
    current = registry.champion(settings.model_dir)
    if decision.promote:
        registry.record_event(settings.model_dir, version, "passed", reason + "; not promoted (--no-promote)")
        log.info(
            "candidate %s passes the gate but is not promoted (--no-promote): "
            "companydata-registry promote %s --reason ...",
            version,
            version,
        )
        return Outcome(path, False, decision, current)
    registry.reject(settings.model_dir, version, decision.reasons, **decision.checks)
    log.error("NOT PROMOTED: model %s stays a candidate", version)
    for why in decision.reasons:
        log.error("NOT PROMOTED: %s", why)
    if current:
        log.error("NOT PROMOTED: the champion %s keeps serving", current)
    else:
        log.error("NOT PROMOTED: there is no champion: nothing can serve")
    return Outcome(path, False, decision, current)


def run(settings: TrainSettings) -> Outcome:
    wait_for_table(settings.database, "feature_store", settings.wait_timeout)
    frame = read_training_data(settings)
    return train_and_register(frame, settings)


def positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, not {text}")
        return value

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="companydata-train", description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="where versions are saved (default: $MODEL_DIR or models)")
    parser.add_argument("--wait-timeout", type=float, help="seconds to wait for feature_store (default: 3600)")
    parser.add_argument("--max-iter", type=positive(int), help="boosting rounds, at most (default 300)")
    parser.add_argument("--learning-rate", type=positive(float), help="(default 0.1)")
    parser.add_argument("--max-leaf-nodes", type=positive(int), help="per tree (default 31)")
    parser.add_argument(
        "--seed", type=int, help="model seed; the holdout is fixed by client idx (default: $TRAIN_SEED or 42)"
    )
    parser.add_argument("--test-size", type=float, help="holdout fraction (default: $TRAIN_TEST_SIZE or 0.2)")
    parser.add_argument("--time-limit", type=positive(float), help="seconds the fit may take, then fail")
    parser.add_argument("--tolerance", type=float, help="ROC AUC a candidate may lose to the champion (0.005)")
    parser.add_argument(
        "--promote", action=argparse.BooleanOptionalAction, help="promote a candidate that passes (default: yes)"
    )
    parser.add_argument("--warm-start-from", metavar="VERSION", help="start from that version's hyperparameters")
    parser.add_argument("--strict", action="store_true", help="exit 3 when the candidate is not promoted")
    args = parser.parse_args(argv)
    try:
        settings = TrainSettings.from_env()
        if args.test_size is not None and not 0 < args.test_size < 1:
            raise ConfigError(f"--test-size {args.test_size} must be between 0 and 1")
        params = {k: getattr(args, k) for k in HYPERPARAMETERS if getattr(args, k) is not None}
        overrides = {
            "model_dir": args.model_dir,
            "wait_timeout": args.wait_timeout,
            "seed": args.seed,
            "test_size": args.test_size,
            "time_limit": args.time_limit,
            "tolerance": args.tolerance,
            "promote": args.promote,
            "warm_start_from": args.warm_start_from,
            "strict": args.strict or None,
            "params": params or None,
        }
        settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
        outcome = run(settings)
    except (TableNotReady, FeatureError, ConfigError, DataScienceError, registry.ModelVersionError, OSError) as exc:
        log.error("training failed: %s", exc)
        return EXIT_FAILED
    if settings.strict and not outcome.promoted:
        return EXIT_NOTHING_SERVES
    return outcome.exit_code


entry = run_cli(main)

if __name__ == "__main__":
    entry()
