"""Joining clips and taking a clip's last frame (issue 14), on real MP4s from the simulator's renderer."""

from __future__ import annotations

import io
import math
from array import array
from fractions import Fraction
from pathlib import Path

import av
import pytest
from PIL import Image, ImageChops, ImageStat

from wan_mcp.core.media.film import MAX_FILM_SECONDS, FilmError, clip_info, join_clips, last_frame_png
from wan_mcp.simulator.render import RenderSpec, render_mp4


def _clip(folder: Path, name: str, **spec: object) -> Path:
    fields: dict[str, object] = {
        "width": 640,
        "height": 360,
        "duration": 5,
        "audio": True,
        "seed": len(name),
        "model": "wan2.6",
        "mode": "t2v",
        "prompt": name,
    }
    fields.update(spec)
    path = folder / f"{name}.mp4"
    path.write_bytes(render_mp4(RenderSpec(**fields)))  # type: ignore[arg-type]
    return path


def _frames(path: Path) -> list[Image.Image]:
    with av.open(str(path)) as container:
        return [frame.to_image() for frame in container.decode(video=0)]


def _audio(path: Path) -> tuple[int, array[float]]:
    """Mono float samples of the file's sound (first channel)."""
    samples: array[float] = array("f")
    with av.open(str(path)) as container:
        rate = container.streams.audio[0].codec_context.sample_rate
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=rate)
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                samples.frombytes(bytes(out.planes[0])[: out.samples * 4])
    return rate, samples


def _rms(samples: array[float]) -> float:
    return math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))


def psnr(a: Image.Image, b: Image.Image) -> float:
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    mse = sum(v**2 for v in ImageStat.Stat(diff).rms) / 3
    return 99.0 if mse == 0 else 10 * math.log10(255**2 / mse)


def test_matching_clips_are_stream_copied_and_last_exactly_their_sum(tmp_path: Path) -> None:
    clips = [_clip(tmp_path, n) for n in ("one", "two", "three")]
    film = join_clips(clips, tmp_path / "film.mp4")
    assert film.copied and (film.width, film.height) == (640, 360) and film.fps == Fraction(3)
    info = clip_info(tmp_path / "film.mp4")
    assert abs(info.duration - 15.0) <= 1 / 3 and info.audio_codec == "aac"
    # Copied, not re-encoded: the film's frames are the clips' frames.
    film_frames, first = _frames(tmp_path / "film.mp4"), _frames(clips[0])
    assert len(film_frames) == 45 and psnr(film_frames[0], first[0]) == 99.0


def test_mixed_clips_are_scaled_padded_and_silence_fills_a_silent_clip(tmp_path: Path) -> None:
    loud = _clip(tmp_path, "loud")
    silent = _clip(tmp_path, "silent", audio=False, model="wan2.6-flash")
    portrait = _clip(tmp_path, "portrait", width=360, height=640)
    film = join_clips([loud, silent, portrait, loud], tmp_path / "film.mp4")
    assert not film.copied and (film.width, film.height) == (640, 360)  # the first clip's size and rate
    info = clip_info(tmp_path / "film.mp4")
    assert abs(info.duration - 20.0) <= 1 / 3 and info.codec == "h264" and info.audio_codec == "aac"
    frames = _frames(tmp_path / "film.mp4")
    assert len(frames) == 60
    # The portrait clip (frames 30-44) fits inside the frame, padded left and right with black.
    middle = frames[37]
    assert max(middle.getpixel((5, 180))) < 16 and max(middle.getpixel((634, 180))) < 16  # type: ignore[arg-type]
    assert max(middle.getpixel((320, 100))) > 16  # type: ignore[arg-type]
    with av.open(str(tmp_path / "film.mp4")) as container:  # square pixels: no player stretches the bars
        assert container.streams.video[0].sample_aspect_ratio in (None, 0, Fraction(1, 1))
    rate, sound = _audio(tmp_path / "film.mp4")
    assert abs(len(sound) / rate - 20.0) < 0.2  # sound throughout, in sync with the picture
    assert _rms(sound[int(6 * rate) : int(9 * rate)]) < 1e-3  # the silent clip: silence
    assert _rms(sound[int(1 * rate) : int(4 * rate)]) > 1e-2  # the others: their sound
    assert _rms(sound[int(11 * rate) : int(14 * rate)]) > 1e-2


def test_a_crossfade_overlaps_each_join(tmp_path: Path) -> None:
    clips = [_clip(tmp_path, n) for n in ("a", "b", "c")]
    film = join_clips(clips, tmp_path / "film.mp4", transition="crossfade", crossfade_seconds=0.5)
    # At 3 fps, 0.5 s is 2 frames (rounded): the film is 2 frames shorter per join.
    assert not film.copied and len(_frames(tmp_path / "film.mp4")) == 45 - 2 * 2
    rate, sound = _audio(tmp_path / "film.mp4")
    assert abs(len(sound) / rate - 41 / 3) < 0.2


def test_the_last_frame_is_the_last_decoded_frame_at_full_size(tmp_path: Path) -> None:
    clip = _clip(tmp_path, "end", width=1280, height=720, duration=10)
    frame = Image.open(io.BytesIO(last_frame_png(clip)))
    last = _frames(clip)[-1]
    assert frame.format == "PNG" and frame.size == (1280, 720)
    assert psnr(frame, last) == 99.0  # exact, lossless


def test_a_part_that_is_not_a_video_is_named(tmp_path: Path) -> None:
    good = _clip(tmp_path, "good")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"<html>not a video</html>")
    with pytest.raises(FilmError) as info:
        join_clips([good, bad], tmp_path / "film.mp4")
    assert info.value.index == 1 and "not" in info.value.why


def test_the_total_duration_is_bounded(tmp_path: Path) -> None:
    clip = _clip(tmp_path, "long", duration=15, width=160, height=90, audio=False)
    count = int(MAX_FILM_SECONDS // 15) + 1
    with pytest.raises(FilmError, match="more than 300 s"):
        join_clips([clip] * count, tmp_path / "film.mp4")
