"""The compiled scorer against scikit-learn: bit for bit, on the inputs where it would slip first."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline

from data_science import compiled
from data_science.compiled import CompileError, Engine, Table, Walk
from data_science.features import FEATURES, SCHEMA
from data_science.model import CategoryCodes, CustomerModel

# Both methods, on the same model: the table (what the customer model serves) and the walk
# (what a model whose grid is too large would serve).
METHODS = {compiled.TABLE: compiled.MAX_CELLS, compiled.WALK: 0}


@pytest.fixture(scope="module", params=list(METHODS))
def engine(request: pytest.FixtureRequest, fitted: CustomerModel) -> Engine:
    engine = Engine.build(fitted.pipeline_, max_cells=METHODS[request.param])
    assert engine.name == request.param
    return engine


def sklearn_p(model: CustomerModel, frame: pd.DataFrame) -> np.ndarray:
    return model.pipeline_.predict_proba(frame[list(FEATURES)])[:, 1]


def around_thresholds(engine: Engine, rows: int, seed: int) -> pd.DataFrame:
    """`probe_frame`'s odd values, half the numbers replaced by uniform draws around the thresholds."""
    frame = compiled.probe_frame(engine, rows, seed)
    rng = np.random.default_rng(seed)
    for name, thresholds in zip(engine.features, engine.thresholds, strict=True):
        if name in engine.encoder.categories or not len(thresholds):
            continue
        low, high = thresholds.min(), thresholds.max()
        margin = (high - low) / 10 or 1.0
        uniform = rng.uniform(low - margin, high + margin, rows)
        frame[name] = np.where(rng.random(rows) < 0.5, uniform, frame[name])
    return frame


def odd_rows(engine: Engine) -> pd.DataFrame:
    """Named odd inputs, one feature at a time around the example request."""
    example = dict(SCHEMA.example)
    rows = [
        {name: None for name in FEATURES},  # NaN in every feature
        {**example, "attr_b": "never-seen"},
        {**example, "attr_b": None},
        {**example, "attr_b": ""},
    ]
    for name, thresholds in zip(engine.features, engine.thresholds, strict=True):
        if name in engine.encoder.categories:
            rows += [{**example, name: c} for c in engine.encoder.categories[name]]
            continue
        for t in thresholds:
            rows += [{**example, name: v} for v in (t, np.nextafter(t, np.inf), np.nextafter(t, -np.inf))]
        rows += [{**example, name: v} for v in (0.0, -0.0, 1e300, -1e300, -5.0, None)]
    frame = pd.DataFrame(rows)
    for name in SCHEMA.numeric:
        frame[name] = frame[name].astype("float64")
    return frame


def test_bit_identical_to_scikit_learn_on_rows_around_every_threshold(engine, fitted) -> None:
    frame = around_thresholds(engine, 300_000, seed=7)
    got = engine.proba(compiled.columns_of(frame, engine.features))
    assert np.array_equal(got, sklearn_p(fitted, frame))
    # The draws did land on the thresholds, their neighbours and the odd values.
    scd_a = frame["scd_a"].to_numpy()
    assert np.isin(engine.thresholds[2], scd_a).all() and np.isin(np.nextafter(engine.thresholds[2], 1), scd_a).all()
    assert np.isnan(scd_a).any() and (scd_a == 1e300).any() and np.signbit(scd_a[scd_a == 0]).any()


def test_named_odd_inputs_score_as_scikit_learn_in_a_batch_and_one_by_one(engine, fitted) -> None:
    frame = odd_rows(engine)
    expected = sklearn_p(fitted, frame)
    columns = compiled.columns_of(frame, engine.features)
    assert np.array_equal(engine.proba(columns), expected)
    one_by_one = [engine.proba({n: c[i : i + 1] for n, c in columns.items()})[0] for i in range(len(frame))]
    assert np.array_equal(np.array(one_by_one), expected)


def test_verify_reports_exactness_and_catches_a_wrong_engine(engine, fitted) -> None:
    frame = compiled.probe_frame(engine, 20_000, seed=1)
    check = compiled.verify(engine, fitted.pipeline_, frame, fitted.threshold_)
    assert check.passed and check.bit_identical and check.max_abs_diff == 0.0 and check.label_flips == 0
    assert check.summary()["rows"] == 20_000
    method = engine.method
    if isinstance(method, Table):
        nudged: Table | Walk = Table(method.thresholds, method.table + 1e-9)
        flipped: Table | Walk = Table(method.thresholds, 1 - method.table)
    else:
        arrays = dict(vars(method))
        nudged = Walk(**{**arrays, "baseline": method.baseline + 1e-9})
        flipped = Walk(**{**arrays, "value": -method.value, "baseline": -method.baseline})
    small = compiled.verify(
        Engine(engine.encoder, nudged, engine.thresholds, engine.trees), fitted.pipeline_, frame, 0.5
    )
    assert not small.passed and 1e-12 < small.max_abs_diff < 1e-8
    wrong = compiled.verify(
        Engine(engine.encoder, flipped, engine.thresholds, engine.trees), fitted.pipeline_, frame, 0.5
    )
    assert not wrong.passed and wrong.label_flips > 0
    assert "label flip(s) at threshold 0.5" in wrong.why_not("the holdout")


def test_categories_are_coded_exactly_as_category_codes(fitted) -> None:
    encoder = Engine.build(fitted.pipeline_).encoder
    prep: CategoryCodes = fitted.pipeline_.named_steps["prep"]
    odd = np.array(["a", "b", None, np.nan, "", "A", "never-seen", np.str_("c"), "d ", "d"], dtype=object)
    for values in (odd[:1], odd[:3], odd, np.tile(odd, 100)):  # the few-row path and the vectorised one
        frame = pd.DataFrame({name: np.zeros(len(values)) for name in FEATURES}).assign(attr_b=values)
        expected = prep.transform(frame)[:, list(FEATURES).index("attr_b")]
        assert np.array_equal(encoder.column("attr_b", values), expected, equal_nan=True)


def test_saved_without_pickle_and_loaded_equal(engine, fitted, tmp_path: Path) -> None:
    path = tmp_path / compiled.FILE
    engine.save(path)
    with np.load(path, allow_pickle=False) as saved:
        assert all(saved[name].dtype != object for name in saved.files)
        spec = json.loads(str(saved["spec"]))
    assert spec["engine"] == engine.name and spec["features"] == list(FEATURES)
    loaded = Engine.load(path)
    assert loaded.name == engine.name and loaded.encoder.categories == engine.encoder.categories
    frame = compiled.probe_frame(engine, 10_000, seed=2)
    assert np.array_equal(loaded.proba(compiled.columns_of(frame, FEATURES)), sklearn_p(fitted, frame))


def test_a_file_that_is_no_engine_is_refused_clearly(fitted, tmp_path: Path) -> None:
    path = tmp_path / compiled.FILE
    path.write_bytes(b"not a zip")
    with pytest.raises(CompileError, match=r"scoring\.npz cannot be read"):
        Engine.load(path)
    table = Engine.build(fitted.pipeline_)
    walk = Engine.build(fitted.pipeline_, max_cells=0)

    def resave(engine: Engine, **changes: np.ndarray) -> None:
        """The engine's file with some arrays replaced."""
        engine.save(path)
        with np.load(path, allow_pickle=False) as saved:
            arrays = {name: saved[name] for name in saved.files}
        with path.open("wb") as f:
            np.savez(f, **{**arrays, **changes})

    newer = {"format": 99, "engine": compiled.TABLE}
    resave(table, spec=np.array(json.dumps(newer)))
    with pytest.raises(CompileError, match="has format 99; this code reads format 1"):
        Engine.load(path)
    assert isinstance(table.method, Table)
    resave(table, table=table.method.table[:-1])
    with pytest.raises(CompileError, match=r"a table of \d+ cells for a grid of"):
        Engine.load(path)
    assert isinstance(walk.method, Walk)
    left = walk.method.left.copy()
    left[0] = walk.method.roots[1]  # tree 0's root points into tree 1
    resave(walk, left=left)
    with pytest.raises(CompileError, match="`left` children leave their tree"):
        Engine.load(path)


def multiclass_pipeline(frame: pd.DataFrame) -> Pipeline:
    labels = frame["idx"] % 3
    return Pipeline([("prep", CategoryCodes()), ("model", HistGradientBoostingClassifier(max_iter=5))]).fit(
        frame, labels
    )


def test_what_cannot_be_compiled_exactly_is_refused_with_the_reason(feature_frame) -> None:
    with pytest.raises(CompileError, match="binary classifiers only: this one has 3 classes"):
        Engine.build(multiclass_pipeline(feature_frame))
    with pytest.raises(CompileError, match=r"a fitted Pipeline\(CategoryCodes, HistGradientBoostingClassifier\)"):
        Engine.build(HistGradientBoostingClassifier())
    native = Pipeline(
        [("prep", CategoryCodes()), ("model", HistGradientBoostingClassifier(max_iter=20, categorical_features=[1]))]
    )
    # attr_b's codes matter out of order (b and d against a and c): the trees split them natively.
    labels = feature_frame["attr_b"].isin(["b", "d"]).astype(int)
    with pytest.raises(CompileError, match="native categorical splits are not compiled"):
        Engine.build(native.fit(feature_frame, labels))


def test_the_walk_is_compiled_once_single_threaded_and_releases_the_gil() -> None:
    kernel = compiled.kernel()
    assert kernel is compiled.kernel()
    assert kernel.targetoptions.get("nogil") is True and not kernel.targetoptions.get("parallel")
    assert len(kernel.signatures) == 1


def test_a_single_row_scores_in_plain_python_as_the_batch_does(engine, fitted) -> None:
    """`proba_one` (a request's row, the table read in plain Python) gives the batch's float for
    every odd row, from arrays or lists, and stays out of the way where it does not apply: more
    rows, a missing feature, columns of different lengths, the walk."""
    frame = odd_rows(engine)
    expected = sklearn_p(fitted, frame)
    columns = compiled.columns_of(frame, engine.features)
    for i in range(len(frame)):
        one = {n: c[i : i + 1] for n, c in columns.items()}
        got = engine.proba_one(one)
        if isinstance(engine.method, Table):
            assert isinstance(got, float) and got == expected[i]
            assert engine.proba_one({n: list(c) for n, c in one.items()}) == expected[i]
        else:
            assert got is None
        assert engine.proba(one).dtype == np.float64 and engine.proba(one)[0] == expected[i]
    assert engine.proba_one({n: c[:2] for n, c in columns.items()}) is None
    assert engine.proba_one({n: c[:1] for n, c in list(columns.items())[1:]}) is None
    uneven = {n: c[:1] for n, c in columns.items()} | {engine.features[-1]: columns[engine.features[-1]][:2]}
    assert engine.proba_one(uneven) is None
    with pytest.raises(CompileError, match="feature columns differ in length"):
        engine.proba(uneven)
