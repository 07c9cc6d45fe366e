"""`python -m data_science.train`: wait for feature_store, train, evaluate, save a version.

Starts whenever it is started (before the ETL has run is fine: it waits), reads as ds_user,
holds out a stratified slice for evaluation, and exits non-zero with a clear message when
it times out or the data cannot make a model.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from importlib import resources
from pathlib import Path

import pandas as pd
import psycopg2
from sklearn.model_selection import train_test_split

from data_science.config import TrainSettings
from data_science.evaluate import evaluate
from data_science.features import FEATURES, LABEL, FeatureError
from data_science.model import CustomerModel
from machine_learning_engineering.config import ConfigError
from machine_learning_engineering.db import TableNotReady, create_engine, wait_for_table

log = logging.getLogger("data_science.train")

MIN_PER_CLASS = 10


class UnusableData(ValueError):
    """feature_store cannot make a model; the message says why."""


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


def train(frame: pd.DataFrame, test_size: float, seed: int) -> tuple[CustomerModel, pd.DataFrame]:
    """Fit on a stratified training split, evaluate on the rest; returns the holdout too."""
    check_training_data(frame)
    fit_part, holdout = train_test_split(frame, test_size=test_size, stratify=frame[LABEL], random_state=seed)
    model = CustomerModel(random_state=seed).fit(fit_part)
    p = model.predict_proba(holdout)[:, 1]
    model.evaluation_ = evaluate(fit_part[LABEL].to_numpy(), holdout[LABEL].to_numpy(), p, model.threshold_, seed)
    return model, holdout


def summary(model: CustomerModel, seconds: float, path: Path) -> str:
    ev, m = model.evaluation_, model.evaluation_["metrics"]
    base = ev["baselines"]
    return (
        f"model {path.name}: trained on {model.training_['rows']:,} rows in {seconds:.1f} s | holdout "
        f"{ev['holdout_rows']:,} rows: ROC AUC {m['roc_auc']:.3f} (majority {base['majority']['roc_auc']:.3f}, "
        f"stratified {base['stratified']['roc_auc']:.3f}), accuracy {m['accuracy']:.3f} "
        f"(majority {base['majority']['accuracy']:.3f}), F1 {m['f1']:.3f} at threshold {model.threshold_:.3f} "
        f"(stratified {base['stratified']['f1']:.3f}), log loss {m['log_loss']:.4f} "
        f"(prior {base['majority']['log_loss']:.4f}) | {'skill' if ev['has_skill'] else 'NO SKILL'} | saved to {path}"
    )


def run(settings: TrainSettings) -> Path:
    wait_for_table(settings.database, "feature_store", settings.wait_timeout)
    frame = read_training_data(settings)
    started = time.perf_counter()
    model, _ = train(frame, settings.test_size, settings.seed)
    seconds = time.perf_counter() - started
    path = model.save(settings.model_dir)
    if not model.evaluation_["has_skill"]:
        log.warning("%s", model.evaluation_["verdict"])
    log.info("%s", summary(model, seconds, path))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_science.train", description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="where versions are saved (default: $MODEL_DIR or models)")
    parser.add_argument("--wait-timeout", type=float, help="seconds to wait for feature_store (default: 3600)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = TrainSettings.from_env()
        overrides = {"model_dir": args.model_dir, "wait_timeout": args.wait_timeout}
        settings = TrainSettings(**{**settings.__dict__, **{k: v for k, v in overrides.items() if v is not None}})
        run(settings)
    except (TableNotReady, UnusableData, FeatureError, ConfigError) as exc:
        log.error("training failed: %s", exc)
        return 1
    except OSError as exc:
        log.error("training failed: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
