"""Headless Chromium driven over the DevTools protocol through a pipe (--remote-debugging-pipe:
commands on fd 3, replies on fd 4, each a JSON message ending in a NUL byte), so the browser
tests need no websocket client and no port. A page is opened from a file with the network
emulated offline and every host name unresolvable; what the page logged as an error, every URL
it requested, and what a small expression measures in it come back to the test."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-extensions",
    "--disable-sync",
    "--mute-audio",
    "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--remote-debugging-pipe",
]


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class Page:
    """What a loaded page gave back."""

    errors: list[str] = field(default_factory=list)  # console errors, exceptions, error log entries
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    value: Any = None  # what the measuring expression returned


class Browser:
    def __init__(self, exe: str, timeout: float = 30):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="mcqa-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def pipes_on_3_and_4():
            # In the child: copied above 10 first, so the two moves cannot overwrite each other. The
            # copies dup2 makes are inheritable; Python's own descriptors are not, so exec closes
            # them without close_fds (which would also close 3 and 4).
            r, w = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.proc = subprocess.Popen(
            [exe, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,
            preexec_fn=pipes_on_3_and_4,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._ids = iter(range(1, 1 << 30))
        self._inbox: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buf = b""
        while True:
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                self._inbox.put(None)
                return
            buf += chunk
            while b"\0" in buf:
                msg, buf = buf.split(b"\0", 1)
                self._inbox.put(json.loads(msg))

    def _next(self, deadline: float) -> dict:
        msg = self._inbox.get(timeout=max(0.01, deadline - time.time()))
        if msg is None:
            raise RuntimeError("chromium closed its DevTools pipe")
        return msg

    def call(
        self, method: str, params: dict | None = None, session: str | None = None, events: list | None = None
    ) -> dict:
        """Send one command and wait for its reply; events that arrive meanwhile go to `events`."""
        cid = next(self._ids)
        msg = {"id": cid, "method": method, "params": params or {}, **({"sessionId": session} if session else {})}
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + self.timeout
        while True:
            reply = self._next(deadline)
            if reply.get("id") == cid:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if events is not None and "method" in reply:
                events.append(reply)

    def open(
        self, path: Path, measure: str, screenshot: Path | None = None, width: int = 1200, height: int | None = None
    ) -> Page:
        """Load a file offline, wait for its load event, evaluate `measure` (a JS expression whose
        value must be JSON) and optionally save a PNG of the page (its whole height unless
        `height` is given)."""
        events: list[dict] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        try:
            for method in ("Page.enable", "Runtime.enable", "Log.enable", "Network.enable"):
                self.call(method, session=session, events=events)
            self.call(
                "Network.emulateNetworkConditions",
                {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
                session,
                events,
            )
            self.call(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height or 900, "deviceScaleFactor": 1, "mobile": False},
                session,
                events,
            )
            self.call("Page.navigate", {"url": path.resolve().as_uri()}, session, events)
            deadline = time.time() + self.timeout
            while not any(e["method"] == "Page.loadEventFired" and e.get("sessionId") == session for e in events):
                msg = self._next(deadline)
                if "method" in msg:
                    events.append(msg)
            value = self.call("Runtime.evaluate", {"expression": measure, "returnByValue": True}, session, events)
            if "exceptionDetails" in value:
                raise RuntimeError(f"measuring the page failed: {value['exceptionDetails']}")
            if screenshot is not None:
                if height is None:
                    full = self.call("Page.getLayoutMetrics", session=session, events=events)["cssContentSize"]
                    self.call(
                        "Emulation.setDeviceMetricsOverride",
                        {"width": width, "height": int(full["height"]), "deviceScaleFactor": 1, "mobile": False},
                        session,
                        events,
                    )
                shot = self.call("Page.captureScreenshot", {"format": "png"}, session, events)
                screenshot.write_bytes(base64.b64decode(shot["data"]))
            return Page(
                errors=_errors(events, session), requests=_requests(events, session), value=value["result"].get("value")
            )
        finally:
            self.call("Target.closeTarget", {"targetId": target})

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, queue.Empty, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)
        shutil.rmtree(self.profile, ignore_errors=True)


def _errors(events: list[dict], session: str) -> list[str]:
    out = []
    for e in events:
        if e.get("sessionId") != session:
            continue
        p = e.get("params", {})
        if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif e["method"] == "Runtime.exceptionThrown":
            out.append("exception: " + json.dumps(p.get("exceptionDetails", {}))[:500])
        elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
    return out


def _requests(events: list[dict], session: str) -> list[str]:
    return [
        e["params"]["request"]["url"]
        for e in events
        if e.get("sessionId") == session and e["method"] == "Network.requestWillBeSent"
    ]
