"""The Evidently workspace: one project, one run per period and source (replaced on a re-run), a
dashboard whose panels plot volume, positive rate, drift per feature and the OOD rate, and
Evidently's UI serving those series (`companydata-monitor ui`, as `evidently ui` would)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from data_science.features import SCHEMA
from monitoring.config import Thresholds
from monitoring.period import Period
from monitoring.report import build_report
from monitoring.workspace import INDEX, LAYOUT, PROJECT, TABS, add_runs
from testkit.fixtures import wait_until
from testkit.localdb import free_port

from .conftest import shift

DAYS = (date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3))
# What the dashboard must plot (metric, labels the panel filters on), for each source.
SERIES = {
    "volume": ("RowCount", {}),
    "positive rate": ("MeanValue", {"column": "prediction"}),
    "drifted share": ("DriftedColumnsCount", {"value_type": "share"}),
    "OOD rate": ("MeanValue", {"column": "out_of_distribution"}),
    **{f"drift {name}": ("ValueDrift", {"column": name}) for name in SCHEMA.names},
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, pools: Callable[[int, int], pd.DataFrame]) -> Path:
    """Three days of runs for both sources (the third shifted), the second day stored twice."""
    path = tmp_path_factory.mktemp("evidently") / "workspace"
    reference = pools(10_000, 42).assign(out_of_distribution=0.0)
    for i, day in enumerate((*DAYS[:2], DAYS[1], DAYS[2])):
        current = pools(2_000, 20 + i).assign(out_of_distribution=0.0)
        if day == DAYS[2]:
            current = shift(current).assign(out_of_distribution=0.2)
        snapshots = {
            source: build_report(
                reference,
                current.head(600 if source == "requests" else 2_000),
                SCHEMA,
                Thresholds(),
                source=source,
                timestamp=datetime.combine(day, time()),
                metadata={"period": day.isoformat()},
            ).snapshot
            for source in ("requests", "batch")
        }
        add_runs(path, Period.day(day), SCHEMA.names, snapshots)
    return path


def test_the_workspace_holds_one_project_with_one_run_per_period_and_source(workspace: Path) -> None:
    from evidently.ui.workspace import Workspace

    ws = Workspace.create(str(workspace))
    [project] = ws.list_projects()
    assert project.name == PROJECT
    runs = [ws.get_run(project.id, run) for run in ws.list_runs(project.id)]
    assert sorted((r.metadata["period"], *r.tags) for r in runs) == sorted(
        (day.isoformat(), source) for day in DAYS for source in ("requests", "batch")
    )  # the second day's first runs were replaced, not kept beside
    index = json.loads((workspace / INDEX).read_text())
    assert set(index["runs"]) == {f"{s}/{d.isoformat()}" for d in DAYS for s in ("requests", "batch")}


def test_the_dashboard_has_a_tab_per_source_with_the_panels_over_time(workspace: Path) -> None:
    from evidently.ui.workspace import Workspace

    ws = Workspace.create(str(workspace))
    [project] = ws.list_projects()
    dashboard = ws.get_dashboard(project.id)
    assert [t.title for t in dashboard.tabs] == ["API requests", "Batch scores"]
    panels = {p.id: p for p in dashboard.panels}
    for tab, source in zip(dashboard.tabs, ("requests", "batch"), strict=True):
        shown = [panels[i] for i in tab.panels]
        kinds = [p.plot_params["plot_type"] for p in shown]
        assert kinds[:4] == ["counter"] * 4 and set(kinds[4:]) == {"bar"}  # the latest period, then over time
        assert all(p.title.startswith(f"{TABS[source]}: ") for p in shown)  # the UI shows every tab on one page
        plotted = {
            (v.metric.rsplit(":", 1)[-1], tuple(sorted(v.metric_labels.items())), tuple(v.tags))
            for p in shown
            for v in p.values
        }
        for metric, labels in SERIES.values():
            assert (metric, tuple(sorted(labels.items())), (source,)) in plotted, (source, metric, labels)


def test_a_dashboard_of_an_older_layout_is_rewritten(
    workspace: Path, tmp_path: Path, pools: Callable[[int, int], pd.DataFrame]
) -> None:
    """A workspace made by an earlier release (its index has no layout) gets today's panels on its
    next run, its runs kept."""
    import shutil

    from evidently.ui.workspace import Workspace

    old = tmp_path / "workspace"
    shutil.copytree(workspace, old)
    index = json.loads((old / INDEX).read_text())
    ws = Workspace.create(str(old))
    [project] = ws.list_projects()
    ws.save_dashboard(project.id, type(ws.get_dashboard(project.id))(tabs=[], panels=[]))  # an old layout
    del index["layout"]
    (old / INDEX).write_text(json.dumps(index))
    frame = pools(2_000, 20).assign(out_of_distribution=0.0)
    snapshot = build_report(
        frame, frame.head(600), SCHEMA, Thresholds(), source="requests", timestamp=datetime.combine(DAYS[0], time())
    ).snapshot
    add_runs(old, Period.day(DAYS[0]), SCHEMA.names, {"requests": snapshot})
    assert json.loads((old / INDEX).read_text())["layout"] == LAYOUT
    dashboard = Workspace.create(str(old)).get_dashboard(project.id)
    assert [t.title for t in dashboard.tabs] == list(TABS.values())
    assert len(list(ws.list_runs(project.id))) == 2 * len(DAYS)


def request(url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data else {}
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def ui(workspace: Path, tmp_path: Path) -> Iterator[str]:
    """`companydata-monitor ui` on the workspace, on a free port; its base URL."""
    port = free_port()
    env = {**os.environ, "MONITORING_WORKSPACE": str(workspace)}
    output = tmp_path / "ui.log"
    with output.open("w") as log:  # a file, not a pipe: a chatty server never blocks on it
        process = subprocess.Popen(
            [sys.executable, "-m", "monitoring", "ui", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the UI exited {process.returncode}: {output.read_text()}")
        try:
            request(f"{base}/api/version")
        except OSError:
            return False
        return True

    try:
        wait_until(up, 120, "Evidently's UI to answer")
        yield base
    finally:
        process.terminate()
        process.wait(30)


def series(ui: str, project: str, source: str) -> tuple[list[str], dict[tuple[str, str], list[float | None]]]:
    """What the UI plots for one source's panels: the runs' days, and (metric, column) -> values."""
    filters = [
        {"tags": [source], "metadata": {}, "metric": f"evidently:metric_v2:{metric}", "metric_labels": labels}
        for metric, labels in SERIES.values()
    ]
    answer = request(f"{ui}/api/v2/snapshots/{project}/data_series_batch", {"series_filter": filters})
    days = [s["timestamp"][:10] for s in answer["sources"]]
    return days, {
        (s["metric_type"].rsplit(":", 1)[-1], s["params"].get("column", "")): s["values"] for s in answer["series"]
    }


def test_evidently_ui_serves_the_series_of_every_panel(ui: str) -> None:
    [project] = request(f"{ui}/api/projects")
    assert project["name"] == PROJECT
    for source, rows in (("requests", 600.0), ("batch", 2_000.0)):
        days, found = series(ui, project["id"], source)
        assert days == [d.isoformat() for d in DAYS]
        assert found["RowCount", ""] == [rows] * 3
        assert found["MeanValue", "out_of_distribution"] == [0.0, 0.0, pytest.approx(0.2)]
        assert all(0.0 < v < 0.5 for v in found["MeanValue", "prediction"])
        assert found["DriftedColumnsCount", ""] == [0.0, 0.0, 0.5]
        scd_a = found["ValueDrift", "scd_a"]
        assert max(scd_a[:2]) < 0.1 < scd_a[2]  # the third day drifted
        assert {column for metric, column in found if metric == "ValueDrift"} == set(SCHEMA.names)
