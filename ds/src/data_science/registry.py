"""Versioned model directories on a shared volume: candidates, one champion, rollback.

Layout of a model directory (the `models` volume)::

    <model_dir>/<version>/model.joblib        the artifact, never rewritten
    <model_dir>/<version>/metadata.json       written once with the artifact's sha256
    <model_dir>/<version>/events.jsonl        append-only: candidate, promoted, rejected, ...
    <model_dir>/champion.json                 the pointer: which version serves, and its history
    <model_dir>/champion-history.jsonl        append-only log of every pointer change
    <model_dir>/.incoming-*/                  a save in progress (or a killed one, cleaned later)

A version is assembled in a hidden `.incoming-*` directory and renamed into place in one
step, so a reader sees a complete version or none. The champion pointer is changed the same
way: written to a temporary file, fsynced, renamed. Every version is a candidate until it is
promoted; the API serves the champion only (see `deployment.model_holder`).

`python -m data_science.registry list | show V | promote V --reason R | rollback --reason R`
"""

from __future__ import annotations

import argparse
import fcntl
import getpass
import hashlib
import json
import logging
import math
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import sklearn

from data_science.features import CATEGORICAL, FEATURES, LABEL

log = logging.getLogger(__name__)

ARTIFACT = "model.joblib"
METADATA = "metadata.json"
EVENTS = "events.jsonl"
CHAMPION = "champion.json"
CHAMPION_LOG = "champion-history.jsonl"
LOCK = ".registry.lock"
INCOMING = ".incoming-"
# A `.incoming-*` directory is removed by the next save only when no process holds its lock
# and it has not changed for this long (a save that has just created it has not locked it yet).
INCOMING_GRACE_SECONDS = 60.0
# A candidate may be this much worse than the champion (ROC AUC on the candidate's holdout).
DEFAULT_TOLERANCE = 0.005
# The fixed reference set every version must score before it can be promoted or served:
# each known category, a category never seen, clients without activity, large values.
REFERENCE_ROWS: list[dict[str, Any]] = [
    {"attr_a": 1, "attr_b": "a", "scd_a": 0.5, "scd_b": 1},
    {"attr_a": 2, "attr_b": "b", "scd_a": 0.0, "scd_b": 0},
    {"attr_a": 3, "attr_b": "c", "scd_a": 1.5, "scd_b": 10},
    {"attr_a": 4, "attr_b": "d", "scd_a": 0.25, "scd_b": 3},
    {"attr_a": 0, "attr_b": "a", "scd_a": None, "scd_b": None},
    {"attr_a": 5, "attr_b": "never-seen", "scd_a": 1e6, "scd_b": 100_000},
]


class ModelVersionError(RuntimeError):
    """No usable model version: the message says which and why."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def actor() -> str:
    """Who changes the registry: $USER (or the login) at this host."""
    try:
        user = os.environ.get("USER") or getpass.getuser()
    except Exception:  # no passwd entry for the uid in a container
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def new_version(now: datetime | None = None) -> str:
    """Sortable, readable, unique enough for one trainer: 20261124T203012.123456Z."""
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S.%fZ")


# --- saving --------------------------------------------------------------------------------


def clean_incoming(model_dir: Path, grace_seconds: float = INCOMING_GRACE_SECONDS) -> list[str]:
    """Remove `.incoming-*` directories left by a killed save; never one a live save holds.

    A save holds an exclusive flock on its directory until it is renamed into place. A
    directory is removed only if that lock can be taken (its writer is gone) and it has not
    changed for `grace_seconds` (a writer between creating and locking it is not yet locked).
    """
    removed = []
    if not model_dir.is_dir():
        return removed
    for path in model_dir.glob(INCOMING + "*"):
        try:
            if not path.is_dir() or time.time() - path.stat().st_mtime < grace_seconds:
                continue
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue  # renamed or removed meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a save in progress
        else:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
            log.info("removed %s, left by a save that did not finish", path.name)
        finally:
            os.close(fd)
    return removed


def save_version(model_dir: Path, obj: Any, metadata: dict[str, Any]) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    clean_incoming(model_dir)
    version = new_version()
    staging = Path(tempfile.mkdtemp(prefix=INCOMING, dir=model_dir))
    lock = os.open(staging, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # `clean_incoming` elsewhere leaves it alone
        artifact = staging / ARTIFACT
        joblib.dump(obj, artifact)
        metadata = {**metadata, "version": version, "artifact": ARTIFACT, "sha256": sha256(artifact)}
        (staging / METADATA).write_text(json.dumps(metadata, indent=2, default=str) + "\n")
        event = {"event": "candidate", "at": _now(), "by": actor(), "reason": "saved by training"}
        (staging / EVENTS).write_text(json.dumps(event) + "\n")
        for path in (artifact, staging / METADATA, staging / EVENTS, staging):
            _fsync(path)
        staging.chmod(0o755)  # the serving container reads it as another user
        target = model_dir / version
        os.rename(staging, target)
        _fsync(model_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        os.close(lock)
    return target


def versions(model_dir: Path) -> list[str]:
    """Version directories, oldest first (in-progress `.incoming-*` ones are not versions)."""
    if not model_dir.is_dir():
        return []
    return sorted(p.name for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


# --- reading and loading -------------------------------------------------------------------


def read_metadata(model_dir: Path, version: str) -> dict[str, Any]:
    folder = model_dir / version
    if not folder.is_dir():
        raise ModelVersionError(f"no model version {version!r} in {model_dir}")
    try:
        metadata = json.loads((folder / METADATA).read_text())
    except FileNotFoundError:
        raise ModelVersionError(f"model version {version} in {model_dir} is incomplete: no {METADATA}") from None
    except json.JSONDecodeError as exc:
        raise ModelVersionError(f"model version {version}: {METADATA} is not valid JSON ({exc})") from None
    artifact = folder / metadata.get("artifact", ARTIFACT)
    if not artifact.is_file():
        raise ModelVersionError(f"model version {version} in {model_dir} is incomplete: no {artifact.name}")
    if sha256(artifact) != metadata.get("sha256"):
        raise ModelVersionError(f"model version {version}: {artifact.name} does not match its sha256: corrupted")
    return metadata


def check_compatible(metadata: dict[str, Any]) -> None:
    trained = metadata.get("versions", {}).get("scikit-learn")
    if trained != sklearn.__version__:
        raise ModelVersionError(
            f"model version {metadata.get('version')} was trained with scikit-learn {trained}; this environment has "
            f"{sklearn.__version__}. Pickled estimators are only reliable on the same version: install "
            f"scikit-learn=={trained} or retrain."
        )


def unpickle(model_dir: Path, metadata: dict[str, Any]) -> Any:
    """The artifact's object; any failure to unpickle (a module or class that no longer
    exists, a truncated file) is a ModelVersionError naming the version and the cause."""
    try:
        return joblib.load(model_dir / metadata["version"] / metadata["artifact"])
    except Exception as exc:
        raise ModelVersionError(
            f"model version {metadata['version']} cannot be loaded: {type(exc).__name__}: {exc}"
        ) from None


def load_version(model_dir: Path, version: str | None = None) -> tuple[Any, dict[str, Any]]:
    """The named version; without a name the champion, or (no champion yet) the newest
    complete version. Verified (sha256, scikit-learn version) before it is unpickled."""
    if version is None:
        version = champion(model_dir)
    if version is not None:
        metadata = read_metadata(model_dir, version)
    else:
        for version in reversed(versions(model_dir)):
            try:
                metadata = read_metadata(model_dir, version)
                break
            except ModelVersionError as exc:
                log.warning("skipping %s", exc)
        else:
            raise ModelVersionError(f"no complete model version in {model_dir}; has the training job run?")
    check_compatible(metadata)
    return unpickle(model_dir, metadata), metadata


# --- checks a version must pass to be promoted or served -----------------------------------


def has_skill(metadata: dict[str, Any]) -> bool:
    """The holdout evaluation found skill (a version never evaluated has none to show)."""
    return bool(metadata.get("evaluation", {}).get("has_skill", False))


def flagged_no_skill(metadata: dict[str, Any]) -> bool:
    """The holdout evaluation says NO SKILL (what /ready, /model and the pointer flag)."""
    return metadata.get("evaluation", {}).get("has_skill") is False


def check_signature(model: Any, metadata: dict[str, Any]) -> None:
    """The features and types the serving schema expects, and what the API reads from a model."""
    problems = []
    expected = metadata.get("features")
    if expected != FEATURES:
        problems.append(f"its metadata lists features {expected}; the serving schema has {FEATURES}")
    names = list(getattr(model, "feature_names_in_", []))
    if names != list(FEATURES):
        problems.append(f"it expects features {names}; the serving schema has {list(FEATURES)}")
    estimator = getattr(getattr(model, "pipeline_", None), "steps", [(None, None)])[-1][1]
    n_in = getattr(estimator, "n_features_in_", len(FEATURES))
    if n_in != len(FEATURES):
        problems.append(f"its estimator expects {n_in} input columns, not {len(FEATURES)}")
    recorded = getattr(model, "categories_", None) or {}
    for name in CATEGORICAL:
        categories = recorded.get(name)
        if not categories or not all(isinstance(c, str) for c in categories):
            problems.append(f"it records no {name} categories")
    threshold = getattr(model, "threshold_", None)
    if not isinstance(threshold, float | int) or not 0 <= threshold <= 1:
        problems.append(f"its threshold {threshold!r} is not a probability")
    if not callable(getattr(model, "predict_labels_and_probabilities", None)):
        problems.append(f"a {type(model).__name__} has no predict_labels_and_probabilities")
    if problems:
        raise ModelVersionError(
            f"model version {metadata.get('version')} fails the signature check: " + "; ".join(problems)
        )


def smoke_predict(model: Any, metadata: dict[str, Any], frame: pd.DataFrame | None = None) -> np.ndarray:
    """Score the reference rows (or `frame`); P(label = 1) per row, or a ModelVersionError."""
    frame = pd.DataFrame(REFERENCE_ROWS) if frame is None else frame
    try:
        labels, probabilities = model.predict_labels_and_probabilities(frame)
        labels, probabilities = np.asarray(labels), np.asarray(probabilities, dtype="float64")
    except Exception as exc:
        raise ModelVersionError(
            f"model version {metadata.get('version')} fails the smoke prediction: {type(exc).__name__}: {exc}"
        ) from None
    if labels.shape != (len(frame),) or probabilities.shape != (len(frame),):
        raise ModelVersionError(
            f"model version {metadata.get('version')} fails the smoke prediction: {labels.shape} labels and "
            f"{probabilities.shape} probabilities for {len(frame)} rows"
        )
    if not set(np.unique(labels).tolist()) <= {0, 1} or not np.all((probabilities >= 0) & (probabilities <= 1)):
        raise ModelVersionError(
            f"model version {metadata.get('version')} fails the smoke prediction: labels {np.unique(labels)[:5]}, "
            f"probabilities from {np.nanmin(probabilities)} to {np.nanmax(probabilities)}"
        )
    return probabilities


def verify(model: Any, metadata: dict[str, Any]) -> None:
    """What serving needs: the signature, and a smoke prediction on the reference set."""
    check_signature(model, metadata)
    smoke_predict(model, metadata)


def load_verified(model_dir: Path, version: str) -> tuple[Any, dict[str, Any]]:
    model, metadata = load_version(model_dir, version)
    verify(model, metadata)
    return model, metadata


# --- the champion pointer and events -------------------------------------------------------


@contextmanager
def _locked(model_dir: Path) -> Iterator[None]:
    """One pointer change at a time (a promotion racing a rollback)."""
    if not model_dir.is_dir():
        raise ModelVersionError(f"no model directory {model_dir}")
    with (model_dir / LOCK).open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
        _fsync(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _append(path: Path, record: dict[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record, default=str) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def record_event(model_dir: Path, version: str, event: str, reason: str, by: str | None = None, **details: Any) -> None:
    """Append to the version's events (the artifact and metadata.json are never rewritten)."""
    _append(
        model_dir / version / EVENTS, {"event": event, "at": _now(), "by": by or actor(), "reason": reason, **details}
    )


def events(model_dir: Path, version: str) -> list[dict[str, Any]]:
    path = model_dir / version / EVENTS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def champion_pointer(model_dir: Path) -> dict[str, Any] | None:
    try:
        pointer = json.loads((model_dir / CHAMPION).read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelVersionError(f"{model_dir / CHAMPION} is not valid JSON ({exc})") from None
    if not isinstance(pointer, dict) or not isinstance(pointer.get("version"), str):
        raise ModelVersionError(f"{model_dir / CHAMPION} names no version")
    return pointer


def champion(model_dir: Path) -> str | None:
    pointer = champion_pointer(model_dir)
    return pointer["version"] if pointer else None


def _set_champion(
    model_dir: Path, version: str, event: str, reason: str, by: str, history: list[str], details: dict[str, Any]
) -> dict[str, Any]:
    old = champion_pointer(model_dir)
    metadata = read_metadata(model_dir, version)
    pointer = {
        "version": version,
        "no_skill": flagged_no_skill(metadata),
        "since": _now(),
        "by": by,
        "event": event,
        "reason": reason,
        "previous": old["version"] if old else None,
        "history": history[-100:],  # earlier champions, oldest first: what rollback returns to
    }
    _write_atomic(model_dir / CHAMPION, json.dumps(pointer, indent=2) + "\n")
    _append(model_dir / CHAMPION_LOG, {k: v for k, v in pointer.items() if k != "history"})
    record_event(model_dir, version, event, reason, by, previous=pointer["previous"], **details)
    if old and old["version"] != version and (model_dir / old["version"]).is_dir():
        record_event(model_dir, old["version"], "retired", f"{version} {event}: {reason}", by)
    return pointer


def promote(model_dir: Path, version: str, reason: str, by: str | None = None, **details: Any) -> dict[str, Any]:
    """Make `version` the champion (atomic pointer change); the old one goes on the history."""
    with _locked(model_dir):
        old = champion_pointer(model_dir)
        if old and old["version"] == version:
            return old
        history = [*old["history"], old["version"]] if old else []
        return _set_champion(model_dir, version, "promoted", reason, by or actor(), history, details)


def rollback(model_dir: Path, reason: str, by: str | None = None) -> dict[str, Any]:
    """Back to the previous champion (the newest one on the history that still loads and predicts)."""
    with _locked(model_dir):
        old = champion_pointer(model_dir)
        if old is None:
            raise ModelVersionError(f"no champion in {model_dir}: nothing to roll back")
        history = list(old["history"])
        while history:
            target = history.pop()
            try:
                load_verified(model_dir, target)
            except ModelVersionError as exc:
                log.error("cannot roll back to %s: %s", target, exc)
                continue
            return _set_champion(model_dir, target, "rolled back to", reason, by or actor(), history, {})
        raise ModelVersionError(f"no earlier champion of {old['version']} that still loads: nothing to roll back to")


def reject(model_dir: Path, version: str, reasons: list[str], **details: Any) -> None:
    record_event(model_dir, version, "rejected", "; ".join(reasons), **details)


# --- the promotion gate ---------------------------------------------------------------------


@dataclass
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)
    champion: str | None = None


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def assess(
    model_dir: Path, model: Any, metadata: dict[str, Any], holdout: pd.DataFrame, tolerance: float = DEFAULT_TOLERANCE
) -> Decision:
    """Should this candidate become the champion?

    Signature and smoke prediction always; with a usable champion, also skill against the
    no-skill baseline and a holdout ROC AUC not below the champion's (scored on the same
    holdout rows) minus `tolerance`. With no usable champion, the first version that loads
    and predicts becomes it, skill or not (its metadata says which).
    """
    decision = Decision(promote=True)
    try:
        check_signature(model, metadata)
        smoke_predict(model, metadata)
        p = smoke_predict(model, metadata, holdout)
    except ModelVersionError as exc:
        return Decision(False, [str(exc)], {"signature_and_smoke": "failed"})
    decision.checks["signature_and_smoke"] = "passed"
    y = holdout[LABEL].to_numpy()
    auc = _auc(y, p)
    decision.checks.update(holdout_rows=len(holdout), roc_auc=auc, has_skill=has_skill(metadata))
    current = champion(model_dir) if (model_dir / CHAMPION).exists() else None
    champion_auc = None
    if current is not None:
        try:
            champion_model, champion_metadata = load_verified(model_dir, current)
            champion_auc = _auc(y, smoke_predict(champion_model, champion_metadata, holdout))
        except ModelVersionError as exc:
            log.error(
                "the champion %s is unusable (%s): judging %s as if there were none",
                current,
                exc,
                metadata.get("version"),
            )
    if champion_auc is None:
        decision.reasons.append(
            "no usable champion yet: the first version that loads and predicts becomes it"
            + ("" if has_skill(metadata) else ", flagged NO SKILL")
        )
        return decision
    decision.champion = current
    if not has_skill(metadata):
        decision.promote = False
        verdict = metadata.get("evaluation", {}).get("verdict", "not evaluated")
        decision.reasons.append(f"no skill against the no-skill baseline ({verdict})")
    decision.checks.update(champion=current, champion_roc_auc=champion_auc, tolerance=tolerance)
    if not math.isnan(champion_auc) and not auc >= champion_auc - tolerance:
        decision.promote = False
        decision.reasons.append(
            f"holdout ROC AUC {auc:.4f} is worse than the champion {current}'s {champion_auc:.4f} on the same "
            f"{len(holdout):,} rows by more than the tolerance {tolerance}"
        )
    if decision.promote:
        decision.reasons.append(
            f"skill, and holdout ROC AUC {auc:.4f} against the champion {current}'s {champion_auc:.4f} "
            f"(tolerance {tolerance})"
        )
    return decision


# --- command line ---------------------------------------------------------------------------


def status(model_dir: Path, version: str, pointer: dict[str, Any] | None) -> str:
    if pointer and pointer["version"] == version:
        return "champion"
    if pointer and version in pointer.get("history", []):
        return "former champion"
    seen = [e["event"] for e in events(model_dir, version)]
    return "rejected" if seen and seen[-1] == "rejected" else "candidate"


def _list(model_dir: Path) -> int:
    pointer = champion_pointer(model_dir)
    print(f"{'version':<26} {'status':<16} {'skill':<8} {'roc_auc':>7} {'rows':>10}  created_at")
    for version in reversed(versions(model_dir)):
        try:
            metadata = read_metadata(model_dir, version)
        except ModelVersionError as exc:
            print(f"{version:<26} {'broken':<16} {exc}")
            continue
        evaluation = metadata.get("evaluation", {})
        auc = evaluation.get("metrics", {}).get("roc_auc", float("nan"))
        rows = metadata.get("training", {}).get("rows", 0)
        skill = "skill" if has_skill(metadata) else "NO SKILL"
        print(
            f"{version:<26} {status(model_dir, version, pointer):<16} {skill:<8} {auc:>7.4f} {rows:>10,}  "
            f"{metadata.get('created_at', '')}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_science.registry", description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="the model directory (default: $MODEL_DIR or models)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every version, newest first, with its status")
    show = commands.add_parser("show", help="a version's metadata and events, as JSON")
    show.add_argument("version")
    promote_cmd = commands.add_parser("promote", help="make a version the champion (it must load and predict)")
    promote_cmd.add_argument("version")
    promote_cmd.add_argument("--reason", required=True, help="why: recorded with who and when")
    rollback_cmd = commands.add_parser("rollback", help="go back to the previous champion")
    rollback_cmd.add_argument("--reason", required=True, help="why: recorded with who and when")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model_dir = args.model_dir or Path(os.environ.get("MODEL_DIR") or "models")
    try:
        if args.command == "list":
            return _list(model_dir)
        if args.command == "show":
            metadata = read_metadata(model_dir, args.version)
            shown = {
                "status": status(model_dir, args.version, champion_pointer(model_dir)),
                "metadata": metadata,
                "events": events(model_dir, args.version),
            }
            print(json.dumps(shown, indent=2, default=str))
            return 0
        if args.command == "promote":
            _, metadata = load_verified(model_dir, args.version)
            if not has_skill(metadata):
                log.warning("promoting %s, which has NO SKILL: %s", args.version, metadata["evaluation"].get("verdict"))
            pointer = promote(model_dir, args.version, args.reason, manual=True)
        else:
            pointer = rollback(model_dir, args.reason)
        log.info("champion is now %s (was %s): %s", pointer["version"], pointer["previous"], pointer["reason"])
        return 0
    except ModelVersionError as exc:
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    from data_science.registry import main as _main  # the package's module, not a second copy as __main__

    sys.exit(_main())
