"""A loopback HTTP server for the remote-input tests: static files from one folder, with the
single-range requests GDAL's ``/vsicurl/`` reads COGs by (``206 Partial Content``), and a log
of every request so a test can assert how a file was read.

Bounded: it listens on 127.0.0.1 only (port chosen by the system), serves regular files inside
its folder and nothing else (no directory listings, no ``..``), and stops itself after
``lifetime_s`` even if a test forgets to stop it.
"""

from __future__ import annotations

import http.server
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: str | None
    status: int


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as GDAL's curl expects of a file server
    server: RangeServer

    def log_message(self, format: str, *args: object) -> None:
        pass  # the test reads server.requests instead of stderr

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        root = self.server.root
        name = unquote(urlsplit(self.path).path).lstrip("/")
        file = (root / name).resolve()
        if not name or not file.is_relative_to(root) or not file.is_file():
            self._log(404)
            self.send_error(404, "Not Found")
            return
        data = file.read_bytes()
        size = len(data)
        header = self.headers.get("Range")
        start, end, status = 0, size - 1, 200
        if header is not None:
            match = _RANGE.match(header.strip())
            if match and (match[1] or match[2]):  # one range; a multi-range gets the whole file
                if match[1]:
                    start = int(match[1])
                    end = min(int(match[2]), size - 1) if match[2] else size - 1
                else:  # bytes=-N: the last N bytes
                    start = max(0, size - int(match[2]))
                if start >= size or start > end:
                    self._log(416)
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
        self._log(status)
        self.send_response(status)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if body:
            self.wfile.write(data[start : end + 1])

    def _log(self, status: int) -> None:
        with self.server.lock:
            self.server.requests.append(
                Request(self.command, self.path, self.headers.get("Range"), status)
            )


class RangeServer(http.server.ThreadingHTTPServer):
    """``with RangeServer(folder) as server:`` serves ``folder`` at ``server.url``."""

    daemon_threads = True

    def __init__(self, root: Path, lifetime_s: float = 600.0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = Path(root).resolve()
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, name="range-server")
        self._deadline = threading.Timer(lifetime_s, self.shutdown)
        self._deadline.daemon = True

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def requests_for(self, name: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if urlsplit(r.path).path == f"/{name}"]

    def __enter__(self) -> RangeServer:
        self._thread.start()
        self._deadline.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._deadline.cancel()
        self.shutdown()
        self._thread.join(timeout=10)
        self.server_close()
