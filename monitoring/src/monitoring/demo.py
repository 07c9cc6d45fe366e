"""`make drift-demo`: drift you can watch, against the running Compose stack.

    python3 monitoring/src/monitoring/demo.py [--rows 600] [--seed 7]
    API_URL=http://127.0.0.1:5000 API_TOKEN=... COMPOSE="docker compose -p myproject" python3 ...

1. sends a batch of shifted requests to the API through the proxy (as `make example` does:
   `API_URL`, default http://localhost:5000, and `Authorization: Bearer $API_TOKEN` when set, a
   per-client key or the token): the generator's distribution with `scd_a` moved up by 0.2 (past
   the training maximum: out of distribution too) and 40 % of `attr_b` set to `d`;
2. waits until the prediction log has written every one of them (the view `prediction_log`);
3. runs today's drift report (UTC) in the dagster-daemon container (`companydata-monitor report`,
   as `make monitor` does), which crosses `MONITOR_DRIFT_SHARE` (attr_b and scd_a drift: 2 of
   the 4 features) and `MONITOR_MAX_OOD_RATE`: an ERROR in its log, rows in `monitoring_alerts`
   and a POST per threshold to the webhook (once per day and threshold). When the stack has no
   ALERT_WEBHOOK_URL, the report runs with one pointing at a receiver the demo starts beside it
   in the container for that run (`RECEIVER`), which prints what it was sent: the alert's whole
   way out, without an outside service;
4. prints the alerts and where to look: the dashboard (monitoring-ui), the HTML reports.

Exit status: 0 the report crossed a threshold (the demo worked); 1 anything else. Standard library
only (it runs on the host, like deployment/example_request.py); `COMPOSE` is how to call Docker
Compose for the stack (default `docker compose`, from the repository root).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

IDX_START = 9_000_000  # the demo's clients: far from the generator's idx (0 .. customers - 1)
CHUNK = 200  # rows per /predict/batch (the API takes up to MAX_BATCH_SIZE, 1,000 by default)
SCD_A_SHIFT = 0.2
ATTR_B_TO_D = 0.4
EXIT_BREACHED = 3  # companydata-monitor report: written, a threshold crossed


# Run in the dagster-daemon container as `python -c RECEIVER <report command...>`: a webhook receiver
# on a free local port, the report with ALERT_WEBHOOK_URL pointing at it, then each JSON body the
# receiver was sent as a `webhook received: ...` line; exits with the report's status.
RECEIVER = """
import http.server, json, os, subprocess, sys, threading
received = []
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        received.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
threading.Thread(target=server.serve_forever, daemon=True).start()
url = "http://127.0.0.1:%d/alert" % server.server_address[1]
done = subprocess.run(sys.argv[1:], env={**os.environ, "ALERT_WEBHOOK_URL": url})
server.shutdown()
sys.stdout.flush()
for body in received:
    print("webhook received: " + json.dumps(json.loads(body), sort_keys=True), flush=True)
sys.exit(done.returncode)
"""
RECEIVED = "webhook received: "


class DemoError(RuntimeError):
    pass


def shifted_rows(rows: int, seed: int) -> list[dict[str, Any]]:
    """`rows` requests drawn like the generator's clients (attr_a 1-5, attr_b a-d, scd_a uniform on
    [0, 1), scd_b 1-5), then shifted: scd_a + 0.2, 40 % of attr_b set to 'd'."""
    rng = random.Random(seed)
    out = []
    for i in range(rows):
        attr_b = "d" if rng.random() < ATTR_B_TO_D else rng.choice("abcd")
        features = {
            "attr_a": rng.randint(1, 5),
            "attr_b": attr_b,
            "scd_a": round(rng.random() + SCD_A_SHIFT, 4),
            "scd_b": rng.randint(1, 5),
        }
        out.append({"idx": IDX_START + i, "features": features})
    return out


def post(url: str, body: object, token: str) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        raise DemoError(f"{url} answered {exc.code}: {exc.read().decode()[:500]}") from None
    except urllib.error.URLError as exc:
        raise DemoError(f"cannot reach {url}: {exc.reason} (is the stack up? make up)") from None


def send(api: str, rows: list[dict[str, Any]], token: str) -> tuple[int, int]:
    """Send `rows` in batches; (rows answered, rows the API found out of distribution)."""
    answered = flagged = 0
    for start in range(0, len(rows), CHUNK):
        answer = post(f"{api}/predict/batch", rows[start : start + CHUNK], token)
        predictions = answer.get("predictions", []) if isinstance(answer, dict) else answer
        answered += len(predictions)
        flagged += sum(1 for p in predictions if p.get("in_distribution") is False)
    return answered, flagged


class Compose:
    def __init__(self, command: str) -> None:
        self.command = shlex.split(command)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*self.command, *args], capture_output=True, text=True)
        if check and done.returncode != 0:
            raise DemoError(f"{shlex.join([*self.command, *args])}: exit {done.returncode}: {done.stderr.strip()}")
        return done

    def sql(self, query: str) -> str:
        """`query` as the database's admin, in its container (which knows the password): its rows."""
        psql = 'PGPASSWORD="$POSTGRES_PASSWORD" exec psql -h 127.0.0.1 -U "$POSTGRES_USER" -d "$POSTGRES_DB"'
        psql += ' -qAt -v ON_ERROR_STOP=1 -c "$0"'
        return self.run("exec", "-T", "operational-db", "sh", "-c", psql, query).stdout.strip()


def logged(compose: Compose, day: dt.date, rows: int) -> int:
    """How many of the demo's `rows` requests of `day` are in the prediction log (the view
    `prediction_log`: a batch is logged as one row of `prediction_batches`)."""
    count = compose.sql(
        f"SELECT count(*) FROM prediction_log WHERE client_idx BETWEEN {IDX_START} AND {IDX_START + rows - 1}"
        f" AND predicted_at >= '{day.isoformat()}'::date"
    )
    return int(count or 0)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="make drift-demo", description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--rows", type=int, default=600, help="shifted requests to send (default 600; judged from 500)")
    p.add_argument("--seed", type=int, default=7, help="random seed of the requests")
    args = p.parse_args(argv)
    api = os.environ.get("API_URL", "http://localhost:5000").rstrip("/")
    token = os.environ.get("API_TOKEN", "")
    compose = Compose(os.environ.get("COMPOSE", "docker compose"))
    day = dt.datetime.now(dt.UTC).date()
    try:
        rows = shifted_rows(args.rows, args.seed)
        answered, flagged = send(api, rows, token)
        print(
            f"drift-demo: sent {answered} shifted requests to {api}/predict/batch (scd_a + {SCD_A_SHIFT},"
            f" {ATTR_B_TO_D:.0%} of attr_b set to 'd'); the API found {flagged} out of distribution"
        )
        deadline = time.monotonic() + 60
        while (n := logged(compose, day, args.rows)) < answered:
            if time.monotonic() > deadline:
                raise DemoError(f"only {n} of the {answered} requests reached the prediction log within 60 s")
            time.sleep(1)
        print(f"drift-demo: all {n} are in the prediction log")

        report = ("companydata-monitor", "report", "--since", day.isoformat(), "--until", day.isoformat())
        hook = compose.run("exec", "-T", "dagster-daemon", "printenv", "ALERT_WEBHOOK_URL", check=False).stdout.strip()
        print(f"drift-demo: {shlex.join(compose.command)} exec dagster-daemon {shlex.join(report)}")
        if hook:
            print("drift-demo: alerts go to the stack's ALERT_WEBHOOK_URL")
            done = compose.run("exec", "-T", "dagster-daemon", *report, check=False)
        else:
            print("drift-demo: ALERT_WEBHOOK_URL is unset: the report runs with a receiver of the demo's own")
            done = compose.run("exec", "-T", "dagster-daemon", "python", "-c", RECEIVER, *report, check=False)
        output = (done.stdout + done.stderr).strip()
        print("\n".join(f"  | {line}" for line in output.splitlines() if not line.startswith(RECEIVED)))
        if done.returncode != EXIT_BREACHED:
            raise DemoError(f"the report exited {done.returncode}, not {EXIT_BREACHED} (a threshold crossed)")
        received = [line.removeprefix(RECEIVED) for line in output.splitlines() if line.startswith(RECEIVED)]
        if not hook:
            print(f"drift-demo: the webhook received {len(received)} alert(s) (none if already sent today):")
            print("\n".join(f"  {body}" for body in received) or "  (none)")

        alerts = compose.sql(
            "SELECT threshold || ': ' || coalesce(payload->>'message', '') || ' (webhook: '"
            " || CASE WHEN delivered_at IS NOT NULL THEN 'delivered' ELSE 'not sent' END || ')'"
            f" FROM monitoring_alerts WHERE period_start = '{day.isoformat()}' ORDER BY threshold"
        )
        print(f"drift-demo: the alerts of {day} (monitoring_alerts, once per day and threshold):")
        print("\n".join(f"  {line}" for line in alerts.splitlines()) or "  (none)")
        port = compose.run("port", "monitoring-ui", "8085", check=False).stdout.strip()
        dashboard = f"http://{port.replace('0.0.0.0', '127.0.0.1')}/" if port else "(monitoring-ui is not running)"
        print(
            f"drift-demo: the dashboard: {dashboard} (project 'companydata drift', tab API requests; its"
            f" Reports list opens {day}'s report)\n"
            f"drift-demo: the HTML report: /srv/reports/html/{day}/requests.html in the reports volume\n"
            "drift-demo: the alert in the logs: the ERROR lines above (`drift alert: ...`); on the webhook:"
            " one POST per threshold and day"
        )
    except DemoError as exc:
        print(f"drift-demo: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
