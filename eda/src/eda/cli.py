"""`companydata-eda render | run`: render the PDF; `run` first waits for feature_store (the container).

Serving is not this package's job: in the stack the proxy (deployment/proxy) serves the PDF
from the volume this renders into, so `run` exits 0 once the PDF is written.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eda.config import EdaSettings
from eda.render import render
from machine_learning_engineering.cli import run
from machine_learning_engineering.db import wait_for_table

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
    p = argparse.ArgumentParser(prog="companydata-eda", description=__doc__)
    p.add_argument("command", choices=["render", "run"])
    p.add_argument("--output", type=Path, help="PDF path (default: EDA_OUTPUT or eda/eda.pdf)")
    p.add_argument("--notebook", type=Path, help="another notebook to execute (default: the packaged one)")
    p.add_argument("--wait", action="store_true", help="wait for feature_store first (always on for `run`)")
    p.add_argument(
        "-p", "--parameter", type=parameter, action="append", default=[], help="notebook parameter NAME=VALUE"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = EdaSettings.from_env()
    pdf = args.output or settings.output
    if args.wait or args.command == "run":
        wait_for_table(settings.database, "feature_store", settings.wait_timeout)
    render(pdf, {**settings.parameters(), **dict(args.parameter)}, args.notebook)
    return 0


entry = run(main)
