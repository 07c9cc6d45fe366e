"""The API serves the registry's champion only, falls back safely, and polls for free."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import urllib.request

import joblib

from data_science.features import EXAMPLE_REQUEST
from data_science.model import CustomerModel
from deployment.model_holder import ModelHolder
from machine_learning_engineering import registry
from testkit.bad_versions import bad_versions, no_skill_version
from testkit.fixtures import wait_until
from testkit.localdb import free_port
from testkit.process import gunicorn


def test_versions_that_cannot_serve_are_never_served(trained, model_dir, feature_frame, caplog) -> None:
    good = registry.versions(model_dir)[0]
    registry.promote(model_dir, good, "the good one")
    no_skill, five, broken = bad_versions(trained, model_dir, feature_frame)  # all newer than the champion
    holder = ModelHolder(CustomerModel, model_dir, 60)
    holder.refresh()
    assert holder.model.version_ == good and holder.serving["model_role"] == "champion"
    with caplog.at_level(logging.ERROR, logger="deployment.model_holder"):
        for forced in (five, broken):  # promoted by hand, bypassing the CLI's checks
            registry.promote(model_dir, forced, "forced")
            for i in range(3):
                holder.refresh()
                os.utime(model_dir / registry.CHAMPION, ns=(i, i))  # looks changed to every poll
                (model_dir / f".incoming-poke-{forced}-{i}").mkdir()
            assert holder.model.version_ == good
            assert holder.serving["model_role"] == "fallback" and holder.serving["champion_version"] == forced
            assert f"the champion {forced} cannot serve" in holder.serving["fallback_reason"]
    assert caplog.text.count(f"model version {five} cannot serve") == 1  # once per version, not per poll
    assert "fails the signature check" in caplog.text and "attr_c" in caplog.text
    assert caplog.text.count(f"model version {broken} cannot serve") == 1
    assert "ModuleNotFoundError" in caplog.text
    # A worker that boots now: the broken champion, then the earlier ones, never the newest no-skill one.
    booted = ModelHolder(CustomerModel, model_dir, 60)
    booted.start()
    booted.stop()
    assert booted.model.version_ == good != no_skill and booted.serving["model_role"] == "fallback"


def test_polling_reads_hashes_and_unpickles_nothing_when_nothing_changed(trained, model_dir, monkeypatch) -> None:
    registry.promote(model_dir, registry.versions(model_dir)[0], "first")
    holder = ModelHolder(CustomerModel, model_dir, 60)
    holder.refresh()
    calls = {"sha256": 0, "joblib.load": 0, "champion_pointer": 0}

    def counting(name, function):
        def counted(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return counted

    monkeypatch.setattr(registry, "sha256", counting("sha256", registry.sha256))
    monkeypatch.setattr(joblib, "load", counting("joblib.load", joblib.load))
    monkeypatch.setattr(registry, "champion_pointer", counting("champion_pointer", registry.champion_pointer))
    for _ in range(50):
        assert holder.refresh() is False
    assert calls == {"sha256": 0, "joblib.load": 0, "champion_pointer": 0}
    new = trained.save(model_dir).name  # a candidate appears: the pointer is read, nothing loaded
    assert holder.refresh() is False and calls["joblib.load"] == 0 and calls["champion_pointer"] == 1
    registry.promote(model_dir, new, "second")
    files = registry.read_metadata(model_dir, new)["files"]
    calls.update(sha256=0, champion_pointer=0)
    assert holder.refresh() is True and holder.model.version_ == new
    # The new champion, once: its artifact and the files in its manifest (gate, reference sample,
    # compiled scorer) hashed once each.
    assert set(files) == {"ood.npz", "reference.csv", "scoring.npz"}
    assert calls == {"sha256": 1 + len(files), "joblib.load": 1, "champion_pointer": 1}


def test_ready_and_model_say_which_version_serves_and_why(make_app, trained, model_dir) -> None:
    first = registry.versions(model_dir)[0]
    ready = make_app().test_client().get("/ready").get_json()
    assert ready["model_version"] == first and ready["model_role"] == "fallback"
    assert ready["champion_version"] is None and ready["no_skill"] is False
    assert ready["fallback_reason"].startswith("no champion yet")
    no_skill = no_skill_version(trained, model_dir)
    registry.promote(model_dir, no_skill, "the real labels carry no signal")
    client = make_app().test_client()
    ready = client.get("/ready").get_json()
    assert ready["model_version"] == no_skill and ready["model_role"] == "champion" and ready["no_skill"] is True
    assert ready["fallback_reason"] is None and ready["prediction_log"]["state"]
    model = client.get("/model").get_json()
    assert model["version"] == no_skill and model["evaluation"]["has_skill"] is False
    assert model["serving"] == {
        "model_role": "champion",
        "champion_version": no_skill,
        "no_skill": True,
        "fallback_reason": None,
        "ood_gate": False,  # a copy of a model holds no gate: no_skill_version saved it without one
        "ood_policy": "flag",
        "scoring": CustomerModel.load(model_dir, no_skill).scoring(),
    }


def test_gunicorn_boots_past_broken_versions_and_picks_up_a_promotion_live(
    companydata, trained, model_dir, feature_frame
) -> None:
    good = registry.versions(model_dir)[0]
    registry.promote(model_dir, good, "the good one")
    *_, broken = bad_versions(trained, model_dir, feature_frame)  # the newest: no skill, five features
    registry.promote(model_dir, broken, "forced: the champion cannot even be unpickled")
    env = companydata.env(MODEL_DIR=str(model_dir), GUNICORN_WORKERS="2", MODEL_POLL_SECONDS="0.2")
    with gunicorn(env, free_port()) as url:

        def get(path: str) -> dict:
            with urllib.request.urlopen(url + path, timeout=10) as response:
                return json.loads(response.read())

        def post() -> dict:
            request = urllib.request.Request(
                url + "/predict", json.dumps(EXAMPLE_REQUEST).encode(), {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())

        for _ in range(6):  # both workers
            ready = get("/ready")
            assert ready["model_version"] == good and ready["model_role"] == "fallback", ready
            assert ready["champion_version"] == broken and "cannot serve" in ready["fallback_reason"]
            assert post()["model_version"] == good
        new = trained.save(model_dir).name
        result = subprocess.run(
            [sys.executable, "-m", "machine_learning_engineering.registry_cli", "--model-dir", str(model_dir),
             "promote", new, "--reason", "live"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr

        def everyone_serves_new() -> bool:
            answers = [get("/ready") for _ in range(8)]
            return all(a["model_version"] == new and a["model_role"] == "champion" for a in answers)

        wait_until(everyone_serves_new, 30, f"both workers to serve {new}")
        assert post()["model_version"] == new
        assert get("/model")["serving"]["champion_version"] == new
