"""A real headless Chromium driven from Python over the DevTools protocol (no downloads).

Debian's ``chromium`` runs with ``--remote-debugging-port=0``; the port it picked is read from
``DevToolsActivePort`` in its profile directory, and one page is driven through its WebSocket
with plain protocol commands: navigate, focus, type (``Input.insertText``, as a keyboard would),
click (mouse events at the element's centre) and read the page.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--no-default-browser-check",
    "--remote-debugging-port=0",
]
START_TIMEOUT_S = 30.0


def chromium_binary() -> str | None:
    """Return the Chromium on PATH, if any."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """One browser tab, driven by DevTools protocol commands."""

    def __init__(self, socket: ClientConnection) -> None:
        self._socket = socket
        self._ids = itertools.count(1)
        # Every URL the page asked for, once ``Network.enable`` was sent.
        self.requested: list[str] = []

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a command and return its result (events in between are skipped)."""
        command_id = next(self._ids)
        await self._socket.send(json.dumps({"id": command_id, "method": method, "params": params}))
        while True:
            message = json.loads(await self._socket.recv())
            if message.get("method") == "Network.requestWillBeSent":
                self.requested.append(message["params"]["request"]["url"])
            if message.get("id") == command_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    async def evaluate(self, expression: str) -> Any:
        """Return the value of a JavaScript expression in the page."""
        reply = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return reply["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = 10.0) -> Any:
        """Wait until a JavaScript expression is truthy in the page; return its value."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                value = await self.evaluate(expression)
            except RuntimeError:  # the page is between documents
                value = None
            if value:
                return value
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting for {expression}")

    async def goto(self, url: str) -> None:
        """Open ``url`` and wait until its document has loaded."""
        await self.send("Page.navigate", url=url)
        await self.wait_for(
            f"location.href === {json.dumps(url)} && document.readyState === 'complete'"
        )

    async def type_into(self, selector: str, text: str) -> None:
        """Focus the element and type ``text`` as keyboard input."""
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        await self.send("Input.insertText", text=text)

    async def click(self, selector: str) -> None:
        """Click the middle of the element with the mouse."""
        box = await self.evaluate(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        x, y = box
        for kind in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1
            )

    async def text(self, selector: str = "body") -> str:
        """Return the visible text of the element."""
        value = await self.evaluate(f"document.querySelector({json.dumps(selector)})?.innerText")
        return str(value or "")


# Chromium as on a machine with no network but loopback: every other host fails to resolve.
OFFLINE_FLAGS = ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]


@asynccontextmanager
async def open_page(*flags: str) -> AsyncIterator[Page]:
    """Start a headless Chromium with a fresh profile and yield its page; stop it after."""
    binary = chromium_binary()
    assert binary, "chromium is not installed (scripts/bootstrap --test installs it)"
    # Chromium's helper processes can still write to the profile while it is removed
    # ("Directory not empty"): a leftover temporary directory is no test failure.
    with tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True) as profile:
        process = await asyncio.create_subprocess_exec(
            binary,
            *CHROMIUM_FLAGS,
            *flags,
            f"--user-data-dir={profile}",
            "about:blank",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while (port := await asyncio.to_thread(_devtools_port, profile)) is None:
                assert process.returncode is None, "chromium exited at start-up"
                assert time.monotonic() < deadline, "chromium did not open its DevTools port"
                await asyncio.sleep(0.1)
            targets = await asyncio.to_thread(_targets, port)
            url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            async with connect(url, max_size=None) as socket:
                page = Page(socket)
                await page.send("Page.enable")
                yield page
        finally:
            if process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), 10)
                except TimeoutError:
                    process.kill()
                    await process.wait()


def _devtools_port(profile: str) -> int | None:
    port_file = Path(profile, "DevToolsActivePort")
    text = port_file.read_text() if port_file.exists() else ""
    return int(text.split()[0]) if text.strip() else None


def _targets(port: int) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as answer:
        found: list[dict[str, Any]] = json.load(answer)
        return found
