"""Serve the rendered PDF over HTTP: `/` and `/eda.pdf` answer the PDF, `/health` answers ok.

The standard library's threaded server is enough for one file read by people; the file is
read per request, so a re-render (written atomically) is served at once.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

log = logging.getLogger(__name__)


def handler_for(pdf: Path) -> type[BaseHTTPRequestHandler]:
    class PdfHandler(BaseHTTPRequestHandler):
        server_version = "companydata-eda"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/health":
                self._send(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8")
            elif path in ("/", f"/{pdf.name}"):
                try:
                    body = pdf.read_bytes()
                except FileNotFoundError:
                    self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"the EDA has not been rendered yet\n", "text/plain")
                    return
                self._send(HTTPStatus.OK, body, "application/pdf", inline=pdf.name)
            else:
                self._send(HTTPStatus.NOT_FOUND, f"nothing at {path}; the EDA is at /\n".encode(), "text/plain")

        def _send(self, status: HTTPStatus, body: bytes, content_type: str, inline: str | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-cache")
            if inline:
                self.send_header("Content-Disposition", f'inline; filename="{inline}"')
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.info("%s %s", self.address_string(), format % args)

    return PdfHandler


def serve(pdf: Path, port: int, host: str = "0.0.0.0") -> None:
    server = ThreadingHTTPServer((host, port), handler_for(pdf))
    log.info("serving %s on http://%s:%d/", pdf, host, server.server_address[1])
    try:
        server.serve_forever()
    finally:
        server.server_close()
