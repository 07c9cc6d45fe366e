"""The model lifecycle: candidates, the promotion gate, the champion pointer, rollback."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from pathlib import Path

import pytest

from data_science import promotion
from data_science.config import TrainSettings
from data_science.model import CustomerModel
from data_science.train import TimeLimitExceeded, train_and_register
from machine_learning_engineering import registry, registry_cli
from machine_learning_engineering.cli import execute
from machine_learning_engineering.registry import ModelVersionError
from testkit.bad_versions import five_feature_version, unimportable_version


@pytest.fixture
def settings(model_dir: Path) -> TrainSettings:
    return TrainSettings(model_dir=model_dir, wait_timeout=1, test_size=0.2, seed=42, params={"max_iter": 60})


def test_truncated_labels_stay_a_candidate_and_the_champion_is_unchanged(feature_frame, settings, caplog) -> None:
    first = train_and_register(feature_frame, settings)
    assert first.promoted and registry.champion(settings.model_dir) == first.path.name
    with caplog.at_level(logging.ERROR):
        truncated = train_and_register(feature_frame.head(1500), settings)  # labels.csv cut short
    assert not truncated.promoted and truncated.exit_code == 0  # a champion serves: Compose goes on
    assert registry.champion(settings.model_dir) == first.path.name
    assert f"NOT PROMOTED: model {truncated.path.name} stays a candidate" in caplog.text
    assert f"worse than the champion {first.path.name}'s" in caplog.text
    assert f"the champion {first.path.name} keeps serving" in caplog.text
    # The champion was scored on the candidate's own holdout rows, which it never trained on.
    assert truncated.decision.checks["holdout_rows"] < 400
    last = registry.events(settings.model_dir, truncated.path.name)[-1]
    assert last["event"] == "rejected" and "worse than the champion" in last["reason"] and last["by"]
    assert registry.status(settings.model_dir, truncated.path.name, registry.champion_pointer(settings.model_dir)) == (
        "rejected"
    )


def test_the_first_version_serves_even_without_skill_but_never_replaces_a_champion(feature_frame, settings) -> None:
    noise = feature_frame.assign(label=feature_frame["label"].sample(frac=1, random_state=1).to_numpy())
    first = train_and_register(noise, settings)  # the real challenge labels: no signal
    pointer = registry.champion_pointer(settings.model_dir)
    assert first.promoted and pointer["version"] == first.path.name and pointer["no_skill"] is True
    assert "flagged NO SKILL" in pointer["reason"]
    good = train_and_register(feature_frame, settings)
    assert good.promoted and registry.champion_pointer(settings.model_dir)["no_skill"] is False
    again = train_and_register(noise, settings)
    assert not again.promoted and "no skill against the no-skill baseline" in again.decision.reasons[0]
    assert registry.champion(settings.model_dir) == good.path.name


def test_versions_that_cannot_serve_are_never_promoted(fitted, feature_frame, model_dir, settings) -> None:
    holdout = feature_frame.tail(1000)
    five = five_feature_version(fitted, model_dir, feature_frame)
    model, metadata = registry.load_version(model_dir, five, CustomerModel)
    decision = promotion.assess(model_dir, model, metadata, holdout)  # no champion: still refused
    assert not decision.promote and "fails the signature check" in decision.reasons[0]
    assert "attr_c" in decision.reasons[0]
    broken = unimportable_version(fitted, model_dir)
    with pytest.raises(ModelVersionError, match=rf"{broken} cannot be loaded: ModuleNotFoundError.*vanished_plugin"):
        CustomerModel.load(model_dir, broken)
    assert execute(registry_cli.main, ["--model-dir", str(model_dir), "promote", broken, "--reason", "try"]) == 1
    assert execute(registry_cli.main, ["--model-dir", str(model_dir), "promote", five, "--reason", "try"]) == 1
    assert registry.champion(model_dir) is None


def test_promote_and_rollback_are_recorded_pointer_changes(fitted, model_dir, monkeypatch, capsys) -> None:
    monkeypatch.setenv("USER", "alice")
    first, second, third = (fitted.save(model_dir).name for _ in range(3))
    cli = ["--model-dir", str(model_dir)]
    for version in (first, second, third):
        assert execute(registry_cli.main, [*cli, "promote", version, "--reason", f"ship {version}"]) == 0
    pointer = registry.champion_pointer(model_dir)
    assert pointer["version"] == third and pointer["history"] == [first, second] and pointer["previous"] == second
    assert pointer["by"].startswith("alice@") and pointer["reason"] == f"ship {third}"
    assert execute(registry_cli.main, [*cli, "rollback", "--reason", "bad answers in production"]) == 0
    pointer = registry.champion_pointer(model_dir)
    assert pointer["version"] == second and pointer["history"] == [first] and pointer["event"] == "rolled back to"
    assert execute(registry_cli.main, [*cli, "rollback", "--reason", "still bad"]) == 0
    assert registry.champion(model_dir) == first
    assert execute(registry_cli.main, [*cli, "rollback", "--reason", "once more"]) == 1  # nothing earlier: unchanged
    assert registry.champion(model_dir) == first
    assert CustomerModel.load(model_dir).version_ == first  # no version named: the champion, not the newest
    events = registry.events(model_dir, second)
    assert [e["event"] for e in events] == ["candidate", "promoted", "retired", "rolled back to", "retired"]
    assert events[3]["reason"] == "bad answers in production" and events[3]["by"].startswith("alice@")
    log_lines = (model_dir / registry.CHAMPION_LOG).read_text().splitlines()
    assert [json.loads(line)["version"] for line in log_lines] == [first, second, third, second, first]
    assert not list(model_dir.glob(".champion.json.*"))  # no temporary pointer left behind
    capsys.readouterr()
    assert execute(registry_cli.main, [*cli, "list"]) == 0
    listing = capsys.readouterr().out
    assert f"{first}    champion" in listing and f"{third}    candidate" in listing
    assert execute(registry_cli.main, [*cli, "show", second]) == 0
    assert json.loads(capsys.readouterr().out)["events"][1]["event"] == "promoted"


def test_a_rollback_skips_an_earlier_champion_that_no_longer_loads(fitted, model_dir) -> None:
    good, broken, current = (
        fitted.save(model_dir).name,
        unimportable_version(fitted, model_dir),
        fitted.save(model_dir).name,
    )
    registry.promote(model_dir, good, "first")
    registry.promote(model_dir, broken, "forced, bypassing the checks")
    registry.promote(model_dir, current, "third")
    assert registry.rollback(model_dir, "regression", CustomerModel)["version"] == good


def test_leftover_incoming_directories_are_cleaned_but_not_a_live_save(fitted, model_dir) -> None:
    model_dir.mkdir(parents=True)
    killed, live, fresh = (model_dir / f".incoming-{name}" for name in ("killed", "live", "fresh"))
    for path in (killed, live, fresh):
        path.mkdir()
        (path / "model.joblib").write_bytes(b"half")
    old = time.time() - 2 * registry.INCOMING_GRACE_SECONDS
    for path in (killed, live):
        os.utime(path, (old, old))
    held = os.open(live, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)  # a save in progress in another process
    try:
        fitted.save(model_dir)
        assert not killed.exists() and live.exists() and fresh.exists()
    finally:
        os.close(held)
    fitted.save(model_dir)
    assert not live.exists() and fresh.exists()  # fresh: within the grace period


def test_training_options_are_recorded_and_warm_start_takes_hyperparameters(feature_frame, settings) -> None:
    first = train_and_register(
        feature_frame, settings.model_copy(update={"params": {"max_iter": 40, "learning_rate": 0.2}})
    )
    second = train_and_register(
        feature_frame,
        settings.model_copy(
            update={"params": {"max_leaf_nodes": 15}, "warm_start_from": first.path.name, "promote": False}
        ),
    )
    metadata = registry.read_metadata(settings.model_dir, second.path.name)
    options = metadata["training_options"]
    assert options["hyperparameters"] == {"max_iter": 40, "learning_rate": 0.2, "max_leaf_nodes": 15}
    assert options["warm_start_from"] == first.path.name and "no HGB warm_start" in options["warm_start"]
    assert options["seed"] == 42 and options["test_size"] == 0.2 and options["promote"] is False
    assert metadata["params"]["max_iter"] == 40 and metadata["params"]["max_leaf_nodes"] == 15
    assert not second.promoted and registry.champion(settings.model_dir) == first.path.name
    assert registry.events(settings.model_dir, second.path.name)[-1]["event"] == "passed"


def test_the_time_limit_stops_training_and_saves_nothing(feature_frame, settings) -> None:
    with pytest.raises(TimeLimitExceeded, match=r"time limit of 0.01 s"):
        train_and_register(feature_frame, settings.model_copy(update={"params": {"max_iter": 500}, "time_limit": 0.01}))
    assert registry.versions(settings.model_dir) == []
