"""Real data has holes: empty attr_a / attr_b cells go through the ETL, training and the API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from data_engineering.db import etl_transaction
from data_engineering.features import build_features
from data_engineering.generate import GeneratorConfig, generate
from data_engineering.load import available_months, load_customers, load_sales
from data_science.features import EXAMPLE_REQUEST
from data_science.model import CustomerModel
from deployment.app import create_app
from deployment.config import ServeSettings
from deployment.model_holder import ModelHolder


def test_empty_feature_cells_flow_from_the_raw_files_to_a_served_prediction(companydata, logger, tmp_path) -> None:
    raw = tmp_path / "raw"
    generate(raw, GeneratorConfig(customers=4_000, months=1, seed=11, missing_rate=0.03))
    blank_lines = sum(line.split(",")[1] == "" for line in (raw / "customer_profiles.csv").read_text().splitlines())
    assert 60 < blank_lines < 200  # about 3 % of 4,000
    with etl_transaction(companydata.settings("etl")) as cur:
        load_customers(cur, raw)
        load_sales(cur, raw, available_months(raw))
        build_features(cur)
    missing = companydata.query("SELECT count(*) FILTER (WHERE attr_a IS NULL), count(*) FROM feature_store")[0]
    assert missing[0] == blank_lines and missing[1] == 4_000

    models = tmp_path / "models"
    job = subprocess.run(
        [sys.executable, "-m", "data_science.train", "--model-dir", str(models), "--wait-timeout", "60"],
        env=companydata.env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert job.returncode == 0, job.stdout + job.stderr
    (version,) = [p for p in models.iterdir() if not p.name.startswith(".") and p.is_dir()]

    holder = ModelHolder(CustomerModel, models, 60, logger)
    holder.refresh()
    assert holder.model is not None
    assert 0.01 < holder.model.metadata_["training"]["missing_rate"]["attr_a"] < 0.06
    client = create_app(ServeSettings(model_dir=Path(models), model_poll_seconds=60.0), holder).test_client()
    body = {**EXAMPLE_REQUEST, "features": {**EXAMPLE_REQUEST["features"], "attr_a": None}}
    answer = client.post("/predict", json=body)
    assert answer.status_code == 200 and answer.json["model_version"] == holder.model.version_
    assert logger.flush()
    assert companydata.query("SELECT features->'attr_a' FROM prediction_log") == [(None,)]
    assert version.name == holder.model.version_ or (models / "champion.json").exists()
