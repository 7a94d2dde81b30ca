"""Headless Chromium driven over the DevTools protocol (CDP), for the browser tests.

A small synchronous client on ``websockets``: open a URL, wait until the page shows a
text, read the visible text, take a screenshot, and collect console errors and
uncaught exceptions. Debian's ``chromium`` package is the browser (``make browser-deps``
installs it); nothing is downloaded at test time.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    """The Chromium binary: ``MMOPS_CHROMIUM`` or the first on PATH (None if none)."""
    explicit = os.environ.get("MMOPS_CHROMIUM")
    if explicit:
        return explicit
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


class PageError(AssertionError):
    """The page did not show what it should, or logged an error."""


class Browser:
    """One headless Chromium with one tab."""

    def __init__(self, binary: str, width: int = 1400, height: int = 1100) -> None:
        from websockets.sync.client import connect

        self._profile = tempfile.mkdtemp(prefix="mmops-chromium-")
        self._process = subprocess.Popen(
            [
                binary,
                "--headless=new",
                "--no-sandbox",  # root in containers; the pages are our own, on loopback
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
                f"--user-data-dir={self._profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.is_file() or not port_file.read_text().strip():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"{binary} did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().splitlines()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        self._ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
        self._ids = itertools.count(1)
        self.errors: list[str] = []
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def send(self, method: str, **params):
        """Call ``method`` and return its result, recording events that arrive meanwhile."""
        call_id = next(self._ids)
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=60))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._record(message)

    def _record(self, message: dict) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            self.errors.append(f"uncaught: {text}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            args = [a.get("value", a.get("description", "")) for a in params.get("args", [])]
            self.errors.append("console.error: " + " ".join(str(a) for a in args))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            self.errors.append(f"{entry['source']}: {entry['text']} {entry.get('url', '')}")

    def open(self, url: str) -> None:
        self.errors.clear()
        self.send("Page.navigate", url=url)

    def text(self) -> str:
        """The page's visible text."""
        result = self.send(
            "Runtime.evaluate", expression="document.body ? document.body.innerText : ''"
        )
        return result.get("result", {}).get("value", "")

    def evaluate(self, expression: str):
        return self.send("Runtime.evaluate", expression=expression, returnByValue=True)[
            "result"
        ].get("value")

    def wait_for_text(self, *needles: str, timeout_s: float = 45.0) -> str:
        """Poll until every needle is in the visible text; returns that text.

        Raises:
            PageError: a needle never showed (the message names which, with the text).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.text()
            missing = [n for n in needles if n not in text]
            if not missing:
                return text
            if time.monotonic() > deadline:
                raise PageError(f"never shown: {missing}; the page showed:\n{text[:3000]}")
            time.sleep(0.3)

    def screenshot(self, path: Path, full_page: bool = False, max_height: int = 6000) -> Path:
        """A PNG of the viewport, or of the whole page up to ``max_height`` pixels.

        A full-page capture resizes the viewport for a moment, which makes single-page
        apps (MLflow's UI) re-render into their loading state: use it for static pages."""
        params: dict = {"format": "png"}
        if full_page:
            size = self.send("Page.getLayoutMetrics")["cssContentSize"]
            params["clip"] = {
                "x": 0,
                "y": 0,
                "width": size["width"],
                "height": min(size["height"], max_height),
                "scale": 1,
            }
            params["captureBeyondViewport"] = True
        data = self.send("Page.captureScreenshot", **params)["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def drain(self, seconds: float = 0.5) -> None:
        """Read events for ``seconds`` (late console errors)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self._record(
                    json.loads(self._ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
                )
            except TimeoutError:
                return

    def close(self) -> None:
        try:
            if getattr(self, "_ws", None) is not None:
                self._ws.close()
        finally:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
            shutil.rmtree(self._profile, ignore_errors=True)
