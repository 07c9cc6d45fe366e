"""The model being served, replaced in the background when a newer version appears.

Each gunicorn worker has one holder. A background thread polls the model directory; a new
version is loaded and verified off the request path, then swapped in with one reference
assignment. A request takes the reference once and uses that model throughout, so a switch
never fails or mixes versions within a request.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from data_science import registry
from data_science.model import CustomerModel
from deployment import metrics
from machine_learning_engineering.prediction_log import PredictionLogger

log = logging.getLogger(__name__)


class ModelHolder:
    def __init__(self, model_dir: Path, poll_seconds: float, logger: PredictionLogger | None = None) -> None:
        self.model_dir = model_dir
        self.poll_seconds = poll_seconds
        self.logger = logger
        self.model: CustomerModel | None = None
        self.problem: str | None = "no model loaded yet"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Load the newest complete version if it is not the one served; True if it switched."""
        newest = registry.versions(self.model_dir)
        current = self.model.version_ if self.model else None
        if newest and newest[-1] == current:
            return False
        try:
            model = CustomerModel.load(self.model_dir)
        except registry.ModelVersionError as exc:
            if str(exc) != self.problem:
                log.warning("%s", exc)
            self.problem = str(exc) if self.model is None else None
            return False
        if model.version_ == current:
            return False  # the newer directory was incomplete or corrupted: keep serving
        model.prediction_logger = self.logger
        self.model, self.problem = model, None
        metrics.serving(model.version_ or "unversioned", current)
        log.info("serving model version %s (replacing %s)", model.version_, current or "nothing")
        return True

    def start(self) -> None:
        self.refresh()
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
