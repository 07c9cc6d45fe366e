"""The out-of-distribution gate on its own: what it flags, what it never flags, its compiled
check against the rules written out in plain Python, its forest against scikit-learn's, and
its file."""

from __future__ import annotations

import bisect
import copy
import io
import json
import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import IsolationForest

from machine_learning_engineering import ood
from machine_learning_engineering.ood import Forest, GateError, OODGate
from machine_learning_engineering.schema import Feature, FeatureSchema

# The customer model's features, declared here as any model would (mle imports no stage).
CUSTOMER = FeatureSchema(
    (
        Feature("attr_a", "integer", "a count", 1),
        Feature("attr_b", "category", "a category", "c"),
        Feature("scd_a", "number", "a score", 0.5),
        Feature("scd_b", "integer", "a level", 3),
    )
)
# A model whose features depend on each other: each plan has its own ages, y follows x.
PLANS = FeatureSchema(
    (
        Feature("age", "integer", "years", 30, 0, 150),
        Feature("plan", "category", "the plan", "gold"),
        Feature("x", "number", "a measure", 0.5),
        Feature("y", "number", "another, close to x", 0.5),
    )
)
ORDINARY = {"attr_a": 3, "attr_b": "c", "scd_a": 0.55, "scd_b": 3}


def plans(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    plan = np.where(rng.random(n) < 0.5, "gold", "basic")
    x = rng.random(n)
    return pd.DataFrame(
        {
            "age": np.where(plan == "gold", rng.integers(20, 41, n), rng.integers(60, 81, n)),
            "plan": plan,
            "x": x,
            "y": x + rng.normal(0, 0.02, n),
        }
    )


@pytest.fixture(scope="module")
def split(feature_frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The generated data's training rows and holdout (by client idx, as training splits)."""
    held = feature_frame["idx"] % 5 == 0
    return feature_frame[~held], feature_frame[held]


@pytest.fixture(scope="module")
def gate(split) -> OODGate:
    return OODGate.fit(CUSTOMER, split[0], seed=7)


@pytest.fixture(scope="module")
def plan_gate() -> OODGate:
    return OODGate.fit(PLANS, plans(6000, seed=1), seed=0)


def one(gate: OODGate, **values) -> ood.Verdict:
    (verdict,) = gate.check([values])
    return verdict


def test_ordinary_rows_pass_and_the_holdout_flag_rate_stays_low(gate, split) -> None:
    assert one(gate, **ORDINARY) == ood.IN_DISTRIBUTION
    detector = gate.spec["detector"]
    assert 0.005 <= detector["training_flag_rate"] <= 0.0101 and detector["flag_rate_target"] == 0.01
    # Ordinary rows the gate never saw: about the training rate, well below 3 %.
    assert gate.flag_rate(CUSTOMER.validate(split[1])) < 0.03


def test_a_number_outside_the_training_range_names_feature_value_and_range(gate, split) -> None:
    low, high = float(split[0]["scd_a"].min()), float(split[0]["scd_a"].max())
    verdict = one(gate, **{**ORDINARY, "attr_a": 12, "scd_a": 1e30})
    assert verdict.in_distribution is False
    assert verdict.findings[:2] == (
        ood.Finding(("attr_a",), "attr_a=12 outside [1, 5] seen in training"),
        ood.Finding(("scd_a",), f"scd_a=1e+30 outside [{low!r}, {high!r}] seen in training"),
    )
    assert one(gate, **{**ORDINARY, "attr_a": 0}).reasons[0] == "attr_a=0 outside [1, 5] seen in training"
    assert one(gate, **{**ORDINARY, "attr_a": 5}) == ood.IN_DISTRIBUTION  # the bounds are in range


def test_a_category_never_seen_in_training_is_named(gate) -> None:
    verdict = one(gate, **{**ORDINARY, "attr_b": "zz"})
    assert verdict.in_distribution is False
    assert verdict.findings[0] == ood.Finding(("attr_b",), "attr_b='zz' not seen in training")


def test_a_category_seen_with_numbers_it_never_had_is_a_rare_combination(plan_gate) -> None:
    # Each value is in range on its own (ages 20-80 were seen, gold was seen), never together.
    verdict = one(plan_gate, age=70, plan="gold", x=0.5, y=0.5)
    assert verdict.in_distribution is False
    (finding,) = verdict.findings
    assert finding.features == ("age", "plan")
    assert finding.reason.startswith("age=70 with plan='gold': never together in training (no row had age in (")
    assert finding.reason.endswith("] and plan='gold')")
    assert one(plan_gate, age=30, plan="gold", x=0.5, y=0.5) == ood.IN_DISTRIBUTION
    assert one(plan_gate, age=70, plan="basic", x=0.5, y=0.5) == ood.IN_DISTRIBUTION


def test_two_numbers_that_never_occurred_together_are_a_rare_combination(plan_gate) -> None:
    # x and y each in range, but training rows have y close to x.
    for x, y in ((0.9, 0.1), (0.6, 0.4), (0.1, 0.8)):
        verdict = one(plan_gate, age=30, plan="gold", x=x, y=y)
        assert verdict.in_distribution is False, (x, y)
        assert verdict.findings[0].features == ("x", "y")
        assert verdict.reasons[0].startswith(f"x={x!r} with y={y!r}: never together in training")


def test_a_combination_rarely_seen_in_training_is_a_rare_combination() -> None:
    frame = plans(6000, seed=2)
    frame.loc[:4, ["plan", "age"]] = ["gold", 75]  # 5 of 6,000 clients are gold and 75
    gate = OODGate.fit(PLANS, frame, seed=0)
    verdict = one(gate, age=75, plan="gold", x=0.5, y=0.5)
    assert verdict.in_distribution is False
    assert verdict.findings[0].features == ("age", "plan")
    assert verdict.reasons[0].startswith("age=75 with plan='gold': rarely together in training (5 of 6,000 rows had")
    assert one(gate, age=30, plan="gold", x=0.5, y=0.5) == ood.IN_DISTRIBUTION


def test_a_row_in_a_sparse_region_of_the_training_data_is_flagged_by_the_forest() -> None:
    # Five numbers: 97 % of the rows in a tight cluster, 3 % scattered thinly over the range.
    rng = np.random.default_rng(4)
    schema = FeatureSchema(tuple(Feature(f"f{i}", "number", "a measure", 0.0) for i in range(5)))
    dense, sparse = rng.normal(0, 0.1, (5820, 5)), rng.uniform(-3, 3, (180, 5))
    gate = OODGate.fit(schema, pd.DataFrame(np.vstack([dense, sparse]), columns=schema.names), seed=0)
    verdict = one(gate, f0=2.0, f1=-2.0, f2=2.0, f3=-2.0, f4=2.0)  # each value within the training range
    assert verdict.in_distribution is False
    (forest,) = [f for f in verdict.findings if f.features == ()]
    assert forest.reason.startswith("unusual combination of values: isolation score ")
    assert forest.reason.endswith("of training rows exceed")
    assert one(gate, **dict.fromkeys(schema.names, 0.05)) == ood.IN_DISTRIBUTION


def test_missing_values_are_never_a_reason(gate, split, plan_gate) -> None:
    names = CUSTOMER.names
    rows = CUSTOMER.validate(split[1]).head(300).to_dict("records")
    ordinary = [row for row, verdict in zip(rows, gate.check(rows), strict=True) if verdict.in_distribution]
    assert len(ordinary) >= 280
    for mask in range(1, 2 ** len(names)):  # every non-empty subset of features missing
        blanked = [{k: (None if mask >> i & 1 else v) for i, (k, v) in enumerate(row.items())} for row in ordinary]
        flagged = [
            row for row, verdict in zip(blanked, gate.check(blanked), strict=True) if not verdict.in_distribution
        ]
        assert len(flagged) <= len(ordinary) * 0.02, (mask, flagged[:3])  # no more than the base rate
    assert one(gate, **dict.fromkeys(names)) == ood.IN_DISTRIBUTION
    assert one(gate, **dict.fromkeys(names, float("nan"))) == ood.IN_DISTRIBUTION  # a frame's missing values
    # x without y is not a pair at all: the missing half is never judged.
    assert one(plan_gate, age=30, plan="gold", x=0.9, y=None) == ood.IN_DISTRIBUTION
    assert one(plan_gate, age=None, plan="gold", x=0.5, y=0.5) == ood.IN_DISTRIBUTION


def test_training_data_with_missing_values_and_a_feature_never_seen(split) -> None:
    frame = split[0].copy()
    frame.loc[frame.index[::10], "attr_b"] = None
    frame["scd_b"] = None  # no client had it in training
    gate = OODGate.fit(CUSTOMER, frame, seed=1)
    assert gate.spec["ranges"]["scd_b"] is None and gate.spec["detector"]["training_flag_rate"] <= 0.0101
    assert one(gate, **{**ORDINARY, "attr_b": None, "scd_b": None}) == ood.IN_DISTRIBUTION
    verdict = one(gate, **ORDINARY)  # any value of a feature training never had is new
    assert verdict.reasons == ["scd_b=3: no value seen in training"]


def reference_verdicts(gate: OODGate, rows: list[dict]) -> list[ood.Verdict]:
    """The gate's rules written out value by value in plain Python, and the forest walked node
    by node: what the compiled check must find, row for row, finding for finding."""
    forest = gate.forest
    verdicts = []
    for row in rows:
        findings, x, cell = [], np.empty(len(gate._features)), {}
        for f in gate._numeric:
            value = row[f.name]
            if value is None or value != value:
                x[f.column] = f.fill
            elif f.low is None:
                x[f.column] = f.fill
                findings.append(f.never_seen(value))
            elif value < f.low or value > f.high:
                x[f.column] = f.low if value < f.low else f.high
                findings.append(f.out_of_range(value))
            else:
                x[f.column] = value
                cell[f.name] = bisect.bisect_left(f.edges, value)
        for f in gate._categorical:
            value = row[f.name]
            if value is None or value != value:
                x[f.column] = f.fill
            elif value not in f.codes:
                x[f.column] = f.fill
                findings.append(f.unseen(value))
            else:
                x[f.column] = cell[f.name] = f.codes[value]
        for pair in gate._pairs:
            a, b = cell.get(pair.first.name), cell.get(pair.second.name)
            if a is not None and b is not None and pair.count(a * pair.second.bins + b) < pair.rare_below:
                findings.append(pair.finding(row[pair.first.name], row[pair.second.name], a, b))
        x32 = x.astype(np.float32).astype(np.float64)
        total = 0.0
        for node in forest.roots:
            while forest.children[node, 0] != node:
                node = forest.children[node, int(x32[forest.feature[node]] > forest.threshold[node])]
            total += forest.value[node]
        score = 2.0 ** (-total / forest.denominator)
        if score > gate.threshold:
            findings.append(ood.Finding((), gate._combination.format(score=score, threshold=gate.threshold)))
        verdicts.append(ood.Verdict(False, tuple(findings)) if findings else ood.IN_DISTRIBUTION)
    return verdicts


def odd_rows(gate: OODGate, schema: FeatureSchema, ordinary: dict, seed: int) -> list[dict]:
    """Rows on every edge the checks have: the range's bounds and just beyond, every bin edge and
    its float neighbours, unseen, missing (None and NaN) and huge values, and mixes of them."""
    rng = np.random.default_rng(seed)
    rows = []
    for f in gate._features:
        if f.kind == "category":
            values = [*f.codes, "zz", "", "A" * 300, None, float("nan")]
        elif f.low is None:
            values = [0.0, None, float("nan"), 1e300]
        else:
            points = [f.low, f.high, *f.edges]
            values = [v for p in points for v in (p, np.nextafter(p, -np.inf), np.nextafter(p, np.inf))]
            values += [None, float("nan"), -0.0, 0.0, -1e300, 1e300, f.low - 1, f.high + 1]
        rows += [{**ordinary, f.name: v} for v in values]
    names = schema.names
    for _ in range(300):  # random mixes of everything above
        rows.append({name: rows[rng.integers(len(rows))][name] for name in names})
    return rows


def test_the_compiled_check_finds_what_the_rules_say_row_for_row(gate, plan_gate, split) -> None:
    for g, schema, ordinary, typical in (
        (gate, CUSTOMER, ORDINARY, CUSTOMER.validate(split[1]).head(300).to_dict("records")),
        (plan_gate, PLANS, {"age": 30, "plan": "gold", "x": 0.5, "y": 0.5}, plans(300, seed=9).to_dict("records")),
    ):
        rows = typical + odd_rows(g, schema, ordinary, seed=5)
        expected = reference_verdicts(g, rows)
        assert sum(v.in_distribution is False for v in expected) > 100  # the odd rows are odd
        assert g.check(rows) == expected
        assert [v for row in rows for v in g.check([row])] == expected  # alone as in a batch
        frame = pd.DataFrame(rows).astype({n: object for n in schema.categorical})
        assert g.check_frame(frame) == expected
        columns = {
            f.name: np.array([None if v != v else v for v in frame[f.name]], dtype=object)
            if f.kind == "category"
            else frame[f.name].to_numpy(dtype=np.float64)
            for f in g._features
        }
        assert g.check_columns(columns) == expected
        assert g.out_of_distribution(columns).tolist() == [v.in_distribution is False for v in expected]
    assert gate.check([]) == [] and gate.check_columns({n: np.zeros(0) for n in CUSTOMER.names}) == []


@pytest.mark.parametrize(("rows", "features", "seed"), [(5000, 4, 0), (300, 3, 1), (20, 2, 2), (40_000, 6, 3)])
def test_the_compiled_forest_scores_exactly_as_scikit_learn(rows, features, seed) -> None:
    rng = np.random.default_rng(seed)
    scale = rng.choice([1e-3, 1.0, 1e4], size=features)
    x = rng.normal(size=(rows, features)) * scale
    forest = IsolationForest(random_state=seed).fit(x)
    ours = Forest.from_sklearn(forest, features)
    # Training rows, new rows, far-away rows, rows sitting on split thresholds.
    queries = np.vstack([x[:2000], rng.normal(size=(500, features)) * scale * 5, ours.threshold[:50, None] * scale])
    queries = queries[np.isfinite(queries).all(axis=1)]
    expected = -forest.score_samples(queries)
    assert np.abs(ours.score(queries) - expected).max() <= 1e-12
    assert np.abs(ours.score(queries[:1]) - expected[:1]).max() <= 1e-12  # one row, as /predict scores it
    saved = Forest.from_arrays(
        ours.arrays(), {"depth": ours.depth, "denominator": ours.denominator, "n_features": features}
    )
    assert np.abs(saved.score(queries) - expected).max() <= 1e-12


def test_the_gates_own_forest_matches_scikit_learn_on_its_input(gate, split) -> None:
    frame = CUSTOMER.validate(split[1])
    estimator = IsolationForest(n_estimators=ood.TREES, random_state=7).fit(
        ood._matrix(gate._features, CUSTOMER.validate(split[0]))
    )
    assert np.abs(gate.scores(frame) + estimator.score_samples(ood._matrix(gate._features, frame))).max() <= 1e-12


def test_saved_and_loaded_it_judges_alike(gate, split, tmp_path) -> None:
    path = tmp_path / ood.GATE_FILE
    gate.save(path)
    loaded = OODGate.load(path, CUSTOMER)
    rows = [*CUSTOMER.validate(split[1]).head(500).to_dict("records"), {**ORDINARY, "attr_a": 12}]
    assert loaded.check(rows) == gate.check(rows)
    assert loaded.summary() == gate.summary()
    json.dumps(gate.summary())  # metadata.json holds it
    with np.load(path, allow_pickle=False) as saved:  # no pickle inside
        assert "spec" in saved.files and "forest_children" in saved.files


def _resave(path, tmp_path, **changes) -> object:
    with np.load(path, allow_pickle=False) as saved:
        arrays = {name: saved[name] for name in saved.files}
    spec = json.loads(str(arrays["spec"]))
    for key, value in changes.items():
        if key == "spec":
            spec = value(spec)
        elif value is None:
            del arrays[key]
        else:
            arrays[key] = value(arrays[key])
    arrays["spec"] = np.array(json.dumps(spec))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(buffer.getvalue())
    return bad


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"spec": lambda s: {**s, "format": 99}}, "has format 99; this code reads format 1"),
        ({"spec": lambda s: {**s, "features": {"attr_a": "integer"}}}, "was fitted for features"),
        ({"forest_children": lambda a: a + 10**6}, "points at nodes it does not have"),
        ({"forest_feature": lambda a: a + 9}, "splits on features beyond its 4"),
        ({"spec": lambda s: {**s, "forest": {**s["forest"], "depth": 1}}}, "paths longer than its depth 1"),
        ({"forest_value": lambda a: a[:-1]}, "forest arrays do not fit together"),
        ({"pair:attr_a:scd_b": None}, "lists the pair attr_a, scd_b but has no cells for it"),
        ({"pair:attr_a:scd_b": lambda a: a[::-1]}, "cells for the pair attr_a, scd_b are not a sorted list"),
        ({"count:attr_a:scd_b": lambda a: a[1:]}, "not a sorted list with counts"),
    ],
)
def test_a_damaged_gate_file_is_refused_saying_why(gate, tmp_path, changes, message) -> None:
    path = tmp_path / ood.GATE_FILE
    gate.save(path)
    with pytest.raises(GateError, match=message):
        OODGate.load(_resave(path, tmp_path, **changes), CUSTOMER)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(GateError, match=r"junk\.npz cannot be read"):
        OODGate.load(tmp_path / "junk.npz", CUSTOMER)


def test_the_reference_sample_keeps_its_types(tmp_path) -> None:
    frame = pd.DataFrame(
        {
            "attr_a": [1.0, np.nan],
            "attr_b": ["NA", np.nan],  # a category spelled like pandas' missing marker stays text
            "scd_a": [0.1234567890123, 2.0],
            "scd_b": [3.0, 4.0],
            "label": [1, 0],
            "prediction": [0, 1],
            "probability": [0.25, 0.75],
        }
    )
    path = tmp_path / ood.REFERENCE_FILE
    ood.write_reference(frame, path)
    read = ood.read_reference(path, ood.reference_columns(CUSTOMER, frame))
    pd.testing.assert_frame_equal(read, frame, check_dtype=False)
    assert read["attr_b"].tolist()[0] == "NA" and read["label"].dtype == "int64"


# --- the early forest verdict against the full sum ---------------------------------------------


def at_the_threshold(gate: OODGate, rows: list[dict], feature: str, per_row: int = 2) -> list[dict]:
    """Rows whose forest score sits right at the gate's threshold: along `feature`, each row's
    values on both sides of every place where its score crosses the threshold, found by
    bisection down to neighbouring floats (and those neighbours' neighbours)."""
    f = next(f for f in gate._features if f.name == feature)
    grid = np.linspace(f.low, f.high, 200)
    out = []
    for row in rows:
        frame = CUSTOMER.validate(pd.DataFrame([{**row, feature: v} for v in grid]))
        above = gate.scores(frame) > gate.threshold
        for i in np.flatnonzero(above[1:] != above[:-1])[:per_row].tolist():
            low, high = float(grid[i]), float(grid[i + 1])
            while np.nextafter(low, np.inf) < high:
                middle = low + (high - low) / 2
                if middle in (low, high):
                    break
                score = gate.scores(CUSTOMER.validate(pd.DataFrame([{**row, feature: middle}])))[0]
                if (score > gate.threshold) == above[i]:
                    low = middle
                else:
                    high = middle
            for v in (np.nextafter(low, -np.inf), low, high, np.nextafter(high, np.inf)):
                out.append({**row, feature: float(v)})
    return out


def columns_of(schema: FeatureSchema, rows: list[dict]) -> dict[str, np.ndarray]:
    return {
        f.name: np.array([r[f.name] for r in rows], dtype=object if f.kind == "category" else np.float64)
        for f in schema
    }


def test_early_verdicts_equal_the_full_sum_at_the_threshold_and_on_odd_rows(gate, split) -> None:
    """The compiled check stops walking a row's trees once the forest's verdict is certain; on
    rows whose score sits at the threshold (on both sides of where it crosses it, and, with
    the threshold moved onto their scores, equal to it or one float away), on odd values
    (infinities, huge, unseen, missing, bin edges) and on ordinary rows its verdicts and
    reasons must be the full sum's (`reference_verdicts`: every tree walked node by node and
    summed in order), in a batch and row by row."""
    typical = CUSTOMER.validate(split[1]).head(300).to_dict("records")
    frame = CUSTOMER.validate(split[1])
    closest = np.argsort(np.abs(gate.scores(frame) - gate.threshold))[:20]
    edge = at_the_threshold(gate, frame.iloc[closest].to_dict("records"), "scd_a")
    scores = gate.scores(CUSTOMER.validate(pd.DataFrame(edge)))
    assert (scores > gate.threshold).any() and (scores <= gate.threshold).any()
    infinite = [{**ORDINARY, "scd_a": v} for v in (np.inf, -np.inf)] + [{**ORDINARY, "attr_a": -np.inf}]
    rows = typical + edge + odd_rows(gate, CUSTOMER, ORDINARY, seed=11) + infinite
    gates = [gate]
    for score in np.unique(scores)[::5][:4].tolist():  # the threshold on a row's score, and a float either side
        for threshold in (score, np.nextafter(score, -np.inf), np.nextafter(score, np.inf)):
            detector = {**gate.spec["detector"], "threshold": float(threshold)}
            gates.append(OODGate({**gate.spec, "detector": detector}, gate.forest, gate.cells))
            assert (np.abs(scores - threshold) < 1e-9).any()
    columns = columns_of(CUSTOMER, rows)
    singles = [{n: c[i : i + 1] for n, c in columns.items()} for i in range(len(rows))]
    for g in gates:
        expected = reference_verdicts(g, rows)
        assert g.check_columns(columns) == expected
        assert g.out_of_distribution(columns).tolist() == [v.in_distribution is False for v in expected]
        assert [g.check_columns(one)[0] for one in singles] == expected
        assert [g.out_of_distribution(one)[0] for one in singles] == [v.in_distribution is False for v in expected]


def test_most_rows_stop_early_and_a_flagged_row_keeps_its_exact_score(gate, split) -> None:
    """Without reasons to write, most ordinary rows leave the forest before its last tree (their
    score is never completed: NaN); a row the forest flags still states the full sum's score."""
    columns = columns_of(CUSTOMER, CUSTOMER.validate(split[1]).to_dict("records"))
    _, out, scores = gate._run(columns, False)
    assert np.isnan(scores).mean() > 0.9 and gate._parts(out)[0].any()
    _, out, scores = gate._run(columns, True)
    full = gate.scores(CUSTOMER.validate(split[1]))
    forest = full > gate.threshold
    assert np.array_equal(scores[forest], full[forest])  # bit for bit


@pytest.mark.parametrize("threshold", [1.0, 2.0, 1e-300, 0.0, float("nan")])
def test_any_threshold_gets_the_full_sums_verdicts(gate, split, threshold) -> None:
    """At thresholds no score exceeds, every score exceeds, or none that early verdicts can use
    (0, NaN: every row is summed in full) the verdicts are the reference's all the same."""
    moved = OODGate(
        {**gate.spec, "detector": {**gate.spec["detector"], "threshold": threshold}}, gate.forest, gate.cells
    )
    rows = CUSTOMER.validate(split[1]).head(150).to_dict("records") + odd_rows(gate, CUSTOMER, ORDINARY, seed=2)[:150]
    expected = reference_verdicts(moved, rows)
    columns = columns_of(CUSTOMER, rows)
    assert moved.check_columns(columns) == expected
    assert moved.out_of_distribution(columns).tolist() == [v.in_distribution is False for v in expected]


def test_one_row_checks_in_many_threads_at_once_stay_apart(gate, split) -> None:
    """A row alone is judged in arrays its thread keeps: threads checking different rows at the
    same time each get their own row's verdict."""
    import threading

    rows = CUSTOMER.validate(split[1]).head(60).to_dict("records") + odd_rows(gate, CUSTOMER, ORDINARY, seed=4)[:60]
    expected = reference_verdicts(gate, rows)
    columns = [columns_of(CUSTOMER, [row]) for row in rows]
    failures: list[int] = []

    def judge(offset: int) -> None:
        for _ in range(20):
            for i in range(offset, len(rows), 4):
                if gate.check_columns(columns[i]) != [expected[i]]:
                    failures.append(i)

    threads = [threading.Thread(target=judge, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    twin = pickle.loads(pickle.dumps(gate))  # copies and pickles leave the thread's arrays behind
    assert [twin.check_columns(c)[0] for c in columns] == expected == copy.deepcopy(gate).check(rows)


def test_one_row_of_lists_with_none_is_judged_as_its_row(gate) -> None:
    """Columns as lists (None for a missing number or category) take the one-row path too."""
    for row in (
        {"attr_a": None, "attr_b": None, "scd_a": None, "scd_b": 3},
        {"attr_a": 9, "attr_b": "zz", "scd_a": None, "scd_b": None},
    ):
        columns = {name: [value] for name, value in row.items()}
        assert gate.check_columns(columns) == gate.check([row]) == reference_verdicts(gate, [row])
        assert gate.out_of_distribution(columns).tolist() == [gate.check([row])[0].in_distribution is False]
