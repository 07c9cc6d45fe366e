from __future__ import annotations

import threading
import urllib.error
import urllib.request
from http.server import ThreadingHTTPServer

import pytest

from eda.serve import handler_for


@pytest.fixture
def server(tmp_path):
    pdf = tmp_path / "eda.pdf"
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(pdf))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield pdf, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_the_pdf_is_served_at_the_root_and_by_name_and_a_rerender_is_served_at_once(server) -> None:
    pdf, url = server
    assert get(url + "/")[0] == 503  # not rendered yet
    pdf.write_bytes(b"%PDF-1 first")
    assert get(url + "/") == (200, "application/pdf", b"%PDF-1 first")
    pdf.write_bytes(b"%PDF-1 second")
    assert get(url + "/eda.pdf") == (200, "application/pdf", b"%PDF-1 second")
    assert get(url + "/health")[0] == 200
    assert get(url + "/../etc/passwd")[0] == 404
