"""The stack's reverse proxy (deployment/proxy): Debian's nginx, the same template, for real.

Each test renders deployment/proxy/nginx.conf.template through the container's own entrypoint
(local ports, a temporary prefix, sometimes short timeouts) and runs nginx in front of the real
API under gunicorn, or of a small recording upstream where the point is what reaches the API.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from urllib.parse import urlparse

import pytest

from deployment.config import ServeSettings
from testkit.localdb import free_port

PROXY_DIR = Path(__file__).resolve().parents[1] / "proxy"
ENTRYPOINT = PROXY_DIR / "entrypoint.py"
# What the proxy must answer /health within while under attack, and what gunicorn alone
# must not: generous, for a loaded 2-core CI machine (a bare /health takes about 1 ms).
PROBE_TIMEOUT = 3.0
ONE_MIB = 1 << 20


def nginx_dir() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    assert found, "nginx is needed for these tests: apt-get install nginx (.ci/run installs it)"
    return str(Path(found).parent)


def load_entrypoint() -> ModuleType:
    """deployment/proxy/entrypoint.py as a module (it is a script in the image, not in the package)."""
    spec = importlib.util.spec_from_file_location("proxy_entrypoint", ENTRYPOINT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


entrypoint = load_entrypoint()


def proxy_env(prefix: Path, **settings: str) -> dict[str, str]:
    """The test's environment without any stray proxy setting, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if k not in entrypoint.DEFAULTS and not k.startswith("NGINX_")}
    env["PATH"] = f"{nginx_dir()}:{env.get('PATH', '')}"
    return {**env, "NGINX_PREFIX": str(prefix), **settings}


@dataclass
class Proxy:
    api_url: str
    eda_url: str
    report_dir: Path
    log: Path

    @property
    def api_port(self) -> int:
        return int(urlparse(self.api_url).port or 0)

    @property
    def eda_port(self) -> int:
        return int(urlparse(self.eda_url).port or 0)


def accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def running_proxy(tmp_path: Path, upstream: str, **settings: str) -> Iterator[Proxy]:
    """nginx started by the container's entrypoint, stopped (SIGQUIT, then SIGKILL) afterwards."""
    api_port, eda_port = free_port(), free_port()
    report = tmp_path / "report"
    report.mkdir(parents=True, exist_ok=True)
    log_path = tmp_path / "nginx.log"
    env = proxy_env(
        tmp_path / "nginx",
        PROXY_API_LISTEN=f"127.0.0.1:{api_port}",
        PROXY_EDA_LISTEN=f"127.0.0.1:{eda_port}",
        API_UPSTREAM=upstream,
        EDA_REPORT_DIR=str(report),
        NGINX_WORKER_PROCESSES="2",
        **settings,
    )
    # As root, nginx hands its workers to `nobody`, who cannot enter pytest's private temporary
    # directories; keep them as root. (The image runs nginx as an unprivileged user.)
    extra = ["-g", "user root;"] if os.geteuid() == 0 else []
    # O_APPEND: nginx reopens /dev/stdout for its access log, and must not write over its error log.
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, str(ENTRYPOINT), *extra],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while not (accepts(api_port) and accepts(eda_port)):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"nginx did not start listening:\n{log_path.read_text()}")
            time.sleep(0.05)
        yield Proxy(f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{eda_port}", report, log_path)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGQUIT)  # what `docker stop` sends (STOPSIGNAL)
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@dataclass
class Echo:
    """A recording upstream: answers each request with what it received, as JSON."""

    url: str
    requests: list[dict] = field(default_factory=list)
    holding: threading.Event = field(default_factory=threading.Event)  # a /hold request arrived
    release: threading.Event = field(default_factory=threading.Event)  # let /hold requests answer


@pytest.fixture
def echo() -> Iterator[Echo]:
    state = Echo("")

    class Handler(BaseHTTPRequestHandler):
        def answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            record = {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": len(body)}
            state.requests.append(record)
            if self.path == "/hold":
                state.holding.set()
                state.release.wait(30)
            payload = json.dumps(record).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"127.0.0.1:{server.server_address[1]}"
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()


def request(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None, timeout: float = 10
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def probe(url: str) -> tuple[int, float]:
    """Status of GET url (0 when it did not answer within PROBE_TIMEOUT) and the seconds taken."""
    started = time.monotonic()
    try:
        status = request(url, timeout=PROBE_TIMEOUT)[0]
    except OSError:  # timed out, or refused
        status = 0
    return status, time.monotonic() - started


class Tricklers:
    """`count` clients that each send a request one byte every `interval` s and never finish
    it: the slow-client attack, on the header ("header") or, after a complete header, on the
    body ("body"). Bounded: each sends at most `max_bytes` bytes slowly, and all stop as soon as
    the `with` block ends. `held` counts the connections the server still held open (no answer,
    no close) when they stopped."""

    HEADER = b"GET /health HTTP/1.1\r\nHost: attack\r\nX-Slow: " + b"z" * 64
    BODY_HEADER = (
        b"POST /predict HTTP/1.1\r\nHost: attack\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n"
    )

    def __init__(
        self, port: int, part: str = "header", count: int = 24, interval: float = 2.0, max_bytes: int = 8
    ) -> None:
        self.port, self.count, self.interval, self.max_bytes = port, count, interval, max_bytes
        self.prefix, self.slow = (b"", self.HEADER) if part == "header" else (self.BODY_HEADER, b"{" + b" " * 63)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.connected = self.settled = self.held = 0
        self.all_settled = threading.Event()  # every client has sent its first byte, or failed to
        self.threads = [threading.Thread(target=self.trickle, daemon=True) for _ in range(count)]

    def settle(self, connected: bool) -> None:
        with self.lock:
            self.connected += connected
            self.settled += 1
            if self.settled == self.count:
                self.all_settled.set()

    def trickle(self) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            sock.sendall(self.prefix + self.slow[:1])
        except OSError:
            self.settle(False)
            return
        self.settle(True)
        with sock:
            try:
                for i in range(1, self.max_bytes):
                    if self.stop.wait(self.interval):
                        break
                    sock.sendall(self.slow[i : i + 1])
                sock.setblocking(False)
                sock.recv(1)  # an answer or the end of the stream: the server let go of it
            except BlockingIOError:
                with self.lock:
                    self.held += 1  # nothing to read, not closed: still held
            except OSError:
                pass  # reset: cut off

    def __enter__(self) -> Tricklers:
        for thread in self.threads:
            thread.start()
        assert self.all_settled.wait(30), "the slow clients did not get going"
        assert self.connected == self.count, f"only {self.connected} of {self.count} slow clients connected"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=self.interval + 10)


@pytest.mark.parametrize("part", ["header", "body"])
def test_slow_clients_starve_gunicorn_but_not_the_proxy_in_front_of_it(server, tmp_path, part) -> None:
    gunicorn_port = int(urlparse(server.url).port or 0)
    assert probe(server.url + "/health")[0] == 200

    # Straight at gunicorn (2 workers x 4 threads): 24 slow clients hold every thread, and
    # /health waits behind them. This is what the proxy is for, and shows this test can fail.
    with Tricklers(gunicorn_port, part):
        status, took = probe(server.url + "/health")
    assert status == 0, f"gunicorn answered /health ({status}) in {took:.2f} s despite the slow clients"
    deadline = time.monotonic() + 30
    while probe(server.url + "/health")[0] != 200:  # the threads come back once the clients go
        assert time.monotonic() < deadline, "gunicorn did not recover after the slow clients left"

    # The same attack at the proxy: nginx holds the 24 half-sent requests itself (a body is
    # buffered whole before gunicorn hears of the request), gunicorn never sees them, and
    # /health through the proxy answers at once, again and again.
    with running_proxy(tmp_path, f"127.0.0.1:{gunicorn_port}") as proxy, Tricklers(proxy.api_port, part) as attack:
        answers = []
        for _ in range(5):
            answers.append(probe(proxy.api_url + "/health"))
            attack.stop.wait(0.5)  # spread the probes over the attack (ends early if it is over)
        status, headers, body = request(proxy.api_url + "/ready")  # the real API, through the proxy
        assert status == 200 and json.loads(body)["status"] == "ready" and headers["X-Request-ID"]
    assert [status for status, _ in answers] == [200] * 5, answers
    assert max(took for _, took in answers) < PROBE_TIMEOUT, answers
    assert attack.held == 24, f"the proxy dropped slow clients instead of absorbing them: {attack.held} held"


def test_request_ids_and_forwarded_for_reach_the_api_and_nginx_hides_its_version(echo, tmp_path) -> None:
    with running_proxy(tmp_path, echo.url) as proxy:
        status, headers, body = request(proxy.api_url + "/predict?x=1", headers={"X-Forwarded-For": "6.6.6.6"})
        assert status == 200
        seen = json.loads(body)
        assert seen["path"] == "/predict?x=1"
        assert seen["headers"]["X-Forwarded-For"] == "127.0.0.1"  # the forged value is replaced
        generated = headers["X-Request-ID"]
        assert len(generated) == 32 and seen["headers"]["X-Request-ID"] == generated
        assert headers["Server"] == "nginx"  # server_tokens off: no version

        status, headers, body = request(proxy.api_url + "/", headers={"X-Request-ID": "client-abc.123"})
        assert headers["X-Request-ID"] == "client-abc.123" == json.loads(body)["headers"]["X-Request-ID"]
        status, headers, body = request(proxy.api_url + "/", headers={"X-Request-ID": "x" * 200})
        assert headers["X-Request-ID"] != "x" * 200  # not a sane token: nginx's own instead
    assert f"rid={generated}" in proxy.log.read_text()  # the access log carries it too


def test_a_body_over_the_limit_is_refused_by_the_proxy_before_the_api(echo, tmp_path) -> None:
    with running_proxy(tmp_path, echo.url) as proxy:
        status, _, body = request(proxy.api_url + "/predict/batch", "POST", b"x" * ONE_MIB)
        assert status == 200 and json.loads(body)["body"] == ONE_MIB  # the API's limit: allowed

        status, headers, body = request(proxy.api_url + "/predict/batch", "POST", b"x" * (ONE_MIB + 1))
        assert status == 413
        assert headers["Content-Type"] == "application/json"
        assert json.loads(body) == {"error": f"request body larger than {ONE_MIB} bytes"}

        # Without a Content-Length (chunked), nginx counts while it reads.
        host = urlparse(proxy.api_url)
        connection = http.client.HTTPConnection(host.hostname, host.port, timeout=10)
        connection.request("POST", "/predict/batch", body=iter([b"x" * 65536] * 17), encode_chunked=True)
        assert connection.getresponse().status == 413
        connection.close()
    assert [r["body"] for r in echo.requests] == [ONE_MIB]  # nothing over the limit reached it


def wait_until_cut(sock: socket.socket, deadline: float, trickle: bytes = b"", interval: float = 0.5) -> bool:
    """Keep sending `trickle` one byte per `interval` until the server closes the connection
    (True) or the deadline passes (False)."""
    sock.settimeout(interval)
    for byte in [trickle[i : i + 1] for i in range(len(trickle))] or [b""]:
        while True:
            if time.monotonic() > deadline:
                return False
            try:
                if byte:
                    sock.sendall(byte)
                data = sock.recv(4096)
            except TimeoutError:
                if byte:
                    break  # sent, no answer yet: next byte
                continue
            except (ConnectionResetError, BrokenPipeError):
                return True
            if data == b"" or data.startswith(b"HTTP/1.1 408"):
                return True
    return False


def test_slow_headers_and_bodies_are_cut_after_their_timeouts(echo, tmp_path) -> None:
    with running_proxy(tmp_path, echo.url, NGINX_CLIENT_HEADER_TIMEOUT="2s", NGINX_CLIENT_BODY_TIMEOUT="2s") as proxy:
        # A header trickled a byte every 0.5 s: each byte arrives in time, but the whole header
        # must arrive within client_header_timeout, counted from the connection.
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", proxy.api_port)) as sock:
            cut = wait_until_cut(sock, started + 12, trickle=Tricklers.HEADER * 4)
        took = time.monotonic() - started
        assert cut, "a client trickling its header was never cut off"
        assert 1.5 < took < 8, f"cut after {took:.1f} s, expected about 2 s"

        # A body that stops arriving: cut once client_body_timeout passes without a read.
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", proxy.api_port)) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            cut = wait_until_cut(sock, started + 12)
        took = time.monotonic() - started
        assert cut, "a client that stopped sending its body was never cut off"
        assert 1.5 < took < 8, f"cut after {took:.1f} s, expected about 2 s"
    assert echo.requests == []  # neither reached the API


def test_per_address_limits_pass_sixteen_clients_and_refuse_a_flood(echo, tmp_path) -> None:
    # The stack's defaults: 16 concurrent clients from one address, 10 requests each, all pass.
    with running_proxy(tmp_path / "defaults", echo.url) as proxy:
        statuses: list[int] = []

        def client() -> None:
            host = urlparse(proxy.api_url)
            connection = http.client.HTTPConnection(host.hostname, host.port, timeout=10)
            for _ in range(10):
                connection.request("GET", "/health")
                response = connection.getresponse()
                response.read()
                statuses.append(response.status)
            connection.close()

        threads = [threading.Thread(target=client) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert statuses == [200] * 160

    # Low limits show the directives work: a burst over the rate, and a second concurrent request.
    low = {"NGINX_LIMIT_REQ_RATE": "1r/s", "NGINX_LIMIT_REQ_BURST": "2", "NGINX_LIMIT_CONN": "1"}
    with running_proxy(tmp_path / "low", echo.url, **low) as proxy:
        burst = [request(proxy.api_url + "/health") for _ in range(6)]
        assert [status for status, _, _ in burst].count(429) >= 2, [status for status, _, _ in burst]
        refused = next(answer for answer in burst if answer[0] == 429)
        assert "slow down" in json.loads(refused[2])["error"] and refused[1]["Retry-After"] == "1"

    with running_proxy(tmp_path / "conn", echo.url, NGINX_LIMIT_CONN="1") as proxy:
        held: list[int] = []
        thread = threading.Thread(target=lambda: held.append(request(proxy.api_url + "/hold")[0]))
        thread.start()
        assert echo.holding.wait(10), "the first request did not reach the upstream"
        assert request(proxy.api_url + "/health")[0] == 429  # one request in progress is the limit
        echo.release.set()
        thread.join(timeout=10)
        assert held == [200]


def test_the_eda_report_is_served_as_a_pdf_and_503_until_rendered(tmp_path) -> None:
    with running_proxy(tmp_path, f"127.0.0.1:{free_port()}") as proxy:
        status, headers, body = request(proxy.eda_url + "/")
        assert status == 503
        assert headers["Content-Type"] == "text/plain; charset=utf-8"
        assert b"has not been rendered yet" in body
        status, _, body = request(proxy.eda_url + "/health")
        assert (status, body) == (200, b"ok\n")

        pdf = proxy.report_dir / "eda.pdf"
        pdf.write_bytes(b"%PDF-1.7 first")
        for path in ("/", "/eda.pdf"):
            status, headers, body = request(proxy.eda_url + path)
            assert (status, body) == (200, b"%PDF-1.7 first"), path
            assert headers["Content-Type"] == "application/pdf"
            assert headers["Content-Disposition"] == 'inline; filename="eda.pdf"'
            assert headers["Cache-Control"] == "no-cache"

        # A re-render (written beside it, then renamed, as eda.render does) shows at once.
        (proxy.report_dir / ".eda.pdf.abc.tmp").write_bytes(b"%PDF-1.7 second")
        os.replace(proxy.report_dir / ".eda.pdf.abc.tmp", pdf)
        assert request(proxy.eda_url + "/eda.pdf")[2] == b"%PDF-1.7 second"

        # Nothing else in the directory is reachable, the renderer's temporary files included.
        (proxy.report_dir / ".eda.pdf.xyz.tmp").write_bytes(b"%PDF half")
        for path in ("/.eda.pdf.xyz.tmp", "/other.pdf", "/eda.pdf/"):
            assert request(proxy.eda_url + path)[0] == 404, path

        # The API side, with nothing behind it: a JSON 502, not nginx's HTML page.
        status, headers, body = request(proxy.api_url + "/ready")
        assert status == 502 and headers["Content-Type"] == "application/json"
        assert "not reachable" in json.loads(body)["error"]


def test_the_stacks_own_configuration_is_valid_and_settings_are_checked(tmp_path) -> None:
    # Every default, exactly as the container renders it: nginx -t accepts it.
    env = proxy_env(tmp_path / "defaults")
    checked = subprocess.run([sys.executable, str(ENTRYPOINT), "-t"], env=env, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    config = (tmp_path / "defaults" / "nginx.conf").read_text()
    assert "${" not in config
    for directive in (
        "proxy_request_buffering on;",
        "proxy_buffering on;",
        "server_tokens off;",
        "client_max_body_size 1048576;",
        "client_header_timeout 10s;",
        "listen 8080;",
        "listen 8081;",
        "set $api_upstream api:5000;",
        "access_log /dev/stdout proxy;",
        "error_log stderr warn;",
        "pid nginx.pid;",
    ):
        assert directive in config, directive

    # A value that would smuggle in a directive is refused, naming the variable.
    env = proxy_env(tmp_path / "bad", MAX_BODY_BYTES="1m; include /etc/shadow")
    refused = subprocess.run([sys.executable, str(ENTRYPOINT), "--print"], env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and "MAX_BODY_BYTES" in refused.stderr and refused.stdout == ""
    with pytest.raises(entrypoint.TemplateError, match="unknown settings: NOT_A_SETTING"):
        entrypoint.render("listen ${NOT_A_SETTING};", {})


def test_the_proxys_body_limit_defaults_to_the_apis() -> None:
    assert int(entrypoint.DEFAULTS["MAX_BODY_BYTES"]) == ServeSettings.from_env({}).max_body_bytes == ONE_MIB
