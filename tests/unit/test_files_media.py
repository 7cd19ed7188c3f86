"""Video probe and poster frames with PyAV, on an MP4 made here; and the no-PyAV fallback."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from PIL import Image

from wan_mcp.core.media import poster_frame, probe_video, sniff_video

av = pytest.importorskip("av")


def _make_mp4(path: Path, *, seconds: float = 1.2, size: tuple[int, int] = (320, 240), gop: int | None = None) -> None:
    fps = 25
    with av.open(str(path), mode="w") as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        if gop is not None:  # a keyframe every ``gop`` frames (x264 would otherwise place one at 0 only)
            stream.codec_context.gop_size = gop
            stream.codec_context.options = {"sc_threshold": "0"}
        stream.pix_fmt = "yuv420p"
        for i in range(int(seconds * fps)):
            shade = int(255 * i / (seconds * fps))
            img = Image.new("RGB", size, (shade, 80, 255 - shade))
            frame = av.VideoFrame.from_image(img)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    _make_mp4(path)
    return path


def test_probe_video(mp4: Path) -> None:
    info = probe_video(mp4)
    assert info is not None
    assert (info.width, info.height) == (320, 240)
    assert 0.9 <= info.duration <= 1.5
    assert info.has_audio is False
    assert info.codec in ("h264", "mpeg4")
    assert sniff_video(mp4.read_bytes()[:64]) == "video/mp4"


def test_poster_is_a_small_valid_jpeg(mp4: Path) -> None:
    data = poster_frame(mp4, max_side=160, max_bytes=24_000)
    assert data is not None and len(data) <= 24_000
    im = Image.open(io.BytesIO(data))
    im.load()
    assert im.format == "JPEG" and max(im.size) <= 160 and im.size == (160, 120)


def test_poster_respects_a_tiny_budget(mp4: Path) -> None:
    data = poster_frame(mp4, max_side=320, max_bytes=1500)
    assert data is None or len(data) <= 1500


def test_poster_is_the_keyframe_at_or_before_one_second(tmp_path: Path) -> None:
    path = tmp_path / "long.mp4"
    _make_mp4(path, seconds=2.0, gop=20)  # keyframes at 0, 0.8 and 1.6 s
    data = poster_frame(path)
    assert data is not None
    r, _, b = Image.open(io.BytesIO(data)).convert("RGB").getpixel((10, 10))  # type: ignore[misc]
    assert 90 <= r <= 115 and b > 140  # frame 20 (0.8 s, red ~102): not the first (blue), not 1.6 s


def test_undecodable_and_missing_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x20ftypisom" + b"\x00" * 500)
    assert poster_frame(junk) is None
    assert probe_video(junk) is None
    assert poster_frame(tmp_path / "missing.mp4") is None


def test_without_pyav_both_return_none(mp4: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # what `import av` sees when PyAV is absent
    assert probe_video(mp4) is None
    assert poster_frame(mp4) is None


def _encode(path: Path, container_format: str, codec: str) -> Path:
    import av

    with av.open(str(path), mode="w", format=container_format) as out:
        stream = out.add_stream(codec, rate=24)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(12):
            frame = av.VideoFrame.from_image(Image.new("RGB", (160, 120), (i * 20, 40, 90)))
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.mark.parametrize(
    ("container_format", "codec"),
    [("mp4", "mpeg4"), ("matroska", "libx264"), ("mov", "mpeg4")],
    ids=["mp4-with-mpeg4", "matroska-named-mp4", "mov-with-mpeg4"],
)
def test_only_mp4_mov_with_h264_h265_aac_reach_the_decoder(tmp_path: Path, container_format: str, codec: str) -> None:
    path = _encode(tmp_path / "result.mp4", container_format, codec)
    assert probe_video(path) is None and poster_frame(path) is None


def test_an_allowed_file_is_probed(tmp_path: Path) -> None:
    path = _encode(tmp_path / "ok.mp4", "mp4", "libx264")
    info = probe_video(path)
    assert info is not None and info.codec == "h264" and (info.width, info.height) == (160, 120)
    assert poster_frame(path) is not None
