"""Metadata leaves the picture before upload, losslessly (issue 9: nothing leaves the machine that
the user did not put out to be sent). Every case checks the pixels are unchanged."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageCms

from wan_mcp.core.media import prepare_image
from wan_mcp.core.media.metadata import strip_metadata

GPS_IFD = 0x8825
SECRET = b"wan-mcp-secret-owner-name"


def _picture() -> Image.Image:
    im = Image.effect_noise((640, 480), 60).convert("RGB")
    im.paste((200, 30, 30), (0, 0, 320, 240))
    return im


def _exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x013B] = SECRET.decode()  # Artist
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0)})
    return exif


def _jpeg(progressive: bool = False) -> bytes:
    buf = io.BytesIO()
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    _picture().save(buf, "JPEG", quality=90, exif=_exif(), icc_profile=srgb, progressive=progressive,
                    comment=SECRET)  # fmt: skip
    xmp = b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta>" + SECRET + b"</x:xmpmeta>"
    data = buf.getvalue()
    app1 = b"\xff\xe1" + (len(xmp) + 2).to_bytes(2, "big") + xmp
    return data[:2] + app1 + data[2:] + b"TRAILING" + SECRET


def _png() -> bytes:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Author", SECRET.decode())
    info.add_itxt("Description", SECRET.decode())
    buf = io.BytesIO()
    _picture().save(buf, "PNG", pnginfo=info, exif=_exif())
    return buf.getvalue() + b"APPENDED" + SECRET


def _webp() -> bytes:
    buf = io.BytesIO()
    _picture().save(buf, "WEBP", lossless=True, exif=_exif(), xmp=b"<x:xmpmeta>" + SECRET + b"</x:xmpmeta>")
    return buf.getvalue()


def _pixels(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB").tobytes()


@pytest.mark.parametrize(
    ("make", "mime"),
    [
        (_jpeg, "image/jpeg"),
        (lambda: _jpeg(progressive=True), "image/jpeg"),
        (_png, "image/png"),
        (_webp, "image/webp"),
    ],
    ids=["jpeg", "progressive-jpeg", "png", "webp"],
)
def test_metadata_is_removed_and_the_pixels_are_untouched(make: object, mime: str) -> None:
    original = make()  # type: ignore[operator]
    assert SECRET in original
    cleaned, removed = strip_metadata(original, mime)
    assert removed and SECRET not in cleaned
    assert _pixels(cleaned) == _pixels(original)
    with Image.open(io.BytesIO(cleaned)) as im:
        assert not im.getexif() and "xmp" not in im.info
        if mime == "image/jpeg":
            assert im.info.get("icc_profile")  # the colour profile stays


def test_a_clean_picture_is_left_byte_identical() -> None:
    buf = io.BytesIO()
    _picture().save(buf, "PNG")
    assert strip_metadata(buf.getvalue(), "image/png") == (buf.getvalue(), False)


def test_prepare_image_removes_it_says_so_and_deduplicates_on_the_clean_bytes() -> None:
    original = _jpeg()
    prepared = prepare_image(original)
    assert SECRET not in prepared.data and prepared.changes == (
        "removed metadata (EXIF/GPS, XMP, comments, trailing bytes)",
    )
    import hashlib

    assert prepared.sha256 == hashlib.sha256(prepared.data).hexdigest() != prepared.source_sha256
    kept = prepare_image(original, keep_metadata=True)
    assert kept.data == original and kept.changes == ()


def test_a_converted_picture_carries_no_metadata_either() -> None:
    buf = io.BytesIO()
    _picture().resize((2400, 1800)).save(buf, "JPEG", exif=_exif())  # > 2000 px: re-encoded
    prepared = prepare_image(buf.getvalue())
    assert SECRET not in prepared.data and any("removed metadata" in c for c in prepared.changes)
    with Image.open(io.BytesIO(prepared.data)) as im:
        assert GPS_IFD not in im.getexif()


@given(st.sampled_from(["jpeg", "png", "webp"]), st.integers(0, 10_000), st.binary(min_size=1, max_size=8))
def test_a_mangled_file_never_crashes_the_filter(kind: str, at: int, junk: bytes) -> None:
    original = {"jpeg": _JPEG, "png": _PNG, "webp": _WEBP}[kind]
    at %= len(original)
    mangled = original[:at] + junk + original[at + len(junk) :]
    data, _ = strip_metadata(mangled, f"image/{kind}")
    assert isinstance(data, bytes)


_JPEG, _PNG, _WEBP = _jpeg(), _png(), _webp()
