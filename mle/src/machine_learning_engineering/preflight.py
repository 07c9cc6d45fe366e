"""`companydata-preflight`: refuse a production stack with public secrets.

Compose runs this once before every other service. With `STACK_ENV=production` it exits 1,
naming every password that is still a documented development default and a missing
`API_TOKEN`, so nothing starts; in development it only says which mode it is in.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from machine_learning_engineering.cli import run
from machine_learning_engineering.config import production_problems


def main(argv: Sequence[str] | None = None) -> int:
    problems = production_problems()
    if problems:
        print("preflight: STACK_ENV=production refuses to start:", file=sys.stderr)
        for problem in problems:
            print(f"preflight:   {problem}", file=sys.stderr)
        print("preflight: set them in .env (see .env.example), or unset STACK_ENV for development", file=sys.stderr)
        return 1
    print("preflight: ok")
    return 0


entry = run(main)

if __name__ == "__main__":
    entry()
