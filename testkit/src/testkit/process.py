"""Run the API under its real gunicorn configuration as a child process.

The server tests and the serving benchmark both need "start gunicorn, wait until /ready
answers, stop it cleanly"; this is that, once. (`make demo` runs gunicorn as a daemon that
outlives make, so it uses gunicorn's own --daemon and --pid instead.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

GUNICORN_ARGS = ["-c", "python:deployment.gunicorn_conf", "deployment.app:create_app()"]


class ServerError(RuntimeError):
    """gunicorn exited or did not become ready; the message carries its log."""


def status(url: str, timeout: float = 10) -> int:
    """HTTP status of a GET, or 0 when nothing answers yet."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            code: int = response.status  # urlopen() is typed as returning Any
            return code
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


@contextmanager
def gunicorn(env: Mapping[str, str], port: int, ready_timeout: float = 60) -> Iterator[str]:
    """Serve on 127.0.0.1:port with `env`; yield the base URL once /ready answers 200.

    The server's log goes to a temporary file, not a pipe: a pipe nobody reads fills up and
    stalls a busy server.
    """
    executable = str(Path(sys.executable).parent / "gunicorn")
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            [executable, *GUNICORN_ARGS],
            env={**env, "GUNICORN_BIND": f"127.0.0.1:{port}"},
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: stopping it stops every worker too
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + ready_timeout
            while status(url + "/ready", timeout=2) != 200:
                if process.poll() is not None or time.monotonic() > deadline:
                    _stop(process)
                    log.seek(0)
                    raise ServerError(f"gunicorn did not become ready within {ready_timeout:.0f} s:\n{log.read()}")
                time.sleep(0.2)
            yield url
        finally:
            _stop(process)


def _stop(process: subprocess.Popen[str]) -> None:
    """Graceful stop (SIGTERM lets workers flush the prediction log), then SIGKILL the group."""
    if process.poll() is None:
        process.terminate()
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # any worker the master left behind
    process.wait()
