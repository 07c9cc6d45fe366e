"""Each report as a run (a snapshot) in a local Evidently workspace (MONITORING_WORKSPACE), under
one project whose dashboard plots the runs over time:

    evidently ui --workspace "$MONITORING_WORKSPACE" --port 8085

The project (`PROJECT`) is made on the first run, with a dashboard of two tabs, one per source
(the API's requests, the batch scores), each with the same panels: the latest period's volume,
positive rate, drifted share and OOD rate as counters, then over time (bars) volume
(`RowCount`), positive rate (`MeanValue` of the predicted label), share of drifted features
(`DriftedColumnsCount`), drift score per feature (`ValueDrift`, one bar per feature of the
model), prediction drift (`ValueDrift` of the probability), missing share per feature
(`MissingValueCount`) and the out-of-distribution rate (`MeanValue` of the gate's verdicts).
Every run is tagged with its source and carries its period as metadata, and its timestamp is the
period's first instant, so a backfill plots in date order. A run is a whole Evidently report:
the UI opens it as the HTML page does.

A re-run of a period replaces that period's run of that source (the workspace keeps one run per
period and source): `runs.json` beside Evidently's files maps each to its snapshot. The
dashboard is rewritten when the model's features or the layout (`LAYOUT`) change. Runs of
several periods at once (a backfill) take turns on the workspace under a file lock.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from evidently.sdk.models import DashboardModel, DashboardPanelPlot, DashboardTabModel, PanelMetric
from evidently.sdk.panels import bar_plot_panel, counter_panel
from evidently.ui.workspace import Workspace

from monitoring.data import OOD, PREDICTION, PROBABILITY
from monitoring.period import Period

PROJECT = "companydata drift"
DESCRIPTION = (
    "The champion's reference sample against the API's requests and the batch scores, one run per"
    " period and source (companydata-monitor report, Dagster's drift_report)."
)
INDEX = "runs.json"
LOCK = ".companydata-monitor.lock"
TABS = {"requests": "API requests", "batch": "Batch scores"}
# The dashboard's layout: a workspace whose dashboard was written by another layout gets this one.
LAYOUT = 2


def _metric(kind: str, legend: str, tag: str, **labels: str) -> PanelMetric:
    return PanelMetric(legend=legend, metric=f"evidently:metric_v2:{kind}", metric_labels=labels, tags=[tag])


def panels(source: str, features: Sequence[str]) -> list[DashboardPanelPlot]:
    """The panels of one source (every series filtered by the source's tag, every title naming
    it: Evidently 0.7's UI draws every tab's panels on one page). First the latest period's
    figures as counters, the glance; then each as bars over the periods: a bar is as readable
    for one period as for ninety, where a line of one point is a dot on an axis of one tick."""
    name = TABS[source]
    noun = "requests" if source == "requests" else "rows scored"
    volume = [_metric("RowCount", noun, source)]
    positive = [_metric("MeanValue", "positive rate", source, column=PREDICTION)]
    drifted = [_metric("DriftedColumnsCount", "drifted share", source, value_type="share")]
    ood = [_metric("MeanValue", "OOD rate", source, column=OOD)]
    return [
        counter_panel(f"{name}: {noun}, latest period", volume, size="half"),
        counter_panel(f"{name}: positive rate, latest period", positive, size="half"),
        counter_panel(f"{name}: share of drifted features, latest period", drifted, size="half"),
        counter_panel(f"{name}: out-of-distribution rate, latest period", ood, size="half"),
        bar_plot_panel(f"{name}: {noun} per period", volume, size="half"),
        bar_plot_panel(f"{name}: positive rate (predicted label 1)", positive, size="half"),
        bar_plot_panel(f"{name}: share of drifted features", drifted, size="half"),
        bar_plot_panel(f"{name}: out-of-distribution rate", ood, size="half"),
        bar_plot_panel(
            f"{name}: drift score per feature (drifted at 0.1)",
            [_metric("ValueDrift", feature, source, column=feature) for feature in features],
            size="full",
        ),
        bar_plot_panel(
            f"{name}: prediction drift (probability)",
            [_metric("ValueDrift", "probability", source, column=PROBABILITY)],
            size="half",
        ),
        bar_plot_panel(
            f"{name}: missing share per feature",
            [_metric("MissingValueCount", feature, source, column=feature, value_type="share") for feature in features],
            size="half",
        ),
    ]


def dashboard(features: Sequence[str]) -> DashboardModel:
    """Two tabs, one per source, with `panels` each."""
    tabs, all_panels = [], []
    for source, title in TABS.items():
        source_panels = panels(source, features)
        all_panels += source_panels
        tabs.append(DashboardTabModel(title=title, panels=[p.id for p in source_panels]))
    return DashboardModel(tabs=tabs, panels=all_panels)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_index(path: Path) -> dict[str, Any]:
    try:
        index: dict[str, Any] = json.loads((path / INDEX).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return index


def _write_index(path: Path, index: dict[str, Any]) -> None:
    tmp = path / f".{INDEX}.tmp"
    tmp.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path / INDEX)


def _project(workspace: Any, index: dict[str, Any], features: Sequence[str]) -> Any:
    """The project, made (with its dashboard) if the workspace has none; its dashboard rewritten
    when the features changed."""
    project = workspace.get_project(index["project_id"]) if index.get("project_id") else None
    if project is None:
        found = workspace.search_project(PROJECT)
        project = found[0] if found else workspace.create_project(PROJECT, description=DESCRIPTION)
        index.clear()
        index["project_id"] = str(project.id)
    if index.get("features") != list(features) or index.get("layout") != LAYOUT:
        workspace.save_dashboard(project.id, dashboard(features))
        index["features"], index["layout"] = list(features), LAYOUT
    return project


def add_runs(path: Path, period: Period, features: Sequence[str], snapshots: dict[str, Any]) -> dict[str, str]:
    """Store each source's snapshot as the period's run in the workspace at `path` (replacing a
    previous run of the same period and source); source -> snapshot id."""
    stored = {}
    with _locked(path):
        workspace = Workspace.create(str(path))
        index = _read_index(path)
        project = _project(workspace, index, features)
        runs: dict[str, str] = index.setdefault("runs", {})
        for source, snapshot in snapshots.items():
            key = f"{source}/{period.key}"
            old = runs.pop(key, None)
            if old is not None and old in {str(s) for s in workspace.list_runs(project.id)}:
                workspace.delete_run(project.id, old)
            ref = workspace.add_run(project.id, snapshot, include_data=False)
            runs[key] = stored[source] = str(ref.id)
        _write_index(path, index)
    return stored
