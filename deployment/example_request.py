"""The challenge's example request, sent to the running API.

    python deployment/example_request.py                # http://localhost:5000
    API_URL=http://host:5000 API_TOKEN=... python deployment/example_request.py

Standard library only, so it runs anywhere Python does.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

data = {"idx": 150000, "features": {"attr_a": 1, "attr_b": "c", "scd_a": 0.55, "scd_b": 3}}


def main() -> int:
    url = os.environ.get("API_URL", "http://localhost:5000").rstrip("/") + "/predict"
    headers = {"Content-Type": "application/json"}
    if os.environ.get("API_TOKEN"):
        headers["Authorization"] = f"Bearer {os.environ['API_TOKEN']}"
    request = urllib.request.Request(url, data=json.dumps(data).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as exc:
        print(f"{url} answered {exc.code}: {exc.read().decode()}", file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        print(f"cannot reach {url}: {exc.reason} (is the stack up? `docker compose up`)", file=sys.stderr)
        return 1
    print(f"label: {answer['label']}")
    print(json.dumps(answer, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
