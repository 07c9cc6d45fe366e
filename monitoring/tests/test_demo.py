"""`make drift-demo` (monitoring/demo.py): the shifted requests, and the whole flow against a local
HTTP API and a stand-in for `docker compose` (the real stack runs it in `make compose-test`)."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from monitoring import demo

# Stands in for `docker compose`: answers the demo's psql queries, `printenv` (STACK_HOOK), the report (exit
# REPORT_EXIT) and `port`. The demo's own webhook receiver (`python -c RECEIVER report...`) really
# runs, around a stand-in report that POSTs two alerts to ALERT_WEBHOOK_URL.
FAKE_COMPOSE = """
import subprocess, sys
args = sys.argv[1:]
REPORT = '''
import json, os, sys, urllib.request
for threshold in ("drift_share", "ood_rate"):
    body = json.dumps({"threshold": threshold, "period": "2026-03-04"}).encode()
    request = urllib.request.Request(os.environ["ALERT_WEBHOOK_URL"], data=body, method="POST")
    urllib.request.urlopen(request, timeout=10).close()
print("2026-03-04 00:00:00,000 ERROR monitoring: drift alert: share of drifted features 0.500", file=sys.stderr)
sys.exit(REPORT_EXIT)
'''
if args[:1] == ["port"]:
    print("127.0.0.1:8085")
elif "printenv" in args:
    print("STACK_HOOK")
    sys.exit(0 if "STACK_HOOK" else 1)
elif "-c" in args and "companydata-monitor" in args:
    code = args[args.index("-c") + 1]
    sys.exit(subprocess.run([sys.executable, "-c", code, sys.executable, "-c", REPORT]).returncode)
elif "companydata-monitor" in args:
    print("2026-03-04 00:00:00,000 ERROR monitoring: drift alert: share of drifted features 0.500", file=sys.stderr)
    sys.exit(REPORT_EXIT)
elif "count(*)" in args[-1]:
    print(ROWS)
else:
    print("drift_share: share of drifted features 0.500 (webhook: not sent)")
"""


class Api(BaseHTTPRequestHandler):
    batches: ClassVar[list[list[dict[str, Any]]]] = []
    auth: ClassVar[list[str | None]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Api.batches.append(body)
        Api.auth.append(self.headers.get("Authorization"))
        predictions = [
            {"idx": r["idx"], "label": 0, "probability": 0.1, "in_distribution": r["features"]["scd_a"] <= 1}
            for r in body
        ]
        data = json.dumps({"predictions": predictions}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api() -> Iterator[str]:
    Api.batches, Api.auth = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def fake_compose(tmp_path: Path, report_exit: int, rows: int, hook: str = "") -> str:
    script = tmp_path / "compose.py"
    code = FAKE_COMPOSE.replace("REPORT_EXIT", str(report_exit)).replace("ROWS", str(rows)).replace("STACK_HOOK", hook)
    script.write_text(code)
    return f"{sys.executable} {script}"


def test_the_shifted_requests_move_scd_a_and_attr_b() -> None:
    rows = demo.shifted_rows(600, seed=7)
    assert rows == demo.shifted_rows(600, seed=7)
    assert [r["idx"] for r in rows] == list(range(demo.IDX_START, demo.IDX_START + 600))
    scd_a = [r["features"]["scd_a"] for r in rows]
    assert min(scd_a) >= 0.2 and max(scd_a) < 1.2
    assert sum(r["features"]["attr_b"] == "d" for r in rows) / 600 > 0.45  # 0.4 + 0.6 / 4 expected
    assert {r["features"]["attr_a"] for r in rows} == {1, 2, 3, 4, 5}
    assert {r["features"]["scd_b"] for r in rows} == {1, 2, 3, 4, 5}


def test_the_demo_sends_the_batch_runs_the_report_and_points_to_the_dashboard(
    api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("API_URL", api)
    monkeypatch.setenv("API_TOKEN", "a-token-or-key")
    monkeypatch.setenv("COMPOSE", fake_compose(tmp_path, demo.EXIT_BREACHED, 600))
    assert demo.main([]) == 0
    out = capsys.readouterr().out
    assert [len(b) for b in Api.batches] == [200, 200, 200]
    assert set(Api.auth) == {"Bearer a-token-or-key"}
    assert "sent 600 shifted requests" in out
    assert "ERROR monitoring: drift alert" in out
    assert "drift_share: share of drifted features" in out
    assert "http://127.0.0.1:8085/" in out
    # No ALERT_WEBHOOK_URL in the stack: the demo's receiver got each alert the report POSTed.
    assert "the webhook received 2 alert(s)" in out
    assert '{"period": "2026-03-04", "threshold": "drift_share"}' in out
    assert '{"period": "2026-03-04", "threshold": "ood_rate"}' in out


def test_the_demo_leaves_alerts_to_the_stacks_own_webhook(
    api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("API_URL", api)
    monkeypatch.setenv("COMPOSE", fake_compose(tmp_path, demo.EXIT_BREACHED, 600, hook="https://hooks.example/x"))
    assert demo.main([]) == 0
    out = capsys.readouterr().out
    assert "alerts go to the stack's ALERT_WEBHOOK_URL" in out
    assert "webhook received" not in out


def test_the_demo_fails_when_the_report_crosses_nothing(
    api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("API_URL", api)
    monkeypatch.setenv("COMPOSE", fake_compose(tmp_path, 0, 600))
    assert demo.main(["--rows", "50"]) == 1
    assert "the report exited 0, not 3" in capsys.readouterr().err
    assert Api.auth == [None]


def test_the_demo_says_when_the_api_is_not_up(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("API_URL", "http://127.0.0.1:9")
    assert demo.main(["--rows", "10"]) == 1
    assert "cannot reach http://127.0.0.1:9/predict/batch" in capsys.readouterr().err
