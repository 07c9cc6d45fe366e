"""`companydata-registry list | show V | promote V --reason R | rollback --reason R`.

The champion changes only here (by a person) or by the training job's promotion gate; each
change records who, when and why (see `machine_learning_engineering.registry`).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from machine_learning_engineering import registry
from machine_learning_engineering.cli import run
from machine_learning_engineering.config import RegistrySettings
from machine_learning_engineering.model import model_class

log = logging.getLogger("machine_learning_engineering.registry")


def _list(model_dir: Path) -> int:
    pointer = registry.champion_pointer(model_dir)
    print(f"{'version':<26} {'status':<16} {'skill':<8} {'roc_auc':>7} {'rows':>10}  created_at")
    for version in reversed(registry.versions(model_dir)):
        try:
            metadata = registry.read_metadata(model_dir, version)
        except registry.ModelVersionError as exc:
            print(f"{version:<26} {'broken':<16} {exc}")
            continue
        evaluation = metadata.get("evaluation", {})
        auc = evaluation.get("metrics", {}).get("roc_auc", float("nan"))
        rows = metadata.get("training", {}).get("rows", 0)
        skill = "skill" if registry.has_skill(metadata) else "NO SKILL"
        print(
            f"{version:<26} {registry.status(model_dir, version, pointer):<16} {skill:<8} {auc:>7.4f} {rows:>10,}  "
            f"{metadata.get('created_at', '')}"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="companydata-registry", description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="the model directory (default: $MODEL_DIR or models)")
    parser.add_argument("--model-class", help="the MLEModel the versions hold (default: $MODEL_CLASS or customer)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every version, newest first, with its status")
    show = commands.add_parser("show", help="a version's metadata and events, as JSON")
    show.add_argument("version")
    promote_cmd = commands.add_parser("promote", help="make a version the champion (it must load and predict)")
    promote_cmd.add_argument("version")
    promote_cmd.add_argument("--reason", required=True, help="why: recorded with who and when")
    rollback_cmd = commands.add_parser("rollback", help="go back to the previous champion")
    rollback_cmd.add_argument("--reason", required=True, help="why: recorded with who and when")
    args = parser.parse_args(argv)
    settings = RegistrySettings.from_env()
    model_dir = args.model_dir or settings.model_dir
    cls = model_class(args.model_class or settings.model_class)
    if args.command == "list":
        return _list(model_dir)
    if args.command == "show":
        shown = {
            "status": registry.status(model_dir, args.version, registry.champion_pointer(model_dir)),
            "metadata": registry.read_metadata(model_dir, args.version),
            "events": registry.events(model_dir, args.version),
        }
        print(json.dumps(shown, indent=2, default=str))
        return 0
    if args.command == "promote":
        _, metadata = registry.load_verified(model_dir, args.version, cls)
        if not registry.has_skill(metadata):
            log.warning("promoting %s, which has NO SKILL: %s", args.version, metadata["evaluation"].get("verdict"))
        pointer = registry.promote(model_dir, args.version, args.reason, manual=True)
    else:
        pointer = registry.rollback(model_dir, args.reason, cls)
    log.info("champion is now %s (was %s): %s", pointer["version"], pointer["previous"], pointer["reason"])
    return 0


entry = run(main)

if __name__ == "__main__":
    entry()
