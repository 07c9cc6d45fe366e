"""Versioned model directories on a shared volume, written atomically.

A version is `<model_dir>/<version>/` with the joblib artifact and `metadata.json` (with the
artifact's sha256). It is assembled in a hidden `.incoming-*` directory and renamed into
place in one step, so a reader sees a complete version or none. Readers skip anything
incomplete or corrupted when looking for the latest, and refuse it when it is asked for by name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import sklearn

log = logging.getLogger(__name__)

ARTIFACT = "model.joblib"
METADATA = "metadata.json"


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


def new_version(now: datetime | None = None) -> str:
    """Sortable, readable, unique enough for one trainer: 20261124T203012.123456Z."""
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S.%fZ")


def save_version(model_dir: Path, obj: Any, metadata: dict[str, Any]) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    version = new_version()
    staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=model_dir))
    try:
        artifact = staging / ARTIFACT
        joblib.dump(obj, artifact)
        metadata = {**metadata, "version": version, "artifact": ARTIFACT, "sha256": sha256(artifact)}
        (staging / METADATA).write_text(json.dumps(metadata, indent=2, default=str) + "\n")
        for path in (artifact, staging / METADATA, staging):
            _fsync(path)
        staging.chmod(0o755)  # the serving container reads it as another user
        target = model_dir / version
        os.rename(staging, target)
        _fsync(model_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def versions(model_dir: Path) -> list[str]:
    """Version directories, oldest first (in-progress `.incoming-*` ones are not versions)."""
    if not model_dir.is_dir():
        return []
    return sorted(p.name for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


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


def load_version(model_dir: Path, version: str | None = None) -> tuple[Any, dict[str, Any]]:
    """The named version, or the newest complete one; verified before it is unpickled."""
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
    return joblib.load(model_dir / version / metadata["artifact"]), metadata
