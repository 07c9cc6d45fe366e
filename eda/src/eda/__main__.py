"""`python -m eda render | run`: render the PDF; `run` first waits for feature_store (the container).

Serving is not this package's job: in the stack the proxy (deployment/proxy) serves the PDF
from the volume this renders into, so `run` exits 0 once the PDF is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from eda.config import EdaSettings
from eda.render import RenderError, render
from machine_learning_engineering.config import ConfigError
from machine_learning_engineering.db import TableNotReady, wait_for_table

log = logging.getLogger("eda")


def parameter(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {text!r}")
    try:
        return name, json.loads(raw)
    except json.JSONDecodeError:
        return name, raw


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eda", description=__doc__)
    p.add_argument("command", choices=["render", "run"])
    p.add_argument("--output", type=Path, help="PDF path (default: EDA_OUTPUT or eda/eda.pdf)")
    p.add_argument("--notebook", type=Path, help="another notebook to execute (default: the packaged one)")
    p.add_argument("--wait", action="store_true", help="wait for feature_store first (always on for `run`)")
    p.add_argument(
        "-p", "--parameter", type=parameter, action="append", default=[], help="notebook parameter NAME=VALUE"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    try:
        settings = EdaSettings.from_env()
        pdf = args.output or settings.output
        if args.wait or args.command == "run":
            wait_for_table(settings.database, "feature_store", settings.wait_timeout)
        render(pdf, {**settings.parameters(), **dict(args.parameter)}, args.notebook)
    except (ConfigError, TableNotReady, RenderError) as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
