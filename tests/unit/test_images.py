"""Image sniffing and fixing for Wan i2v: every fix reported, compliant images untouched."""

from __future__ import annotations

import hashlib
import io
import struct
import time
import tracemalloc
import zlib

import pytest
from PIL import Image

from wan_mcp.core.media import prepare_image, sniff_video
from wan_mcp.errors import ErrorCode, WanError


def _encode(im: Image.Image, fmt: str, **kwargs: object) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **kwargs)
    return out.getvalue()


def _photo(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """A gradient: compresses like a photo would, unlike a flat colour."""
    im = Image.linear_gradient("L").resize(size)
    if mode == "L":
        return im
    rgb = Image.merge("RGB", (im, im.rotate(90).resize(size), Image.new("L", size, 90)))
    return rgb if mode == "RGB" else rgb.convert(mode)


def _opened(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def test_compliant_jpeg_passes_through_byte_identical() -> None:
    data = _encode(_photo((800, 600)), "JPEG", quality=90)
    prepared = prepare_image(data)
    assert prepared.data is data or prepared.data == data
    assert prepared.changes == ()
    assert prepared.sha256 == prepared.source_sha256 == hashlib.sha256(data).hexdigest()
    assert (prepared.mime_type, prepared.width, prepared.height) == ("image/jpeg", 800, 600)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_compliant_png_and_webp_pass_through(fmt: str) -> None:
    data = _encode(_photo((400, 720)), fmt)
    prepared = prepare_image(data)
    assert prepared.data == data and prepared.changes == ()
    assert prepared.mime_type == f"image/{fmt.lower()}"


def test_png_with_alpha_is_flattened_onto_white() -> None:
    im = Image.new("RGBA", (500, 400), (255, 0, 0, 0))  # fully transparent red
    im.paste((0, 0, 255, 255), (100, 100, 200, 200))
    prepared = prepare_image(_encode(im, "PNG"), field="image")
    assert any("transparency" in c and "white" in c for c in prepared.changes)
    out = _opened(prepared.data)
    assert prepared.mime_type == "image/png" and out.format == "PNG" and out.mode == "RGB"
    assert out.getpixel((10, 10)) == (255, 255, 255)
    assert out.getpixel((150, 150)) == (0, 0, 255)
    assert prepared.sha256 == hashlib.sha256(prepared.data).hexdigest() != prepared.source_sha256


def test_gif_becomes_first_frame_png() -> None:
    frames = [Image.new("RGB", (400, 400), c) for c in ((200, 0, 0), (0, 200, 0), (0, 0, 200))]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    prepared = prepare_image(data)
    assert any("first frame of the animated GIF" in c for c in prepared.changes)
    assert any("GIF to PNG" in c for c in prepared.changes)
    out = _opened(prepared.data)
    assert out.format == "PNG" and getattr(out, "n_frames", 1) == 1
    r, g, b = out.convert("RGB").getpixel((5, 5))  # type: ignore[misc]
    assert r > 150 and g < 50 and b < 50


@pytest.mark.parametrize("fmt", ["BMP", "TIFF"])
def test_bmp_and_tiff_are_converted(fmt: str) -> None:
    prepared = prepare_image(_encode(_photo((640, 480)), fmt))
    assert prepared.mime_type == "image/png"
    assert any(f"{fmt} to PNG" in c for c in prepared.changes)


def test_oversized_image_is_scaled_keeping_aspect() -> None:
    prepared = prepare_image(_encode(_photo((3000, 1500)), "JPEG", quality=85))
    assert (prepared.width, prepared.height) == (2000, 1000)
    assert _opened(prepared.data).size == (2000, 1000)
    assert any("3000x1500 to 2000x1000" in c for c in prepared.changes)
    assert prepared.mime_type == "image/jpeg"


def test_too_small_is_rejected_with_the_fix() -> None:
    with pytest.raises(WanError) as caught:
        prepare_image(_encode(_photo((300, 300)), "PNG"), field="image")
    err = caught.value
    assert err.code is ErrorCode.INVALID_FILE and err.field == "image"
    assert "300x300" in err.message and "360" in err.message
    assert err.hint and "larger image" in err.hint


def test_extreme_aspect_is_rejected() -> None:
    with pytest.raises(WanError, match="aspect ratio"):
        prepare_image(_encode(Image.new("RGB", (6000, 400)), "PNG"))


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def test_decompression_bomb_header_is_rejected_before_decoding() -> None:
    tracemalloc.start()
    try:
        with pytest.raises(WanError, match=r"bomb|pixels") as caught:
            prepare_image(_png_header_only(40000, 40000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.code is ErrorCode.INVALID_FILE
    assert peak < 8 * 1024 * 1024  # 1.6 G pixels were never allocated or decoded


@pytest.mark.parametrize("side", [9500, 12000])
def test_moderately_huge_header_is_rejected_too(side: int) -> None:
    with pytest.raises(WanError, match=r"bomb|pixels"):
        prepare_image(_png_header_only(side, side))


@pytest.mark.parametrize(
    "data",
    [
        b"just some text pretending to be a png\n" * 10,
        b"",
        b"\x89PNG\r\n\x1a\n",
        b"%!PS-Adobe-3.0 EPSF-3.0\n",
    ],
)
def test_not_an_image_is_rejected(data: bytes) -> None:
    with pytest.raises(WanError) as caught:
        prepare_image(data, field="path")
    assert caught.value.code is ErrorCode.INVALID_FILE and caught.value.field == "path"


def test_truncated_image_is_rejected() -> None:
    data = _encode(_photo((800, 600)), "PNG")
    with pytest.raises(WanError, match="corrupt or truncated"):
        prepare_image(data[: len(data) // 2])


def test_reencoded_to_fit_max_bytes() -> None:
    rng_noise = Image.effect_noise((900, 900), 80).convert("RGB")  # incompressible-ish
    data = _encode(rng_noise, "PNG")
    cap = 200_000
    assert len(data) > cap
    prepared = prepare_image(data, max_bytes=cap)
    assert len(prepared.data) <= cap
    assert prepared.mime_type == "image/jpeg"
    assert any("to fit under 200,000 bytes" in c for c in prepared.changes)


def test_cannot_fit_is_rejected() -> None:
    data = _encode(Image.effect_noise((400, 400), 100).convert("RGB"), "PNG")
    with pytest.raises(WanError, match="smaller than 1,000 bytes"):
        prepare_image(data, max_bytes=1000)


def test_exif_rotated_jpeg_is_made_upright() -> None:
    im = _photo((800, 400))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    data = _encode(im, "JPEG", exif=exif.tobytes(), quality=90)
    prepared = prepare_image(data)
    assert (prepared.width, prepared.height) == (400, 800)
    assert any("EXIF orientation" in c for c in prepared.changes)
    out = _opened(prepared.data)
    assert out.size == (400, 800) and out.getexif().get(0x0112, 1) == 1


def test_cmyk_jpeg_is_converted_and_reported() -> None:
    prepared = prepare_image(_encode(_photo((500, 500), "CMYK"), "JPEG"))
    assert any("CMYK" in c for c in prepared.changes)
    assert _opened(prepared.data).mode == "RGB"


# --- video sniffing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41", "video/mp4"),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom", "video/mp4"),
        (b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00qt  ", "video/quicktime"),
        (b"\x00\x00\x00\x08wide\x00\x00\x00\x00mdat", "video/quicktime"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x84webm", "video/webm"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x88matroska", None),
        (b"\x89PNG\r\n\x1a\n", None),
        (b"", None),
        (b"ftyp", None),
    ],
)
def test_sniff_video(head: bytes, expected: str | None) -> None:
    assert sniff_video(head + b"\x00" * 32) == expected if head else sniff_video(head) is None


def test_a_multi_page_tiff_is_read_for_its_first_page_only() -> None:
    pages = [Image.new("RGB", (600, 400), (i % 256, 100, 50)) for i in range(300)]
    data = _encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    started = time.process_time()
    prepared = prepare_image(data)
    cpu = time.process_time() - started
    assert _opened(prepared.data).convert("RGB").getpixel((5, 5)) == (0, 100, 50)
    print(f"300-page TIFF prepared in {cpu:.3f} s of CPU")  # reported, not asserted (bench territory)


def test_a_large_jpeg_is_decoded_at_reduced_scale() -> None:
    big = Image.effect_noise((8000, 6000), 40).convert("RGB")
    data = _encode(big, "JPEG", quality=80)
    prepared = prepare_image(data)
    assert (prepared.width, prepared.height) == (2000, 1500)
    assert any("scaled down from 8000x6000 to 2000x1500" in c for c in prepared.changes), prepared.changes
