"""MLEModel: the contract between a model and everything that trains, versions and serves it.

Serving, the registry and the training job rely on this class alone, so a new model is a new
subclass, not a change to the stack. A subclass declares its `feature_schema` and implements
`fit` and `score`; versioning (`save`, `load`), validation, the out-of-distribution gate and
its reference sample (`fit_reference`, `check_distribution`) and logged predictions come with
the contract. `predict_with_logging` is the one path production predictions take: check,
predict, record, return.

The API never names a concrete model: it serves the class that configuration names
(`MODEL_CLASS`: an entry point of the `companydata.models` group, or `module:Class`),
resolved by `model_class`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from machine_learning_engineering import ood, registry
from machine_learning_engineering.errors import MLEError
from machine_learning_engineering.prediction_log import PredictionLogger, records_for
from machine_learning_engineering.schema import FeatureSchema

# Where model packages announce their MLEModel subclasses ([project.entry-points."companydata.models"]).
ENTRY_POINT_GROUP = "companydata.models"
DEFAULT_MODEL = "customer"

Labels = np.ndarray[Any, np.dtype[np.int64]]
Probabilities = np.ndarray[Any, np.dtype[np.float64]]
# Validated features as columns, one array per feature of `feature_schema`, in its order: numbers
# as float64 with NaN for missing, categories as object arrays of str with None for missing. The
# fast path (`score_columns`) takes these: no DataFrame between a request and the model.
Columns = Mapping[str, np.ndarray[Any, Any]]


class ModelClassError(MLEError, LookupError):
    """MODEL_CLASS names nothing loadable, or something that is not an MLEModel."""


class MLEModel(ABC):
    """A binary classifier behind one contract.

    Implement `fit` and `score`, set `feature_schema`; override `known_categories`,
    `decision_threshold`, `metadata` and `check_fitted` to tell servers more.
    `version_` names the saved version the model came from (None until saved or loaded),
    `metadata_` what was recorded with it. `ood_gate_` is its out-of-distribution gate and
    `reference_` its reference sample (both None until `fit_reference`, and for versions saved
    before gates existed); they are saved beside the artifact, not in it.
    """

    # The model's inputs, declared once (see machine_learning_engineering.schema).
    feature_schema: ClassVar[FeatureSchema]
    # Libraries whose exact version a saved artifact needs (pickled estimators): loading a
    # version trained with another one is refused, naming both versions.
    pinned_libraries: ClassVar[tuple[str, ...]] = ()

    version_: str | None = None
    metadata_: dict[str, Any]
    prediction_logger: PredictionLogger | None = None
    ood_gate_: ood.OODGate | None = None
    reference_: pd.DataFrame | None = None

    # --- what a subclass implements ----------------------------------------------------------

    @abstractmethod
    def fit(self, data: pd.DataFrame) -> Self:
        """Learn from a frame holding the features and the label; return self."""

    @abstractmethod
    def score(self, features: pd.DataFrame) -> tuple[Labels, Probabilities]:
        """Labels and P(label = 1) per row of an already validated frame (`feature_schema.validate`)."""

    # --- what a server may ask ---------------------------------------------------------------

    def known_categories(self) -> dict[str, list[str]]:
        """Per categorical feature, the values seen in training; others are scored as missing."""
        return {}

    @property
    def decision_threshold(self) -> float | None:
        """The probability from which the label is 1, when the model has one."""
        return None

    def check_fitted(self) -> list[str]:
        """Problems that make a loaded artifact unfit to serve (empty when fine)."""
        return []

    def score_columns(self, columns: Columns) -> tuple[Labels, Probabilities]:
        """`score` on validated columns (`Columns`): the path the API and batch scoring take.
        By default a frame through `score`; a model with a faster exact path overrides it."""
        return self.score(pd.DataFrame({name: columns[name] for name in self.feature_schema.names}, copy=False))

    def scoring(self) -> dict[str, Any]:
        """Which path scores this loaded model, and why (GET /model shows it)."""
        return {"path": "python", "engine": f"{type(self).__name__}.score"}

    def version_files(self) -> dict[str, Callable[[Path], None]]:
        """Extra files to save into a new version (name -> writer of that path), each hashed in
        its metadata's `files` and verified on load (`after_load` finds them). None by default."""
        return {}

    def after_load(self, model_dir: Path, metadata: dict[str, Any]) -> None:
        """Called by `load` once the version is verified: attach what `version_files` saved
        (`registry.version_file(model_dir, metadata, name)` gives a verified path or None)."""
        return None

    def metadata(self) -> dict[str, Any]:
        """What is recorded with a saved version (and GET /model shows). Extend with super()."""
        cls = type(self)
        return {
            "model": cls.__name__,
            "model_class": f"{cls.__module__}:{cls.__qualname__}",
            "features": self.feature_schema.kinds,
            "categories": self.known_categories(),
            "threshold": {"value": self.decision_threshold},
        }

    # --- what the contract provides ----------------------------------------------------------

    def fit_reference(
        self, data: pd.DataFrame, *, seed: int = 0, sample_rows: int = ood.REFERENCE_ROWS, label: str = ood.LABEL
    ) -> Self:
        """After `fit`, from the same training rows: fit the out-of-distribution gate and keep a
        reference sample (up to `sample_rows` rows, seeded: the features, the `label` column
        when the data has one, and this model's prediction and probability). `save` writes
        both into the version."""
        clash = {ood.LABEL, ood.PREDICTION, ood.PROBABILITY} & set(self.feature_schema.names)
        if clash:
            raise ood.GateError(f"feature(s) {', '.join(sorted(clash))} would clash with the reference's own columns")
        self.ood_gate_ = ood.OODGate.fit(self.feature_schema, data, seed=seed)
        sample = data if len(data) <= sample_rows else data.sample(n=sample_rows, random_state=seed).sort_index()
        reference = self.feature_schema.validate(sample)
        labels, probabilities = self.score(reference)
        if label in sample.columns:
            reference[ood.LABEL] = sample[label].to_numpy()
        reference[ood.PREDICTION] = np.asarray(labels)
        reference[ood.PROBABILITY] = np.asarray(probabilities, dtype="float64")
        self.reference_ = reference
        return self

    def check_distribution(self, rows: pd.DataFrame | Columns | Sequence[Mapping[str, Any]]) -> list[ood.Verdict]:
        """Per row (a validated frame, validated `Columns`, or validated values as mappings), the
        gate's verdict; for a version without a gate, `ood.NO_GATE` (in_distribution None,
        reason "no gate in this version")."""
        gate = self.ood_gate_
        if isinstance(rows, pd.DataFrame):
            return gate.check_frame(rows) if gate is not None else [ood.NO_GATE] * len(rows)
        if isinstance(rows, Mapping):
            if gate is not None:
                return gate.check_columns(rows)
            return [ood.NO_GATE] * len(rows[self.feature_schema.names[0]])
        return ood.verdicts(gate, rows)

    def predict_labels_and_probabilities(self, features: pd.DataFrame) -> tuple[Labels, Probabilities]:
        """Labels and P(label = 1) per row of any frame: validated first."""
        return self.score(self.feature_schema.validate(features))

    def predict(self, features: pd.DataFrame) -> Labels:
        """One label per row."""
        return self.predict_labels_and_probabilities(features)[0]

    def predict_with_logging(
        self,
        client_idx: Any,
        features: pd.DataFrame | Columns,
        *,
        with_probability: bool = False,
        api_key: str | None = None,
        validated: bool = False,
        verdicts: Sequence[ood.Verdict] | None = None,
    ) -> Any:
        """Predict, record each prediction, and return the label(s).

        The challenge's API calls `predict_with_logging(data["idx"], pd.DataFrame([data["features"]]))`:
        one client idx and a one-row frame, returning that row's label. A sequence of idx with a
        frame of as many rows returns an array of labels. `features` may also be `Columns` (one
        array per feature): the API's and batch scoring's path, scored by `score_columns` with
        no DataFrame anywhere. `with_probability=True` returns (labels, probabilities) instead,
        so a caller that shows the probability still takes this one logged path. `api_key` names
        the caller's key in the record; a request of one row is logged as one row of `predictions`,
        of more rows as one record of the whole request in `prediction_batches` (the same version,
        key and time for all; the view `prediction_log` shows one row per prediction of both).
        `validated=True` says the features are validated
        already (the API's request model; `feature_schema.validate_columns` or `frame`), so they
        are not checked a second time. Each record carries the row's features as validated
        (JSON) and its out-of-distribution verdict: `verdicts` when the caller has them already
        (the API asks before it scores), else the gate's (`check_distribution`). Recording never
        raises: the logger buffers while its database is away.
        """
        single = np.ndim(client_idx) == 0
        idx: Any = [client_idx] if single else client_idx
        schema = self.feature_schema
        if isinstance(features, pd.DataFrame):
            clean = features if validated else schema.validate(features)
            columns: Columns = {name: clean[name].to_numpy() for name in schema.names}  # NaN: missing
        else:
            columns = features if validated else schema.validate_columns(features, np.asarray(idx))
            clean = None
        rows = len(columns[schema.names[0]])
        if len(idx) != rows:
            raise ValueError(f"{len(idx)} client idx for {rows} feature rows")
        if verdicts is not None and len(verdicts) != rows:
            raise ValueError(f"{len(verdicts)} verdicts for {rows} feature rows")
        if verdicts is None:
            verdicts = self.check_distribution(columns)
        labels, probabilities = self.score(clean) if clean is not None else self.score_columns(columns)
        logger = self.prediction_logger or PredictionLogger.default()
        version = self.version_ or "unversioned"
        # One row: one row of `predictions`; more: the request whole, one row of `prediction_batches`.
        logger.log(records_for(idx, labels, probabilities, version, columns, schema.kinds, api_key, verdicts))
        if with_probability:
            if single:
                return labels[0].item(), float(probabilities[0])
            return labels, probabilities
        return labels[0].item() if single else labels

    def save(self, model_dir: Path, extra: dict[str, Any] | None = None) -> Path:
        """A new candidate version under model_dir (the champion changes only through
        `registry.promote`); `extra` adds to the metadata. The gate and the reference sample,
        when fitted, are written into the same version (in its manifest) and summarised in its
        metadata (`ood`, `reference`). Returns its directory."""
        metadata = {**self.metadata(), **(extra or {})}
        files: dict[str, Any] = dict(self.version_files())
        gate, reference = self.ood_gate_, self.reference_
        if gate is not None:
            files[ood.GATE_FILE] = gate.save
            metadata["ood"] = gate.summary()
        if reference is not None:
            files[ood.REFERENCE_FILE] = lambda path: ood.write_reference(reference, path)
            metadata["reference"] = {
                "file": ood.REFERENCE_FILE,
                "rows": len(reference),
                "columns": ood.reference_columns(self.feature_schema, reference),
                "what": "a seeded sample of the training rows: features, label, this version's prediction",
            }
        path = registry.save_version(Path(model_dir), self, metadata, files)
        self.version_ = path.name
        self.metadata_ = registry.read_metadata(Path(model_dir), path.name)
        return path

    @classmethod
    def load(cls, model_dir: Path, version: str | None = None) -> Self:
        """The named version, else the champion, else (no champion yet) the newest complete one.
        Anything that stops it from loading is a registry.ModelVersionError naming the version."""
        model, metadata = registry.load_version(Path(model_dir), version, cls)
        if not isinstance(model, cls):
            raise registry.ModelVersionError(
                f"model version {metadata['version']} holds a {type(model).__name__}, not a {cls.__name__}"
            )
        model.version_ = metadata["version"]
        model.metadata_ = metadata
        gate = registry.version_file(Path(model_dir), metadata, ood.GATE_FILE)
        try:
            model.ood_gate_ = None if gate is None else ood.OODGate.load(gate, model.feature_schema)
        except ood.GateError as exc:
            raise registry.ModelVersionError(f"model version {metadata['version']}: its gate: {exc}") from None
        model.after_load(Path(model_dir), metadata)
        return model

    @classmethod
    def load_reference(cls, model_dir: Path, version: str) -> pd.DataFrame | None:
        """The version's reference sample with its types (verified), or None if it has none."""
        metadata = registry.read_metadata(Path(model_dir), version)
        path = registry.version_file(Path(model_dir), metadata, ood.REFERENCE_FILE)
        if path is None:
            return None
        return ood.read_reference(path, metadata.get("reference", {}).get("columns", cls.feature_schema.kinds))

    def __getstate__(self) -> dict[str, Any]:
        # A logger holds a thread and a connection, the metadata lives beside the artifact:
        # both belong to the process, not the pickle. So do the gate and the reference sample,
        # which are saved as files of their own.
        state = self.__dict__.copy()
        for name in ("prediction_logger", "metadata_", "ood_gate_", "reference_"):
            state.pop(name, None)
        return state


def model_class(spec: str = DEFAULT_MODEL) -> type[MLEModel]:
    """The MLEModel subclass `spec` names: an entry point of `companydata.models`, or `module:Class`."""
    if ":" in spec:
        module_name, _, attribute = spec.partition(":")
        try:
            found: Any = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ModelClassError(f"MODEL_CLASS={spec!r} cannot be imported: {exc}") from None
    else:
        matches = entry_points(group=ENTRY_POINT_GROUP, name=spec)
        if not matches:
            known = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
            raise ModelClassError(
                f"MODEL_CLASS={spec!r} is no installed model (entry points {ENTRY_POINT_GROUP}: "
                f"{', '.join(known) or 'none'}); or give module:Class"
            )
        try:
            found = next(iter(matches)).load()
        except Exception as exc:  # a broken plugin must name itself
            raise ModelClassError(f"MODEL_CLASS={spec!r} cannot be loaded: {type(exc).__name__}: {exc}") from None
    if not (isinstance(found, type) and issubclass(found, MLEModel)):
        raise ModelClassError(f"MODEL_CLASS={spec!r} is {found!r}, not an MLEModel subclass")
    return found
