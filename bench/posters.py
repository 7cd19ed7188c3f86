"""Figure 9: probe + poster frame of a finished video (what every completed status answer needs once).

Realistic files are made here (H.264 24 fps with B-frames, AAC stereo, like Wan's output): 720p 5 s
and 1080p 15 s. Each is described (one open: probe, then the frame at ~1 s scaled by swscale,
JPEG under 24 kB) nine times with a fresh cache; the median is compared with the probe alone
(opening the file and reading its header: the floor) in the same run. Targets from issue 15.
"""

from __future__ import annotations

import math
import statistics
import time
from array import array
from pathlib import Path
from typing import Any

from bench.common import Row
from wan_mcp.core.media.video import describe_video, probe_video


def _make(path: Path, width: int, height: int, seconds: int, fps: int = 24) -> None:
    import av
    from PIL import Image, ImageDraw

    out: Any = av.open(str(path), "w", format="mp4")
    video: Any = out.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "23"})
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    audio: Any = out.add_stream("aac", rate=48_000)
    audio.layout = "stereo"
    for i in range(seconds * fps):
        picture = Image.new("RGB", (width, height), (i % 255, (3 * i) % 255, 80))
        x = i * 5 % width
        ImageDraw.Draw(picture).ellipse(
            (x, height // 3, x + height // 4, height // 3 + height // 4), fill=(250, 250, 0)
        )
        frame = av.VideoFrame.from_image(picture)
        frame.pts = i
        for packet in video.encode(frame):
            out.mux(packet)
    for packet in video.encode():
        out.mux(packet)
    pts = 0
    while pts < seconds * 48_000:
        samples = array("f", [0.1 * math.sin(2 * math.pi * 440 * (pts + k) / 48_000) for k in range(1024)]).tobytes()
        sound = av.AudioFrame(format="fltp", layout="stereo", samples=1024)
        sound.planes[0].update(samples)
        sound.planes[1].update(samples)
        sound.sample_rate, sound.pts = 48_000, pts
        pts += 1024
        for packet in audio.encode(sound):
            out.mux(packet)
    for packet in audio.encode():
        out.mux(packet)
    out.close()


def _median_ms(fn: Any, reps: int) -> float:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


async def measure(workdir: Path, *, reps: int = 9) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    for name, size, seconds, target in (("720p 5 s", (1280, 720), 5, 60.0), ("1080p 15 s", (1920, 1080), 15, 150.0)):
        path = workdir / f"poster-{size[1]}p{seconds}.mp4"
        _make(path, *size, seconds)
        describe_video(path)  # warm: codecs loaded once per process, as in a running server
        ours = _median_ms(lambda p=path: describe_video(p), reps)
        floor = _median_ms(lambda p=path: probe_video(p), reps)
        rows.append(Row("9", f"probe + poster, {name} (median of {reps})", ours, "ms", baseline=floor,
                        baseline_name="probe only", target=f"<= {target:g} ms", met=ours <= target))  # fmt: skip
    return rows, []
