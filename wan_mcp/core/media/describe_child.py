"""The describing helper process: probe + poster frame of result videos, outside the server.

Why a separate process: PyAV, FFmpeg's libraries and Pillow add ~35 MiB to a process once a
single video is described, and never give it back; in the server that made idle RSS after the
first video 1.5x the SDK's floor. Here they live in a process that exits after ``idle`` seconds
without a request (or when its stdin closes), so the server's own memory stays near the floor.
And a result file is untrusted input to FFmpeg: a decoder crash on a hostile file ends this
helper, not the server (which answers without a poster and starts a fresh helper next time).

Protocol, one JSON object per line each way:
``{"path": str, "poster": bool}`` -> ``{"info": {width, height, duration, has_audio, codec} | null,
"poster": base64 JPEG | null}``.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import queue
import sys
import threading
from pathlib import Path

from wan_mcp.core.media.video import describe_video


def _answer(line: bytes) -> dict[str, object]:
    try:
        request = json.loads(line)
        info, jpeg = describe_video(Path(str(request["path"])), poster=bool(request.get("poster", True)))
    except Exception:  # a bad request or file: no description, the helper lives on
        return {"info": None, "poster": None}
    return {
        "info": None if info is None else dataclasses.asdict(info),
        "poster": None if jpeg is None else base64.b64encode(jpeg).decode("ascii"),
    }


def main(idle: float) -> int:
    lines: queue.Queue[bytes | None] = queue.Queue()

    def read() -> None:  # a thread, so waiting for the next request can time out on every platform
        for line in sys.stdin.buffer:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    out = sys.stdout.buffer
    while True:
        try:
            line = lines.get(timeout=idle)
        except queue.Empty:
            return 0  # idle: give the memory back; the server starts a fresh helper when it needs one
        if line is None:
            return 0
        out.write(json.dumps(_answer(line)).encode("ascii") + b"\n")
        out.flush()


if __name__ == "__main__":
    sys.exit(main(float(sys.argv[1]) if len(sys.argv) > 1 else 30.0))
