"""`mcqa view`: a scored run, a training run or a compare folder opened in a browser, served by
http.server on 127.0.0.1 at a free port (or its page's path printed, to open as a file).

A folder received from someone else is untrusted, so the server serves that one folder and
nothing else: only regular files whose path inside it has no symlink and no '..' (anything
else, a folder listing included, is 404), it writes nothing, and every reply carries a policy
that lets a page run no script and load nothing from anywhere but data: images."""

from __future__ import annotations

import os
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import quote, unquote, urlsplit

from mcqa.errors import McqaError
from mcqa.eval.html import COMPARE, REPORT

HOST = "127.0.0.1"
POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def find_page(path: str | Path) -> Path:
    """The page of a folder: its compare.html, its report.html, or a training run's
    test/report.html (or the page itself, when given)."""
    path = Path(path)
    if path.name in (REPORT, COMPARE) and _plain_file(path):
        return path
    if path.is_dir():
        for page in (path / COMPARE, path / REPORT, path / "test" / REPORT):
            if _plain_file(page):
                return page
        if any((path / f).is_file() for f in ("metrics.json", "compare.json", "run.json")):
            raise McqaError(
                f"{path}: has no report.html or compare.html (written before mcqa wrote them); "
                "score it again (mcqa score ... --out FOLDER) to get one"
            )
        raise McqaError(
            f"{path}: not a scored run, training run or compare folder (none of compare.html, "
            "report.html, test/report.html in it)"
        )
    if not path.exists():
        raise McqaError(f"{path}: no such folder")
    raise McqaError(f"{path}: not a run or compare folder, nor a report.html or compare.html")


def _plain_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


class FolderHandler(SimpleHTTPRequestHandler):
    """GET and HEAD of the plain files of one folder; '/' goes to the page."""

    def __init__(self, *args, root: Path, page: str, **kwargs):
        self.root, self.page = root, page
        super().__init__(*args, directory=str(root), **kwargs)

    def target(self) -> Path | None:
        parts = [p for p in unquote(urlsplit(self.path).path).split("/") if p]
        if any(p in (".", "..") or "\\" in p or "\0" in p for p in parts):
            return None
        wanted = self.root.joinpath(*parts)
        try:
            real = wanted.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        # real == wanted: no symlink on the way (one could point anywhere on this machine)
        return real if real == wanted and real.is_file() else None

    def send_head(self):
        if urlsplit(self.path).path in ("", "/"):
            self.send_response(HTTPStatus.FOUND)
            self.send_header("Location", "/" + quote(self.page))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        path = self.target()
        if path is None:
            self.send_error(HTTPStatus.NOT_FOUND, "not a file of this folder")
            return None
        f = open(path, "rb")
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Length", str(os.fstat(f.fileno()).st_size))
        self.end_headers()
        return f

    def end_headers(self):
        self.send_header("Content-Security-Policy", POLICY)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format, *args):  # noqa: A002 - http.server's own signature
        pass  # a line per request would bury the URL the user needs


def make_server(page: Path) -> ThreadingHTTPServer:
    """A server of the page's folder on 127.0.0.1 at a port the system picks (free by definition)."""
    root = page.parent.resolve()
    return ThreadingHTTPServer((HOST, 0), partial(FolderHandler, root=root, page=page.name))


def page_url(server: ThreadingHTTPServer, page: Path) -> str:
    return f"http://{HOST}:{server.server_address[1]}/{quote(page.name)}"


def serve(page: Path, announce: Callable[[str], None]) -> None:
    """Serve until Ctrl-C, which stops it quietly."""
    with make_server(page) as server:
        try:  # Ctrl-C as soon as the URL shows is a stop like any other
            announce(page_url(server, page))
            server.serve_forever()
        except KeyboardInterrupt:
            pass
