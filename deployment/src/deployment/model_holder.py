"""The model being served: the registry's champion, switched live, with a safe fallback.

Each gunicorn worker has one holder. A background thread polls the model directory: it stats
the champion pointer (`champion.json`) and the directory itself, and does nothing else while
neither changed (no hashing, no unpickling). When the pointer names a new champion, that
version is loaded, its signature checked and a smoke prediction run off the request path;
only then is it swapped in with one reference assignment. On any failure the old model keeps
serving and the failure is logged once per version (a version never changes, so it is not
tried again).

At boot, or when the champion cannot be loaded, the holder serves a fallback: the newest
earlier champion that loads, else the newest version with skill, else the newest that loads
at all. An artifact that cannot be unpickled (a class or module that no longer exists) is
just one version that cannot serve: the worker boots with another one, or answers 503 with
the reason while none can, and never crash-loops.

`serving` (for /ready and /model): `model_role` ("champion" or "fallback"),
`champion_version` (what the pointer names, or None), `no_skill` (the served version's
evaluation found no skill), `fallback_reason` (why not the champion, or None).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployment import metrics
from machine_learning_engineering import registry
from machine_learning_engineering.model import MLEModel
from machine_learning_engineering.prediction_log import PredictionLogger

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    """One consistent answer to "what serves": replaced as a whole, never edited."""

    model: MLEModel
    role: str  # "champion" or "fallback"
    champion: str | None
    no_skill: bool
    fallback_reason: str | None


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class ModelHolder:
    def __init__(
        self,
        model_class: type[MLEModel],
        model_dir: Path,
        poll_seconds: float,
        logger: PredictionLogger | None = None,
    ) -> None:
        self.model_class = model_class
        self.model_dir = Path(model_dir)
        self.poll_seconds = poll_seconds
        self.logger = logger
        self.problem: str | None = "no model loaded yet"
        self._served: Served | None = None
        self._seen: tuple[Any, ...] | None = None
        self._failed: dict[str, str] = {}  # version -> why it cannot serve (logged once)
        self._skill: dict[str, bool] = {}  # version -> has_skill, from metadata.json (immutable)
        self._logged_reason: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def model(self) -> MLEModel | None:
        served = self._served
        return served.model if served else None

    @property
    def serving(self) -> dict[str, Any]:
        """What /ready and /model add: which role the served version has, and why."""
        served = self._served
        if served is None:
            return {"model_role": None, "champion_version": None, "no_skill": None, "fallback_reason": self.problem}
        return {
            "model_role": served.role,
            "champion_version": served.champion,
            "no_skill": served.no_skill,
            "fallback_reason": served.fallback_reason,
        }

    def _changed(self) -> bool:
        """Two stats: the pointer file and the directory (a new version is a new entry)."""
        seen = (_stat(self.model_dir / registry.CHAMPION), _stat(self.model_dir))
        if seen == self._seen:
            return False
        self._seen = seen
        return True

    def refresh(self) -> bool:
        """Serve the champion if it changed (or the best fallback); True if the served version changed."""
        if not self._changed():
            return False
        try:
            pointer = registry.champion_pointer(self.model_dir)
        except registry.ModelVersionError as exc:
            pointer = None
            self._note(f"the champion pointer is unreadable ({exc})")
        champion = pointer["version"] if pointer else None
        current = self._served
        if champion is not None:
            if current is not None and current.model.version_ == champion:
                if current.role != "champion":
                    return self._serve(current.model, "champion", champion, None)
                return False
            model = self._try(champion)
            if model is not None:
                return self._serve(model, "champion", champion, None)
            reason = f"the champion {champion} cannot serve: {self._failed[champion]}"
            if current is not None:  # keep serving what serves
                return self._serve(current.model, "fallback", champion, reason)
        else:
            reason = "no champion yet: serving the best version that loads"
        for version in self._fallback_order(pointer):
            if current is not None and version == current.model.version_:
                return self._serve(current.model, "fallback", champion, reason)
            model = self._try(version)
            if model is not None:
                return self._serve(model, "fallback", champion, reason)
        if current is None:
            if not registry.versions(self.model_dir):
                self.problem = f"no complete model version in {self.model_dir}; has the training job run?"
            else:
                self.problem = f"no model version in {self.model_dir} can serve: " + "; ".join(self._failed.values())
            self._note(self.problem)
        return False

    def _fallback_order(self, pointer: dict[str, Any] | None) -> list[str]:
        """Earlier champions (newest first), then versions with skill, then the rest (newest first)."""
        on_disk = registry.versions(self.model_dir)
        history = [v for v in reversed(pointer.get("history", [])) if v in on_disk] if pointer else []
        rest = [v for v in reversed(on_disk) if v not in history and (not pointer or v != pointer["version"])]
        return history + [v for v in rest if self._has_skill(v)] + [v for v in rest if not self._has_skill(v)]

    def _has_skill(self, version: str) -> bool:
        if version not in self._skill:
            try:
                metadata = json.loads((self.model_dir / version / registry.METADATA).read_text())
                self._skill[version] = registry.has_skill(metadata)
            except (OSError, ValueError):
                self._skill[version] = False
        return self._skill[version]

    def _try(self, version: str) -> MLEModel | None:
        """The version loaded and verified (signature, smoke prediction), or None, logged once."""
        if version in self._failed:
            return None
        try:
            model, _ = registry.load_verified(self.model_dir, version, self.model_class)
        except Exception as exc:  # whatever an artifact does, this worker keeps serving
            self._failed[version] = str(exc)
            log.error("model version %s cannot serve, not using it: %s", version, exc)
            return None
        return model

    def _serve(self, model: MLEModel, role: str, champion: str | None, reason: str | None) -> bool:
        previous = self._served.model.version_ if self._served else None
        model.prediction_logger = self.logger
        self._served = Served(model, role, champion, registry.flagged_no_skill(model.metadata_), reason)
        self.problem = None
        if reason:
            self._note(f"serving model version {model.version_} as a FALLBACK: {reason}")
        if previous == model.version_:
            return False
        metrics.serving(model.version_ or "unversioned", previous)
        skill = " (NO SKILL)" if self._served.no_skill else ""
        log.info("serving model version %s as %s%s (replacing %s)", model.version_, role, skill, previous or "nothing")
        return True

    def _note(self, message: str) -> None:
        if message != self._logged_reason:
            self._logged_reason = message
            log.error("%s", message)

    def start(self) -> None:
        try:
            self.refresh()
        except Exception:  # never stop a worker from booting: the watcher tries again
            self._seen = None
            log.exception("model refresh failed")
        self._thread = threading.Thread(target=self._watch, name="model-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception:  # the watcher must outlive any surprise; the old model keeps serving
                log.exception("model refresh failed")
