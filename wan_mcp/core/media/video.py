"""Video probing and poster frames through PyAV, which is optional.

PyAV is a heavy binary wheel that some hosts cannot install, so it is imported inside
the functions: without it :func:`probe_video` and :func:`poster_frame` return None and
the server still works, just without dimensions and thumbnails. Both are blocking;
callers run them via ``anyio.to_thread``.

The poster is a results-as-links companion: a tiny JPEG under a strict byte budget, so
returning it inline never blows an agent's context.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # Pillow is imported where a poster is made, not at server start-up
    from PIL import Image

__all__ = [
    "VideoInfo",
    "describe_video",
    "poster_frame",
    "probe_video",
    "sniff_video",
    "video_problem",
]

_POSTER_AT_SECONDS = 1.0
_MAX_DECODED_FRAMES = 240  # bounds the work for a file with a broken index
_POSTER_QUALITIES = (80, 70, 60, 50, 40, 30)
_MIN_POSTER_SIDE = 48


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    duration: float
    has_audio: bool
    codec: str


#: The only demuxer and decoders a result file is handed to. Downloaded videos are untrusted
#: input to FFmpeg, whose other demuxers (playlists that fetch URLs, image sequences, exotic
#: formats with a history of CVEs) we never need: Wan produces MP4/MOV with H.264 or H.265 and AAC.
_DEMUXER = "mp4"  # FFmpeg's mov/mp4/m4a/3gp demuxer
_VIDEO_CODECS = frozenset({"h264", "hevc"})
_AUDIO_CODECS = frozenset({"aac"})


def _av() -> Any | None:
    try:
        import av
    except ImportError:
        return None
    return av


def _open_allowed(av: Any, path: Path) -> Any | None:
    """The container if it is MP4/MOV with only allowed codecs (else None; nothing is decoded)."""
    container = av.open(str(path), mode="r", format=_DEMUXER)
    video = container.streams.video
    audio = container.streams.audio
    if (
        not video
        or any(str(v.codec_context.name) not in _VIDEO_CODECS for v in video)
        or any(str(a.codec_context.name) not in _AUDIO_CODECS for a in audio)
        or len(container.streams) != len(video) + len(audio) + len(container.streams.data)
    ):
        container.close()
        return None
    return container


def probe_video(path: Path) -> VideoInfo | None:
    """Dimensions, duration, audio and codec of ``path``, or None when unknown.

    None covers both "PyAV is not installed" and "not a readable video": callers use
    this to enrich a result they already have (a downloaded file), and a missing probe
    must never turn a finished task into an error. Callers that need a verdict on an
    input file sniff its bytes with ``sniff_video`` first.
    """
    return describe_video(path, poster=False)[0]


def _info(av: Any, container: Any) -> VideoInfo:
    stream = container.streams.video[0]
    duration = 0.0
    if container.duration is not None:
        duration = float(container.duration) / float(av.time_base)
    elif stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    return VideoInfo(
        width=int(stream.codec_context.width),
        height=int(stream.codec_context.height),
        duration=round(duration, 3),
        has_audio=bool(container.streams.audio),
        codec=str(stream.codec_context.name),
    )


def _grab_frame(av: Any, container: Any, max_side: int) -> Image.Image | None:
    """The keyframe at or before ~1 s (the first frame of a clip with one keyframe), scaled down by
    swscale; ONLY that frame is decoded and converted.

    Converting every decoded frame to a Pillow image on the way (as this once did), in a second
    open after the probe's, cost 140 ms for a 720p 5 s file and 260 ms at 1080p 15 s. Decoding on
    from the keyframe to the frame at 1 s cost 13 / 29 ms and ~9.5 ms of CPU per finished job when
    a thousand end together (bench figure 12, where it was most of what posters added); the decoder
    skipping every frame but keyframes, on one thread (no queue of pictures decoded ahead), makes it
    one picture's decode.
    """
    stream = container.streams.video[0]
    keyframes_only = False
    with contextlib.suppress(Exception):  # a build without these options only costs speed
        stream.codec_context.thread_count = 1
        stream.codec_context.skip_frame = "NONKEY"
        keyframes_only = True
    target = None
    duration = container.duration / av.time_base if container.duration else 0.0
    if duration > _POSTER_AT_SECONDS * 1.5 and stream.time_base is not None:
        target = int(_POSTER_AT_SECONDS / stream.time_base)
        try:
            container.seek(target, stream=stream, backward=True, any_frame=False)
        except Exception:  # unseekable: decode from the start instead
            container.seek(0)
            target = None
    chosen = None
    for count, frame in enumerate(container.decode(stream)):
        chosen = frame  # past the end of a short file: its last frame
        done = keyframes_only or target is None or frame.pts is None or frame.pts >= target
        if done or count >= _MAX_DECODED_FRAMES:
            break
    if chosen is None:
        return None
    scale = min(1.0, max_side / max(chosen.width, chosen.height, 1))
    width, height = max(2, round(chosen.width * scale)), max(2, round(chosen.height * scale))
    picture: Image.Image = chosen.reformat(width=width, height=height, format="rgb24").to_image()
    return picture


def _poster(av: Any, container: Any, *, max_side: int, max_bytes: int) -> bytes | None:
    try:
        image = _grab_frame(av, container, max_side)
    except Exception:  # a poster is a nicety: any decoder failure just means no poster
        return None
    if image is None:
        return None
    from PIL import Image

    side = max_side
    while side >= _MIN_POSTER_SIDE:
        thumb = image.copy()
        thumb.thumbnail((side, side), Image.Resampling.LANCZOS)
        for quality in _POSTER_QUALITIES:
            out = io.BytesIO()
            thumb.save(out, "JPEG", quality=quality)
            if out.tell() <= max_bytes:
                return out.getvalue()
        side = int(side * 0.75)
    return None


def describe_video(
    path: Path, *, poster: bool = True, max_side: int = 320, max_bytes: int = 24_000
) -> tuple[VideoInfo | None, bytes | None]:
    """Probe and (optionally) a small JPEG poster of ``path``, from ONE open of the file.

    ``(None, None)`` without PyAV or for a file that is not an allowed video; a poster that
    cannot be made is None while the probe still answers.
    """
    av = _av()
    if av is None:
        return None, None
    try:
        container = _open_allowed(av, path)
        if container is None:
            return None, None
        with container:
            info = _info(av, container)
            return info, _poster(av, container, max_side=max_side, max_bytes=max_bytes) if poster else None
    except Exception:  # PyAV raises its own FFmpegError tree plus OSError/ValueError
        return None, None


def poster_frame(path: Path, *, max_side: int = 320, max_bytes: int = 24_000) -> bytes | None:
    """A small JPEG of the keyframe at or before ~1 s; None without PyAV or a decodable frame."""
    return describe_video(path, max_side=max_side, max_bytes=max_bytes)[1]


_ISO_TOP_LEVEL = frozenset(
    {
        b"ftyp",
        b"moov",
        b"mdat",
        b"free",
        b"skip",
        b"wide",
        b"uuid",
        b"meta",
        b"pdin",
        b"moof",
        b"mfra",
        b"sidx",
        b"styp",
        b"pnot",
        b"prfl",
        b"emsg",
        b"prft",
        b"junk",
    }
)
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"


def video_problem(path: Path) -> str | None:
    """Why the file at ``path`` is not a complete video, or None if it looks whole.

    A download can "succeed" with the wrong bytes: a proxy's HTML error page answered
    with 200, or a body cut short under an honest but wrong ``Content-Length``. Saving
    that as the result would hand the agent a broken file as if it were the video, and
    it would never be fetched again. So before a download is committed we check the
    container's structure without decoding anything (PyAV is optional): an MP4/MOV must
    be a sequence of top-level boxes that ends exactly at the end of the file and
    includes the ``moov`` index. WebM (EBML) is only recognised, not walked.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(16)
            if head[:4] == _EBML_MAGIC:
                return None
            offset, seen_moov, first = 0, False, True
            while offset < size:
                fh.seek(offset)
                header = fh.read(16)
                if len(header) < 8:
                    return f"it ends inside a box header at byte {offset:,}"
                box_size, box_type = int.from_bytes(header[:4], "big"), header[4:8]
                if first and box_type not in _ISO_TOP_LEVEL:
                    return "it is not an MP4 video (it starts with " + repr(head[:12])[1:] + ")"
                first = False
                if box_size == 1:
                    if len(header) < 16:
                        return f"it ends inside a box header at byte {offset:,}"
                    box_size = int.from_bytes(header[8:16], "big")
                elif box_size == 0:
                    box_size = size - offset  # "to the end of the file"
                if box_size < 8:
                    return f"it has a malformed box at byte {offset:,}"
                seen_moov = seen_moov or box_type == b"moov"
                offset += box_size
    except OSError as exc:
        return f"it could not be read back ({exc.strerror or exc})"
    if offset > size:
        return f"it is truncated ({size:,} bytes, the last box needs {offset:,})"
    if not seen_moov:
        return "it has no moov index (incomplete MP4)"
    return None


def sniff_video(data: bytes) -> str | None:
    """The container type by magic bytes; names and extensions are never trusted."""
    head = data[:64]
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        return "video/quicktime" if brand == b"qt  " else "video/mp4"
    if len(head) >= 8 and head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"):
        return "video/quicktime"
    if head[:4] == _EBML_MAGIC and b"webm" in data[:4096]:
        return "video/webm"
    return None
