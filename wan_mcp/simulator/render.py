"""Synthesise the MP4 a finished task points at, with PyAV (libx264 + AAC).

The files have to be *real*: clients probe them (codec, size, duration, audio track), make
poster frames and hand them to people. They also have to be cheap, because test suites
download dozens: a low frame rate (3 fps), ``preset=ultrafast`` and drawing with Pillow keep a
1080p 15 s render around a second on a small machine.

Determinism is a feature: the same spec yields byte-identical files (one encoder thread,
``+bitexact`` muxing, no creation time, every pixel and sample derived from a hash of the
spec), so tests can compare downloads and cache keys.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import random
import textwrap
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import av
from PIL import Image, ImageDraw, ImageFont, ImageOps

logger = logging.getLogger(__name__)

FPS: Final = 3
AUDIO_RATE: Final = 24_000
AUDIO_FRAME_SAMPLES: Final = 1024
VIDEO_CODEC: Final = "libx264"
ZOOM: Final = 0.12  # how far the Ken Burns move pushes in over the clip

# (frame index, progress 0..1) -> picture with the output aspect ratio; rescaled by the encoder step.
FrameSource = Callable[[int, float], Image.Image]

# PyAV's stubs leave several calls untyped; treat the library as dynamic at these seams.
_av: Any = av


@dataclass(frozen=True)
class RenderSpec:
    """Everything that determines the output bytes (and nothing else)."""

    width: int
    height: int
    duration: int
    audio: bool
    seed: int
    model: str
    mode: str  # "t2v" | "i2v" | "r2v"
    prompt: str = ""
    negative_prompt: str = ""
    shot_type: str = "single"
    image: bytes | None = None  # i2v source, when the simulator holds it
    reference: bytes | None = None  # r2v reference video, when the simulator holds it
    source_label: str = ""  # what to print on a placeholder (the URL we could not fetch)

    def digest(self) -> bytes:
        """Stable hash of the spec; seeds every visual and audible choice."""
        hasher = hashlib.sha256()
        for part in (
            self.width,
            self.height,
            self.duration,
            self.audio,
            self.seed,
            self.model,
            self.mode,
            self.prompt,
            self.negative_prompt,
            self.shot_type,
            self.source_label,
        ):
            hasher.update(repr(part).encode())
            hasher.update(b"\x00")
        for blob in (self.image, self.reference):
            hasher.update(hashlib.sha256(blob or b"").digest())
        return hasher.digest()


def render_mp4(spec: RenderSpec) -> bytes:
    """Encode the clip for ``spec``. CPU-bound: call it from a worker thread."""
    rng = random.Random(spec.digest())
    source = _frame_source(spec, rng)
    buffer = io.BytesIO()
    # +bitexact keeps encoder version strings and timestamps out, so bytes depend only on the spec.
    container: Any = _av.open(buffer, mode="w", format="mp4", options={"fflags": "+bitexact"})
    try:
        video: Any = container.add_stream(VIDEO_CODEC, rate=FPS, options={"preset": "ultrafast", "threads": "1"})
        video.width = spec.width
        video.height = spec.height
        video.pix_fmt = "yuv420p"
        video.codec_context.thread_count = 1
        audio: Any = None
        if spec.audio:
            audio = container.add_stream("aac", rate=AUDIO_RATE)
            audio.layout = "mono"
            audio.codec_context.thread_count = 1
        total = spec.duration * FPS
        for index in range(total):
            frame = _av.VideoFrame.from_image(source(index, index / max(total - 1, 1)))
            if (frame.width, frame.height) != (spec.width, spec.height):
                # swscale in C is several times faster than Pillow for the Ken Burns rescale.
                frame = frame.reformat(width=spec.width, height=spec.height, format="yuv420p")
            frame.pts = index
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if audio is not None:
            for audio_frame in _audio_frames(spec, rng):
                for packet in audio.encode(audio_frame):
                    container.mux(packet)
            for packet in audio.encode():
                container.mux(packet)
    finally:
        container.close()
    return buffer.getvalue()


# --- pictures -------------------------------------------------------------------------------------------


def _frame_source(spec: RenderSpec, rng: random.Random) -> FrameSource:
    size = (spec.width, spec.height)
    if spec.mode == "i2v":
        picture = _decode_image(spec.image) if spec.image is not None else None
        if picture is not None:
            return _ken_burns(picture, size, rng, caption=spec.prompt)
        return _placeholder(size, rng, f"image not reachable offline: {spec.source_label}", spec.prompt)
    if spec.mode == "r2v":
        picture = _first_video_frame(spec.reference) if spec.reference is not None else None
        if picture is not None:
            return _ken_burns(picture, size, rng, caption=spec.prompt)
        return _placeholder(size, rng, f"reference not reachable offline: {spec.source_label}", spec.prompt)
    return _text_scene(spec, size, rng)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _palette(rng: random.Random) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    def colour(low: int, high: int) -> tuple[int, int, int]:
        return (rng.randint(low, high), rng.randint(low, high), rng.randint(low, high))

    return colour(10, 90), colour(120, 245)


def _gradient(size: tuple[int, int], rng: random.Random) -> Image.Image:
    dark, light = _palette(rng)
    ramp = Image.linear_gradient("L").rotate(rng.choice((0, 90, 180, 270)))
    return ImageOps.colorize(ramp.resize(size, Image.Resampling.BILINEAR), dark, light)


def _write_caption(picture: Image.Image, lines: list[str]) -> None:
    width, height = picture.size
    font = _font(max(14, height // 28))
    draw = ImageDraw.Draw(picture)
    y = height // 14
    for line in lines:
        draw.text((width // 20, y), line, fill=(255, 255, 255), font=font, stroke_width=2, stroke_fill=(0, 0, 0))
        y += int(height / 28 * 1.4)


def _caption_lines(header: str, prompt: str, width: int) -> list[str]:
    chars = max(20, width // 22)
    body = textwrap.wrap(prompt, chars)[:4] if prompt else []
    return [header, *body]


def _overlay_clock(picture: Image.Image, progress: float) -> Image.Image:
    """A progress bar: makes motion (and frame order) visible even on a still source."""
    width, height = picture.size
    draw = ImageDraw.Draw(picture)
    bar = max(4, height // 90)
    draw.rectangle((0, height - bar, int(width * progress), height), fill=(255, 255, 255))
    return picture


def _text_scene(spec: RenderSpec, size: tuple[int, int], rng: random.Random) -> FrameSource:
    width, height = size
    shots = 3 if spec.shot_type == "multi" else 1
    header = f"{spec.model} t2v  seed {spec.seed}"
    backgrounds = []
    for _ in range(shots):
        background = _gradient(size, rng)
        _write_caption(background, _caption_lines(header, spec.prompt, width))
        backgrounds.append(background)
    radius = min(width, height) // 10
    ball = (rng.randint(150, 255), rng.randint(150, 255), rng.randint(150, 255))
    phase = rng.random() * math.tau
    wobble = rng.uniform(0.8, 2.0)

    def frame(index: int, progress: float) -> Image.Image:
        picture = backgrounds[min(int(progress * shots), shots - 1)].copy()
        x = int((width - 2 * radius) * progress) + radius
        y = int(height * (0.55 + 0.2 * math.sin(phase + wobble * progress * math.tau)))
        ImageDraw.Draw(picture).ellipse((x - radius, y - radius, x + radius, y + radius), fill=ball)
        return _overlay_clock(picture, progress)

    return frame


def _placeholder(size: tuple[int, int], rng: random.Random, reason: str, prompt: str) -> FrameSource:
    background = _gradient(size, rng)
    _write_caption(background, _caption_lines(reason[:120], prompt, size[0]))

    def frame(index: int, progress: float) -> Image.Image:
        return _overlay_clock(background.copy(), progress)

    return frame


def _ken_burns(picture: Image.Image, size: tuple[int, int], rng: random.Random, caption: str) -> FrameSource:
    """Slow push-in with a slight drift: the source picture itself, visibly animated."""
    width, height = size
    base_size = (round(width * (1 + ZOOM)), round(height * (1 + ZOOM)))
    base = ImageOps.fit(picture.convert("RGB"), base_size, Image.Resampling.BILINEAR)
    drift_x, drift_y = rng.uniform(-1, 1), rng.uniform(-1, 1)

    def frame(index: int, progress: float) -> Image.Image:
        zoom = 1 + ZOOM * progress
        crop_w, crop_h = base_size[0] / zoom, base_size[1] / zoom
        slack_x, slack_y = (base_size[0] - crop_w) / 2, (base_size[1] - crop_h) / 2
        left = slack_x * (1 + drift_x * progress)
        top = slack_y * (1 + drift_y * progress)
        box = (round(left), round(top), round(left + crop_w), round(top + crop_h))
        return _overlay_clock(base.crop(box), progress)

    return frame


def _decode_image(data: bytes) -> Image.Image | None:
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.seek(0)  # first frame of a GIF
            return ImageOps.exif_transpose(opened).convert("RGB")
    except Exception:  # any undecodable upload becomes a placeholder, never a failed render
        logger.info("uploaded image could not be decoded; drawing a placeholder")
        return None


def _first_video_frame(data: bytes) -> Image.Image | None:
    try:
        with _av.open(io.BytesIO(data), mode="r") as container:
            for decoded in container.decode(video=0):
                picture: Image.Image = decoded.to_image()
                return picture
    except Exception:  # a broken reference becomes a placeholder, never a failed render
        logger.info("reference video could not be decoded; drawing a placeholder")
    return None


# --- sound ----------------------------------------------------------------------------------------------


def _audio_frames(spec: RenderSpec, rng: random.Random) -> Iterator[Any]:
    """A quiet pentatonic melody, one note per half second, chosen by the spec's hash."""
    scale = (220.0, 247.5, 275.0, 330.0, 366.7, 440.0)
    notes = [rng.choice(scale) for _ in range(spec.duration * 2)]
    note_samples = AUDIO_RATE // 2
    total = spec.duration * AUDIO_RATE
    step = math.tau / AUDIO_RATE
    pts = 0
    while pts < total:
        count = min(AUDIO_FRAME_SAMPLES, total - pts)
        samples = array("f")
        for offset in range(pts, pts + count):
            within = offset % note_samples
            envelope = min(1.0, within / 600, (note_samples - within) / 600)
            samples.append(0.12 * envelope * math.sin(step * notes[offset // note_samples] * offset))
        frame = _av.AudioFrame(format="flt", layout="mono", samples=count)
        frame.planes[0].update(samples.tobytes())
        frame.sample_rate = AUDIO_RATE
        frame.pts = pts
        pts += count
        yield frame
