"""Films from clips: the exact last frame of a clip (to continue a shot) and clips joined into one MP4.

Why here and with PyAV: Wan 2.6 makes at most 15 s and has no "extend" call, but image-to-video
from the last frame of one clip continues it; and a film is its shots joined. Both are local,
bounded work on files we downloaded (opened through the same allowlisted demuxer and decoders
as every result file). Everything here is blocking: callers use ``offload.run_sync``.

Joining rules (stated, and tested):

* The output is one H.264 (yuv420p) + AAC stream at the FIRST clip's size and frame rate,
  ``+faststart`` so it plays while downloading.
* A clip of another size is scaled to fit inside that frame, keeping its aspect ratio, and
  padded with black (never cropped, never stretched). Another frame rate is resampled by
  showing, at each output instant, the latest source frame (no invented frames).
* Each clip lasts exactly its video duration in the film; its audio is resampled to the
  film's rate and layout, cut or padded to that duration, and a clip without audio gets
  silence, so sound stays in sync across every join.
* ``crossfade`` overlaps the last ``crossfade_seconds`` of each clip with the start of the
  next (picture blended, sound mixed); the film is shorter by that much per join.
* When every clip already matches (H.264 + AAC, same size, frame rate, sample rate and
  channels) and the transition is a cut, packets are copied, not re-encoded: fast and lossless.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import math
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from wan_mcp.core.media.video import _av, _open_allowed

if TYPE_CHECKING:  # Pillow is imported when a film is made, not at server start-up (cold start, RSS)
    from PIL import Image

__all__ = [
    "MAX_FILM_PARTS",
    "MAX_FILM_SECONDS",
    "ClipInfo",
    "FilmError",
    "FilmResult",
    "clip_info",
    "join_clips",
    "last_frame_png",
]

#: Most clips in one film, and its longest total duration: bounds the work of one call.
MAX_FILM_PARTS: Final = 20
MAX_FILM_SECONDS: Final = 300.0
_AUDIO_FRAME: Final = 1024  # samples per AAC frame
_DEFAULT_RATE: Final = 48_000  # when no clip has sound (the film still gets a silent AAC track)
_LAST_FRAME_WINDOW: Final = 3.0  # seconds before the end to seek to for the last frame

Transition = Literal["cut", "crossfade"]
Progress = Callable[[float], None]


class FilmError(Exception):
    """A clip that cannot be used; ``index`` says which (the caller names the task)."""

    def __init__(self, index: int, why: str) -> None:
        super().__init__(why)
        self.index = index
        self.why = why


@dataclass(frozen=True)
class ClipInfo:
    path: Path
    width: int
    height: int
    fps: Fraction
    duration: float  # of the video stream: what the clip lasts in a film
    codec: str
    audio_rate: int | None
    audio_channels: int | None
    audio_codec: str | None

    @property
    def frames(self) -> int:
        return max(1, round(self.duration * self.fps))


@dataclass(frozen=True)
class FilmResult:
    path: Path
    duration: float
    width: int
    height: int
    fps: Fraction
    copied: bool  # packets stream-copied (nothing re-encoded)
    sha256: str = ""
    size_bytes: int = 0


def _require_av(index: int = 0) -> Any:
    av = _av()
    if av is None:
        raise FilmError(index, "PyAV is not installed, so videos cannot be read")
    return av


def _open(path: Path, index: int) -> Any:
    av = _require_av(index)
    try:
        container = _open_allowed(av, path)
    except Exception as exc:  # any FFmpeg refusal: the file is not a usable video
        raise FilmError(index, f"it is not a readable MP4 ({type(exc).__name__})") from None
    if container is None:
        raise FilmError(index, "it is not an H.264/H.265 MP4 with AAC sound")
    return container


def clip_info(path: Path, index: int = 0) -> ClipInfo:
    container = _open(path, index)
    try:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        fps = Fraction(video.average_rate or video.guessed_rate or 24)
        if video.duration is not None and video.time_base is not None:
            duration = float(video.duration * video.time_base)
        elif video.frames:
            duration = float(video.frames / fps)
        else:
            duration = float(container.duration or 0) / 1_000_000
        if duration <= 0:
            raise FilmError(index, "it has no video frames")
        return ClipInfo(
            path=path,
            width=int(video.codec_context.width),
            height=int(video.codec_context.height),
            fps=fps,
            duration=duration,
            codec=str(video.codec_context.name),
            audio_rate=int(audio.codec_context.sample_rate) if audio is not None else None,
            audio_channels=int(audio.codec_context.channels) if audio is not None else None,
            audio_codec=str(audio.codec_context.name) if audio is not None else None,
        )
    finally:
        container.close()


def last_frame_png(path: Path) -> bytes:
    """The clip's LAST decoded frame, full resolution, as a PNG (lossless: nothing re-scaled).

    Seeks to a keyframe shortly before the end and decodes forward, so a long clip costs a
    few frames of work, not all of them; a file whose index lies is decoded from the start.
    """
    container = _open(path, 0)
    try:
        video = container.streams.video[0]
        last = None
        if video.duration and video.time_base:
            target = max(0, int(video.duration - _LAST_FRAME_WINDOW / float(video.time_base)))
            try:
                container.seek(target, stream=video, backward=True, any_frame=False)
                for frame in container.decode(video=0):
                    last = frame
            except Exception:
                last = None
        if last is None:
            container.seek(0)
            for frame in container.decode(video=0):
                last = frame
        if last is None:
            raise FilmError(0, "it has no video frames")
        buffer = io.BytesIO()
        last.to_image().save(buffer, "PNG")
        return buffer.getvalue()
    finally:
        container.close()


# --- joining ---------------------------------------------------------------------------------------


def join_clips(
    paths: Sequence[Path],
    dest: Path,
    *,
    transition: Transition = "cut",
    crossfade_seconds: float = 0.5,
    progress: Progress | None = None,
) -> FilmResult:
    """Join ``paths`` in order into ``dest`` (an MP4). Raises :class:`FilmError` naming a clip."""
    report = progress or (lambda _fraction: None)
    clips = [clip_info(path, i) for i, path in enumerate(paths)]
    total = sum(c.duration for c in clips)
    if total > MAX_FILM_SECONDS:
        raise FilmError(len(clips) - 1, f"the film would last {total:.0f} s, more than {MAX_FILM_SECONDS:g} s")
    result = None
    if transition == "cut" and _all_match(clips):
        try:
            result = _copy(clips, dest, report)
        except Exception:  # an odd file the copy path cannot remux: re-encoding always works
            dest.unlink(missing_ok=True)
    if result is None:
        result = _encode(clips, dest, transition, crossfade_seconds, report)
    digest, size = _sha256_and_size(dest)
    return replace(result, sha256=digest, size_bytes=size)


def _sha256_and_size(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _all_match(clips: Sequence[ClipInfo]) -> bool:
    first = clips[0]
    return all(
        c.codec == "h264"
        and c.audio_codec == "aac"
        and (c.width, c.height, c.fps, c.audio_rate, c.audio_channels)
        == (first.width, first.height, first.fps, first.audio_rate, first.audio_channels)
        for c in clips
    )


def _output(av: Any, dest: Path) -> Any:
    return av.open(str(dest), mode="w", format="mp4", options={"movflags": "+faststart"})


def _copy(clips: Sequence[ClipInfo], dest: Path, report: Progress) -> FilmResult:
    """Remux every clip's packets one after another, shifting their timestamps; no decoding."""
    av = _require_av()
    out = _output(av, dest)
    offset = 0.0
    audio_end = -math.inf
    try:
        first = _open(clips[0].path, 0)
        try:
            video_out = out.add_stream_from_template(first.streams.video[0])
            audio_out = out.add_stream_from_template(first.streams.audio[0])
        finally:
            first.close()
        for index, clip in enumerate(clips):
            container = _open(clip.path, index)
            try:
                for packet in container.demux(container.streams.video[0], container.streams.audio[0]):
                    if packet.dts is None or packet.size == 0:
                        continue
                    kind = packet.stream.type
                    base = packet.stream.time_base
                    start = float((packet.pts if packet.pts is not None else packet.dts) * base)
                    if kind == "audio" and (start >= clip.duration or (index > 0 and start < 0)):
                        # Encoder padding past the picture, or a later clip's priming frame: either
                        # would overlap a neighbour's sound (the muxer refuses overlapping audio).
                        continue
                    shift = round(offset / base)
                    packet.pts = None if packet.pts is None else packet.pts + shift
                    packet.dts = packet.dts + shift
                    if kind == "audio":  # never overlap the previous packet's sound (the muxer refuses it)
                        if float(packet.dts * base) < audio_end:
                            continue
                        audio_end = float((packet.dts + (packet.duration or 0)) * base)
                    packet.stream = video_out if kind == "video" else audio_out
                    out.mux(packet)
            finally:
                container.close()
            offset += clip.duration
            report((index + 1) / len(clips))
    finally:
        out.close()
    info = clip_info(dest)
    if abs(info.duration - offset) > 1.5 / float(clips[0].fps):
        raise ValueError(f"stream copy gave {info.duration:.3f} s, expected {offset:.3f} s")
    return FilmResult(dest, info.duration, info.width, info.height, clips[0].fps, copied=True)


def _encode(
    clips: Sequence[ClipInfo], dest: Path, transition: Transition, crossfade: float, report: Progress
) -> FilmResult:
    av = _require_av()
    first = clips[0]
    fps = first.fps
    width, height = first.width - first.width % 2, first.height - first.height % 2
    rate = next((c.audio_rate for c in clips if c.audio_rate), None) or _DEFAULT_RATE
    channels = next((c.audio_channels for c in clips if c.audio_channels), None) or 2
    layout = "mono" if channels == 1 else "stereo"
    overlap_frames = 0
    if transition == "crossfade" and len(clips) > 1:
        shortest = min(c.frames for c in clips)
        overlap_frames = max(1, min(round(crossfade * fps), shortest // 2))
    overlap_samples = round(overlap_frames / fps * rate)

    out = _output(av, dest)
    try:
        video = out.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "20"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = out.add_stream("aac", rate=rate)
        audio.layout = layout
        frame_index = 0
        sample_index = 0
        total_frames = sum(c.frames for c in clips)
        done = 0

        def emit_video(picture: Any) -> None:
            nonlocal frame_index, done
            frame = picture if isinstance(picture, av.VideoFrame) else av.VideoFrame.from_image(picture)
            frame = frame.reformat(width=width, height=height, format="yuv420p")
            frame.pts = frame_index
            frame.time_base = 1 / fps
            frame_index += 1
            for packet in video.encode(frame):
                out.mux(packet)
            done += 1
            if done % 10 == 0:
                report(min(0.99, done / total_frames))

        def emit_audio(planes: list[array[float]]) -> None:
            nonlocal sample_index
            count = len(planes[0])
            for start in range(0, count, _AUDIO_FRAME):
                chunk = [p[start : start + _AUDIO_FRAME] for p in planes]
                frame = av.AudioFrame(format="fltp", layout=layout, samples=len(chunk[0]))
                for plane, samples in zip(frame.planes, chunk, strict=True):
                    plane.update(samples.tobytes())
                frame.sample_rate = rate
                frame.pts = sample_index
                frame.time_base = Fraction(1, rate)
                sample_index += len(chunk[0])
                for packet in audio.encode(frame):
                    out.mux(packet)

        from PIL import Image

        held: list[Image.Image] = []  # the previous clip's tail, blended into this clip's head
        held_sound: list[array[float]] = []
        for index, clip in enumerate(clips):
            last = index == len(clips) - 1
            tail_start = clip.frames - (0 if last else overlap_frames)
            tail: list[Image.Image] = []
            for k, picture in enumerate(_clip_pictures(av, clip, index, fps, width, height)):
                if k < len(held):
                    picture = Image.blend(held[k], _image(picture), (k + 1) / (len(held) + 1))
                if k >= tail_start:
                    tail.append(_image(picture))
                else:
                    emit_video(picture)
            held = tail
            sound = _clip_audio(av, clip, index, rate, layout, channels, float(clip.frames / fps))
            if held_sound:
                n = len(held_sound[0])
                for ch in range(channels):
                    for s_i in range(min(n, len(sound[ch]))):
                        w = (s_i + 1) / (n + 1)
                        sound[ch][s_i] = held_sound[ch][s_i] * (1 - w) + sound[ch][s_i] * w
            keep = len(sound[0]) - (0 if last else overlap_samples)
            emit_audio([plane[:keep] for plane in sound])
            held_sound = [plane[keep:] for plane in sound]
        for packet in video.encode():
            out.mux(packet)
        for packet in audio.encode():
            out.mux(packet)
    finally:
        out.close()
    report(1.0)
    info = clip_info(dest)
    return FilmResult(dest, info.duration, info.width, info.height, fps, copied=False)


def _image(picture: Any) -> Image.Image:
    """A frame as an RGB Pillow image (blending works on those)."""
    from PIL import Image

    if isinstance(picture, Image.Image):
        return picture.convert("RGB") if picture.mode != "RGB" else picture
    image: Image.Image = picture.to_image()
    return image


class _Fitter:
    """A clip's frames at the film's size: scaled to fit (keeping the aspect ratio) and padded with
    black, by one libavfilter graph per source size (scale, pad, square pixels, yuv420p). That is
    the encoder's format already: no RGB round trip (0.8 ms a 720p frame against 4.8 ms through
    Pillow, measured)."""

    def __init__(self, av: Any, width: int, height: int) -> None:
        self._av = av
        self._width, self._height = width, height
        self._graph: Any = None
        self._source: tuple[int, int, str] | None = None
        self._last: tuple[Any, Any] = (None, None)  # a source frame shown twice is fitted once

    def __call__(self, frame: Any) -> Any:
        if (frame.width, frame.height) == (self._width, self._height):
            return frame
        if self._last[0] is frame:
            return self._last[1]
        source = (frame.width, frame.height, frame.format.name)
        if source != self._source:  # the first frame, or a stream that changes size midway
            self._graph, self._source = self._build(frame), source
        self._graph.push(frame)
        fitted = self._graph.pull()
        self._last = (frame, fitted)
        return fitted

    def _build(self, frame: Any) -> Any:
        width, height = self._width, self._height
        scale = min(width / frame.width, height / frame.height)
        fitted_w = min(width, max(2, round(frame.width * scale) // 2 * 2))
        fitted_h = min(height, max(2, round(frame.height * scale) // 2 * 2))
        graph = self._av.filter.Graph()
        chain = [
            graph.add_buffer(width=frame.width, height=frame.height, format=frame.format, time_base=Fraction(1, 1000)),
            graph.add("scale", f"{fitted_w}:{fitted_h}"),
            graph.add("pad", f"{width}:{height}:{(width - fitted_w) // 4 * 2}:{(height - fitted_h) // 4 * 2}:black"),
            graph.add("setsar", "1"),
            graph.add("format", "yuv420p"),
            graph.add("buffersink"),
        ]
        for upstream, downstream in itertools.pairwise(chain):
            upstream.link_to(downstream)
        graph.configure()
        return graph


def _seconds(frame: Any) -> float:
    if frame.pts is None or frame.time_base is None:
        return float(frame.time or 0.0)
    return float(frame.pts * frame.time_base)


def _clip_pictures(av: Any, clip: ClipInfo, index: int, fps: Fraction, width: int, height: int) -> Iterator[Any]:
    """Exactly ``clip.frames`` pictures at the film's rate: at each instant, the latest source frame."""
    container = _open(clip.path, index)
    fit = _Fitter(av, width, height)
    try:
        decoded = container.decode(video=0)
        current: Any = None
        upcoming: Any = next(decoded, None)
        origin = _seconds(upcoming) if upcoming is not None else 0.0
        for k in range(clip.frames):
            instant = k / fps
            while upcoming is not None and (current is None or _seconds(upcoming) - origin <= instant + 1e-6):
                current, upcoming = upcoming, next(decoded, None)
            if current is None:
                raise FilmError(index, "it has no video frames")
            yield fit(current)
    except av.error.FFmpegError as exc:
        raise FilmError(index, f"it cannot be decoded ({type(exc).__name__})") from None
    finally:
        container.close()


def _clip_audio(
    av: Any, clip: ClipInfo, index: int, rate: int, layout: str, channels: int, seconds: float
) -> list[array[float]]:
    """The clip's sound as float planes at the film's rate and layout, exactly ``seconds`` long
    (cut or padded with silence; all silence for a clip without sound)."""
    wanted = round(seconds * rate)
    planes = [array("f") for _ in range(channels)]
    if clip.audio_rate:
        container = _open(clip.path, index)
        try:
            resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)

            def take(frames: Any) -> None:
                for frame in frames:
                    for ch in range(channels):
                        planes[ch].frombytes(bytes(frame.planes[ch])[: frame.samples * 4])

            for frame in container.decode(audio=0):
                take(resampler.resample(frame))
                if len(planes[0]) >= wanted:
                    break
            else:
                take(resampler.resample(None))
        except av.error.FFmpegError as exc:
            raise FilmError(index, f"its sound cannot be decoded ({type(exc).__name__})") from None
        finally:
            container.close()
    for plane in planes:
        if len(plane) < wanted:
            plane.extend([0.0] * (wanted - len(plane)))
        del plane[wanted:]
    return planes
