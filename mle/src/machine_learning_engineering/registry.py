"""Versioned model directories on a shared volume: candidates, one champion, rollback.

Layout of a model directory (the `models` volume)::

    <model_dir>/<version>/model.joblib        the artifact, never rewritten
    <model_dir>/<version>/metadata.json       written once with the artifact's sha256 and the manifest
    <model_dir>/<version>/ood.npz             the out-of-distribution gate (in the manifest; versions
                                              saved before gates existed have none)
    <model_dir>/<version>/reference.csv       a sample of the training rows with their predictions
    <model_dir>/<version>/events.jsonl        append-only: candidate, promoted, rejected, ...
    <model_dir>/champion.json                 the pointer: which version serves, and its history
    <model_dir>/champion-history.jsonl        append-only log of every pointer change
    <model_dir>/.incoming-*/                  a save in progress (or a killed one, cleaned later)

A version is assembled in a hidden `.incoming-*` directory and renamed into place in one
step, so a reader sees a complete version or none. Every file beside the artifact that the
model saves with it is listed with its sha256 in metadata.json's `files` (the manifest) and
verified like the artifact. The champion pointer is changed the same
way: written to a temporary file, fsynced, renamed. Every version is a candidate until it is
promoted; the API serves the champion only (see `deployment.model_holder`).

The registry knows models only through the MLEModel contract (the class passed to it): any
model that implements it is versioned, verified and served the same way. The promotion
policy (which metrics a candidate must reach) belongs to the model package; the command
line (`companydata-registry`) to `machine_learning_engineering.registry_cli`.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata as package_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import joblib
import numpy as np
import pandas as pd

from machine_learning_engineering.errors import MLEError

if TYPE_CHECKING:
    from machine_learning_engineering.model import MLEModel

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


class ModelVersionError(MLEError, RuntimeError):
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
    removed: list[str] = []
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


def _file_name(name: str) -> str:
    """A file of a version is a plain name in its directory, never a path out of it."""
    if not name or name != Path(name).name or name.startswith(".") or name in (ARTIFACT, METADATA, EVENTS):
        raise ModelVersionError(f"{name!r} cannot be a file of a model version")
    return name


def save_version(
    model_dir: Path,
    obj: Any,
    metadata: dict[str, Any],
    files: Mapping[str, Callable[[Path], None]] | None = None,
) -> Path:
    """A new version directory, written atomically: the artifact, then each of `files`
    (name -> a function writing that file at the given path, durably), listed with its sha256
    in the metadata's `files` manifest."""
    writers = {_file_name(name): write for name, write in (files or {}).items()}
    model_dir.mkdir(parents=True, exist_ok=True)
    clean_incoming(model_dir)
    version = new_version()
    staging = Path(tempfile.mkdtemp(prefix=INCOMING, dir=model_dir))
    lock = os.open(staging, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # `clean_incoming` elsewhere leaves it alone
        artifact = staging / ARTIFACT
        joblib.dump(obj, artifact)
        manifest = {}
        for name, write in writers.items():
            write(staging / name)
            manifest[name] = sha256(staging / name)
        metadata = {**metadata, "version": version, "artifact": ARTIFACT, "sha256": sha256(artifact)}
        if manifest:
            metadata["files"] = manifest
        (staging / METADATA).write_text(json.dumps(metadata, indent=2, default=str) + "\n")
        event = {"event": "candidate", "at": _now(), "by": actor(), "reason": "saved by training"}
        (staging / EVENTS).write_text(json.dumps(event) + "\n")
        for path in (artifact, *(staging / name for name in manifest), staging / METADATA, staging / EVENTS, staging):
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
        metadata: dict[str, Any] = json.loads((folder / METADATA).read_text())
    except FileNotFoundError:
        raise ModelVersionError(f"model version {version} in {model_dir} is incomplete: no {METADATA}") from None
    except json.JSONDecodeError as exc:
        raise ModelVersionError(f"model version {version}: {METADATA} is not valid JSON ({exc})") from None
    artifact = folder / metadata.get("artifact", ARTIFACT)
    if not artifact.is_file():
        raise ModelVersionError(f"model version {version} in {model_dir} is incomplete: no {artifact.name}")
    if sha256(artifact) != metadata.get("sha256"):
        raise ModelVersionError(f"model version {version}: {artifact.name} does not match its sha256: corrupted")
    manifest = metadata.get("files", {})
    if not isinstance(manifest, dict):
        raise ModelVersionError(f"model version {version}: its manifest (files) is not a mapping")
    for name, digest in manifest.items():
        try:
            path = folder / _file_name(name)
        except ModelVersionError as exc:
            raise ModelVersionError(f"model version {version}: {exc}") from None
        if not path.is_file():
            raise ModelVersionError(f"model version {version} in {model_dir} is incomplete: no {name}")
        if sha256(path) != digest:
            raise ModelVersionError(f"model version {version}: {name} does not match its sha256: corrupted")
    return metadata


def version_file(model_dir: Path, metadata: dict[str, Any], name: str) -> Path | None:
    """The path of a file the version's manifest lists (verified by `read_metadata`), or None."""
    if name not in metadata.get("files", {}):
        return None
    return model_dir / str(metadata["version"]) / name


def check_compatible(metadata: dict[str, Any], model_class: type[MLEModel]) -> None:
    """Refuse, before unpickling, a version trained with another release of a library the
    model class pins (pickled estimators are only reliable on the same version)."""
    for library in model_class.pinned_libraries:
        trained = metadata.get("versions", {}).get(library)
        try:
            installed: str | None = package_metadata.version(library)
        except package_metadata.PackageNotFoundError:
            installed = None
        if trained != installed:
            raise ModelVersionError(
                f"model version {metadata.get('version')} was trained with {library} {trained}; this environment has "
                f"{installed}. Pickled estimators are only reliable on the same version: install "
                f"{library}=={trained} or retrain."
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


def load_version(model_dir: Path, version: str | None, model_class: type[MLEModel]) -> tuple[Any, dict[str, Any]]:
    """The named version; without a name the champion, or (no champion yet) the newest
    complete version. Verified (sha256, pinned library versions) before it is unpickled."""
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
    check_compatible(metadata, model_class)
    return unpickle(model_dir, metadata), metadata


# --- checks a version must pass to be promoted or served -----------------------------------


def has_skill(metadata: dict[str, Any]) -> bool:
    """The holdout evaluation found skill (a version never evaluated has none to show)."""
    return bool(metadata.get("evaluation", {}).get("has_skill", False))


def flagged_no_skill(metadata: dict[str, Any]) -> bool:
    """The holdout evaluation says NO SKILL (what /ready, /model and the pointer flag)."""
    return metadata.get("evaluation", {}).get("has_skill") is False


def check_signature(model: MLEModel, metadata: dict[str, Any]) -> None:
    """The features the loading code declares, and what a server reads from a model."""
    schema = model.feature_schema
    problems = []
    expected = metadata.get("features")
    if expected != schema.kinds:
        problems.append(f"its metadata lists features {expected}; the serving schema has {schema.kinds}")
    try:  # an artifact from older code may lack what these read
        recorded = model.known_categories()
        for name in schema.categorical:
            categories = recorded.get(name)
            if not categories or not all(isinstance(c, str) for c in categories):
                problems.append(f"it records no {name} categories")
        threshold = model.decision_threshold
        if threshold is not None and (not isinstance(threshold, float | int) or not 0 <= threshold <= 1):
            problems.append(f"its threshold {threshold!r} is not a probability")
        problems += model.check_fitted()
    except Exception as exc:
        problems.append(f"{type(exc).__name__}: {exc}")
    if problems:
        raise ModelVersionError(
            f"model version {metadata.get('version')} fails the signature check: " + "; ".join(problems)
        )


def smoke_predict(
    model: MLEModel, metadata: dict[str, Any], frame: pd.DataFrame | None = None
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Score the reference rows (or `frame`); P(label = 1) per row, or a ModelVersionError.

    The reference rows come from the model's own declaration: each known category, a category
    never seen, every nullable feature missing, zeros and large values."""
    if frame is None:
        frame = model.feature_schema.reference_rows(model.known_categories())
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


def smoke_check_distribution(model: MLEModel, metadata: dict[str, Any]) -> None:
    """The version's out-of-distribution gate (if it has one) judges the reference rows."""
    if model.ood_gate_ is None:
        return
    frame = model.feature_schema.reference_rows(model.known_categories())
    try:
        verdicts = model.check_distribution(frame)
    except Exception as exc:
        raise ModelVersionError(
            f"model version {metadata.get('version')} fails the gate's smoke check: {type(exc).__name__}: {exc}"
        ) from None
    if len(verdicts) != len(frame) or any(v.in_distribution is None for v in verdicts):
        raise ModelVersionError(f"model version {metadata.get('version')} fails the gate's smoke check: no verdicts")


def verify(model: MLEModel, metadata: dict[str, Any]) -> None:
    """What serving needs: the signature, a smoke prediction on the reference set, and the
    gate (when the version has one) judging the same rows."""
    check_signature(model, metadata)
    smoke_predict(model, metadata)
    smoke_check_distribution(model, metadata)


def load_verified(model_dir: Path, version: str, model_class: type[MLEModel]) -> tuple[MLEModel, dict[str, Any]]:
    model = model_class.load(model_dir, version)
    verify(model, model.metadata_)
    return model, model.metadata_


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


def rollback(model_dir: Path, reason: str, model_class: type[MLEModel], by: str | None = None) -> dict[str, Any]:
    """Back to the previous champion (the newest one on the history that still loads and predicts)."""
    with _locked(model_dir):
        old = champion_pointer(model_dir)
        if old is None:
            raise ModelVersionError(f"no champion in {model_dir}: nothing to roll back")
        history = list(old["history"])
        while history:
            target = history.pop()
            try:
                load_verified(model_dir, target, model_class)
            except ModelVersionError as exc:
                log.error("cannot roll back to %s: %s", target, exc)
                continue
            return _set_champion(model_dir, target, "rolled back to", reason, by or actor(), history, {})
        raise ModelVersionError(f"no earlier champion of {old['version']} that still loads: nothing to roll back to")


def reject(model_dir: Path, version: str, reasons: list[str], **details: Any) -> None:
    record_event(model_dir, version, "rejected", "; ".join(reasons), **details)


def status(model_dir: Path, version: str, pointer: dict[str, Any] | None) -> str:
    """champion, former champion, rejected or candidate."""
    if pointer and pointer["version"] == version:
        return "champion"
    if pointer and version in pointer.get("history", []):
        return "former champion"
    seen = [e["event"] for e in events(model_dir, version)]
    return "rejected" if seen and seen[-1] == "rejected" else "candidate"
