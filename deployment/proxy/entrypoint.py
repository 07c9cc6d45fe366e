"""Render nginx.conf.template from the environment, then become nginx (the proxy's entrypoint).

    python entrypoint.py [NGINX_ARGS...]     # render into $NGINX_PREFIX, exec nginx in the foreground
    python entrypoint.py --print             # print the rendered configuration, start nothing

Only the names in DEFAULTS are substituted (`${NAME}`); an unknown upper-case `${NAME}` in the
template is an error, so a typo cannot reach nginx as an empty value. Values may not contain
characters that would end an nginx directive or block. Standard library only: the image is
python:3.11-slim plus Debian's nginx, and deployment/tests/test_proxy.py runs this same file.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Every setting of the template, with its default (the values the stack runs with).
DEFAULTS: dict[str, str] = {
    "PROXY_API_LISTEN": "8080",
    "PROXY_EDA_LISTEN": "8081",
    "API_UPSTREAM": "api:5000",
    "PROXY_RESOLVER": "127.0.0.11",  # Docker's embedded DNS
    "EDA_REPORT_DIR": "/srv/eda",
    "MAX_BODY_BYTES": "1048576",  # the API's own default (deployment.config)
    "NGINX_WORKER_PROCESSES": "auto",
    "NGINX_WORKER_CONNECTIONS": "1024",
    "NGINX_CLIENT_HEADER_TIMEOUT": "10s",
    "NGINX_CLIENT_BODY_TIMEOUT": "10s",
    "NGINX_SEND_TIMEOUT": "10s",
    "NGINX_KEEPALIVE_TIMEOUT": "15s",
    "NGINX_PROXY_CONNECT_TIMEOUT": "5s",
    "NGINX_PROXY_READ_TIMEOUT": "30s",
    "NGINX_PROXY_SEND_TIMEOUT": "10s",
    "NGINX_LIMIT_CONN": "64",
    "NGINX_LIMIT_REQ_RATE": "1000r/s",
    "NGINX_LIMIT_REQ_BURST": "1000",
}
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
UNSAFE = re.compile(r"[;{}\"'$\\#\x00-\x1f]")
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


class TemplateError(ValueError):
    pass


def settings(env: Mapping[str, str]) -> dict[str, str]:
    """DEFAULTS, overridden by the non-empty environment values of the same names."""
    values = {name: (env.get(name, "") or default).strip() for name, default in DEFAULTS.items()}
    for name, value in values.items():
        if not value or UNSAFE.search(value):
            raise TemplateError(f"{name}={value!r}: empty, or holds a character nginx would read as syntax")
    return values


def render(template: str, env: Mapping[str, str]) -> str:
    values = settings(env)
    unknown = sorted({name for name in PLACEHOLDER.findall(template) if name not in values})
    if unknown:
        raise TemplateError(f"the template uses unknown settings: {', '.join(unknown)}")
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def main(argv: list[str]) -> int:
    template = Path(os.environ.get("NGINX_TEMPLATE", "") or HERE / "nginx.conf.template")
    try:
        config = render(template.read_text(), os.environ)
    except (OSError, TemplateError) as exc:
        print(f"proxy: {exc}", file=sys.stderr)
        return 2
    if argv[:1] == ["--print"]:
        sys.stdout.write(config)
        return 0
    prefix = Path(os.environ.get("NGINX_PREFIX", "") or "/tmp/nginx")
    for name in TEMP_DIRS:
        (prefix / "tmp" / name).mkdir(parents=True, exist_ok=True)
    (prefix / "nginx.conf").write_text(config)
    sys.stdout.flush()
    # nginx replaces this process: it is PID 1 of the container and gets its signals.
    os.execvp("nginx", ["nginx", "-p", f"{prefix}/", "-c", "nginx.conf", *argv])
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
