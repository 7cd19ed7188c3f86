"""Probe + poster frame of finished files, asked of short-lived helper processes and remembered.

The work itself is :func:`wan_mcp.core.media.video.describe_video`; it runs in
:mod:`wan_mcp.core.media.describe_child` processes (at most ``size`` at once, each exiting after
``idle_seconds`` unused), so the server never loads PyAV for a poster and its idle memory stays
near the SDK's floor (bench figure 1), and a decoder crash on a hostile file costs a poster, not
the server. If no helper can be started (a frozen build, no ``sys.executable``), the same work runs
in-process on a worker thread, as it did before.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from wan_mcp.core import offload
from wan_mcp.core.caches import Lru
from wan_mcp.core.media.video import VideoInfo, describe_video

__all__ = ["DescribeHelpers", "VideoDescriber"]

log = logging.getLogger("wan_mcp.media")

Described = tuple[VideoInfo | None, bytes | None]

#: A helper exits after this long without a request (the server's memory is what idle means here).
HELPER_IDLE_SECONDS = 20.0
#: One description takes 5-10 ms (bench figure 9); far longer means a stuck decoder: the helper is killed.
HELPER_TIMEOUT_SECONDS = 30.0
#: An answer is a probe and a poster under 24 kB (base64): anything longer is not our helper's.
_MAX_ANSWER_BYTES = 256 * 1024


class _Helper:
    def __init__(self, process: Process) -> None:
        self.process = process
        assert process.stdin is not None and process.stdout is not None
        self.stdin = process.stdin
        self.stdout = BufferedByteReceiveStream(process.stdout)

    async def ask(self, path: Path, poster: bool) -> dict[str, Any]:
        await self.stdin.send(json.dumps({"path": str(path), "poster": poster}).encode("ascii") + b"\n")
        line = await self.stdout.receive_until(b"\n", _MAX_ANSWER_BYTES)
        answer = json.loads(line)
        if not isinstance(answer, dict):
            raise ValueError("not an object")
        return answer

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            if self.process.returncode is None:
                self.process.kill()
            with anyio.move_on_after(5):
                await self.process.aclose()


def _decoded(answer: dict[str, Any]) -> Described:
    info = answer.get("info")
    poster = answer.get("poster")
    try:
        described = VideoInfo(**info) if isinstance(info, dict) else None
        jpeg = base64.b64decode(poster, validate=True) if isinstance(poster, str) else None
    except (TypeError, ValueError, binascii.Error):
        return None, None
    return described, jpeg


def _helper_env() -> dict[str, str]:
    """The server's environment without its own settings (the gateway key among them): a helper needs none."""
    return {k: v for k, v in os.environ.items() if not k.startswith("WAN_MCP_")}


class DescribeHelpers:
    """At most ``size`` helper processes, started on demand, reused while they live."""

    def __init__(
        self,
        *,
        size: int = 2,
        idle_seconds: float = HELPER_IDLE_SECONDS,
        timeout_seconds: float = HELPER_TIMEOUT_SECONDS,
        command: list[str] | None = None,
    ) -> None:
        self._slots = anyio.CapacityLimiter(size)
        self._idle_seconds = idle_seconds
        self._timeout = timeout_seconds
        self._command = command or [sys.executable, "-m", "wan_mcp.core.media.describe_child"]
        self._ready: list[_Helper] = []
        self._in_process = False  # no helper could be started: describe here instead
        self._warming = False
        self._closed = False  # closed by the server's shutdown: a late warm-up must not start one
        self.started = 0  # helpers started so far (for tests and benchmarks)

    async def _start(self) -> _Helper:
        process = await anyio.open_process(
            [*self._command, str(self._idle_seconds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # the server's stderr: never its stdout, which may be the MCP wire
            env=_helper_env(),
        )
        self.started += 1
        return _Helper(process)

    async def warm(self) -> None:
        """Start a helper now if none is alive, so the next description does not wait for its
        cold start (~0.1 s: an interpreter and PyAV). It exits after ``idle_seconds`` unused."""
        if self._closed or self._in_process or self._ready or self._slots.borrowed_tokens or self._warming:
            return
        self._warming = True
        try:
            self._ready.append(await self._start())
        except OSError:
            pass  # describe() finds out again, and says so
        finally:
            self._warming = False

    async def describe(self, path: Path, *, poster: bool) -> Described:
        async with self._slots:
            if self._in_process:
                return await offload.run_sync(lambda: describe_video(path, poster=poster))
            for _ in range(2):  # a helper that exited while idle is replaced once
                helper = self._ready.pop() if self._ready else None
                if helper is None:
                    try:
                        helper = await self._start()
                    except OSError as err:
                        log.warning("no media helper process (%s); describing videos in-process", err)
                        self._in_process = True
                        return await offload.run_sync(lambda: describe_video(path, poster=poster))
                try:
                    with anyio.fail_after(self._timeout):
                        answer = await helper.ask(path, poster)
                except TimeoutError:
                    log.warning("media helper took over %.0f s on %s; stopped it", self._timeout, path.name)
                    await helper.close()
                    return None, None
                except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError,
                        anyio.IncompleteRead, anyio.DelimiterNotFound, OSError, ValueError):  # fmt: skip
                    await helper.close()  # exited (idle, or crashed on this file): one more try, fresh
                    continue
                except BaseException:  # cancelled mid-answer: its next line would be this one's, so stop it
                    await helper.close()
                    raise
                self._ready.append(helper)
                return _decoded(answer)
            log.warning("media helper failed twice on %s; no poster for it", path.name)
            return None, None

    async def aclose(self) -> None:
        self._closed = True
        ready, self._ready = self._ready, []
        for helper in ready:
            await helper.close()


def _version(path: Path) -> tuple[str, int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return (str(path), st.st_ino, st.st_size, st.st_mtime_ns)


class VideoDescriber:
    """Probe + poster frame of a finished file, remembered per file version.

    Agents ask for the status of a finished task again and again, so the result is kept per
    (path, inode, size, mtime) for the last ``capacity`` files.
    """

    def __init__(self, *, posters: bool, capacity: int = 64, helpers: DescribeHelpers | None = None) -> None:
        self._posters = posters
        self._helpers = helpers or DescribeHelpers()
        self._cache: Lru[tuple[str, int, int, int], Described] = Lru(capacity)

    async def __call__(self, path: Path) -> Described:
        key = await offload.run_sync(_version, path)
        if key is None:
            return None, None
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        described = await self._helpers.describe(path, poster=self._posters)
        self._cache.put(key, described)
        return described

    async def warm(self) -> None:
        """A video is about to finish: have a helper ready for it."""
        await self._helpers.warm()

    async def aclose(self) -> None:
        await self._helpers.aclose()
