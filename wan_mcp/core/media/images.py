"""Image sniffing and fixing for Wan image-to-video, plus video magic-byte sniffing.

Wan i2v accepts JPEG, PNG without alpha, or WebP, each side 360-2000 px, at most 10 MB.
Agents hand us whatever the user had: screenshots with transparency, phone photos with
EXIF rotation, GIFs, 4K renders. We fix what can be fixed without changing what the user
meant, and report every fix so the agent can tell the user; what cannot be fixed is
refused with the reason and the fix.

An image that is already compliant passes through byte-identical: re-encoding it would
change its sha256 and defeat the upload cache keyed on it.

Only a short list of Pillow decoders is enabled: formats such as EPS would hand the
bytes to Ghostscript, and the bytes are untrusted.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Pillow is imported where images are handled, not at server start-up
    from PIL import Image

from wan_mcp.core.media.metadata import strip_metadata
from wan_mcp.errors import ErrorCode, WanError

__all__ = [
    "MAX_SIDE",
    "MIN_SIDE",
    "PreparedImage",
    "looks_like_image",
    "prepare_image",
]

MIN_SIDE = 360
MAX_SIDE = 2000
#: Above real photos (a 50 MP camera is 8700x5800) and below Pillow's own bomb warning
#: (~89 MP), which we also turn into a refusal.
MAX_SOURCE_PIXELS = 80_000_000
#: Formats without reduced-size decoding (everything but JPEG) are decoded at full size:
#: 40 MP at 4 bytes a pixel is 160 MB, the most one preparation may hold (they run one at a time).
MAX_FULL_DECODE_PIXELS = 40_000_000
_DECODERS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # the JPEG opener also yields MPO
_COMPLIANT = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
_COMPLIANT_MODES = {
    "JPEG": {"L", "RGB"},
    "MPO": {"L", "RGB"},
    "PNG": {"L", "RGB", "P"},
    "WEBP": {"RGB", "RGBA"},
}
_LOSSY_SOURCES = {"JPEG", "MPO", "WEBP"}
_JPEG_QUALITIES = (92, 85, 75, 65, 50)
_ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class PreparedImage:
    data: bytes
    mime_type: str
    width: int
    height: int
    sha256: str  # of ``data``, the bytes to upload
    source_sha256: str  # of what the caller gave us
    changes: tuple[str, ...]


def _invalid(field: str, message: str, hint: str) -> WanError:
    return WanError(ErrorCode.INVALID_FILE, message, field=field, hint=hint)


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info)


def _open(data: bytes, field: str) -> Image.Image:
    """Open from the header only, refusing bombs before any pixel is allocated."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=list(_DECODERS))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _invalid(
            field,
            "the image declares an absurd pixel count (a decompression bomb?)",
            "use an ordinary photo or picture",
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise _invalid(
            field,
            "the data is not an image in a supported format (JPEG, PNG, WebP, GIF, BMP, TIFF)",
            "pass a JPEG, PNG or WebP image; the file's name or extension does not matter, its content does",
        ) from None
    width, height = im.size
    limit = MAX_SOURCE_PIXELS if im.format in ("JPEG", "MPO") else MAX_FULL_DECODE_PIXELS
    if width <= 0 or height <= 0 or width * height > limit:
        raise _invalid(
            field,
            f"the image declares {width}x{height} pixels, more than this server decodes",
            f"use an image under {limit // 1_000_000} megapixels (scale it down first)",
        )
    return im


def _frames(im: Image.Image) -> int:
    """How many frames, from headers only; multi-page TIFFs and GIFs are never walked (only frame 1 is used).

    Counting a TIFF's pages parses every one of them (a 9 MB multi-page TIFF took 84 s of CPU);
    a GIF is asked only whether a second frame exists.
    """
    if im.format == "TIFF":
        return 1
    if im.format == "GIF":
        return 2 if getattr(im, "is_animated", False) else 1
    return int(getattr(im, "n_frames", 1) or 1)


def _draft(im: Image.Image) -> None:
    """Let a large JPEG decode at 1/2, 1/4 or 1/8 scale, never below what the result needs."""
    width, height = im.size
    if im.format in ("JPEG", "MPO") and max(width, height) > MAX_SIDE:
        scale = MAX_SIDE / max(width, height)
        im.draft(im.mode, (max(1, int(width * scale)), max(1, int(height * scale))))


def _load(im: Image.Image, field: str) -> None:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im.load()
    except (
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
        MemoryError,
    ) as exc:
        raise _invalid(
            field,
            f"the image is corrupt or truncated ({exc.__class__.__name__})",
            "re-export or re-download the image and try again",
        ) from None


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # malformed EXIF: treat as upright, the pixels are what they are
        return 1
    return value if isinstance(value, int) else 1


def _size_problem(width: int, height: int, field: str) -> None:
    short, long_ = min(width, height), max(width, height)
    if short < MIN_SIDE:
        raise _invalid(
            field,
            f"the image is {width}x{height} px; Wan needs each side to be at least {MIN_SIDE} px",
            f"use a larger image (at least {MIN_SIDE} px on the short side); upscale it yourself "
            "if a softer picture is acceptable",
        )
    if long_ > MAX_SIDE and short * MAX_SIDE / long_ < MIN_SIDE:
        raise _invalid(
            field,
            f"the image is {width}x{height} px: its aspect ratio is too extreme, scaling the long "
            f"side down to {MAX_SIDE} px leaves the short side under {MIN_SIDE} px",
            f"crop it to an aspect ratio of at most {MAX_SIDE / MIN_SIDE:.1f}:1",
        )


_METADATA_REMOVED = "removed metadata (EXIF/GPS, XMP, comments, trailing bytes)"
_METADATA_KEYS = ("exif", "xmp", "XML:com.adobe.xmp", "comment", "photoshop", "iptc")


def _has_metadata(im: Image.Image) -> bool:
    return any(im.info.get(key) for key in _METADATA_KEYS) or any(
        isinstance(value, str) for key, value in im.info.items() if key not in ("dpi", "gamma", "transparency")
    )


def _encode(im: Image.Image, fmt: str, quality: int, icc: bytes | None, exif: bytes | None = None) -> bytes:
    out = io.BytesIO()
    kwargs: dict[str, object] = {}
    if icc:
        kwargs["icc_profile"] = icc
    if exif:
        kwargs["exif"] = exif
    if fmt == "JPEG":
        im.save(out, "JPEG", quality=quality, optimize=True, **kwargs)
    else:
        im.save(out, "PNG", optimize=True, **kwargs)
    return out.getvalue()


def prepare_image(
    data: bytes, *, field: str = "image", max_bytes: int = 10 * 1024 * 1024, keep_metadata: bool = False
) -> PreparedImage:
    """Return bytes Wan i2v accepts, made from ``data`` with every change reported.

    Unless ``keep_metadata``, nothing about the owner leaves with the picture: a compliant
    image has its metadata filtered out losslessly (:mod:`.metadata`), a converted one is
    written without it. ``sha256`` is of what will be uploaded, so deduplication is on it.
    """
    if not data:
        raise _invalid(field, "the image is empty (0 bytes)", "pass a JPEG, PNG or WebP image")
    source_sha = hashlib.sha256(data).hexdigest()
    im = _open(data, field)
    fmt = im.format or "?"
    width, height = im.size
    _size_problem(width, height, field)
    frames = _frames(im)
    orientation = _orientation(im)
    if max(width, height) > MAX_SIDE:
        _draft(im)  # it will be scaled down anyway: decode no more pixels than the result keeps
    _load(im, field)  # proves the pixels decode, even for a passthrough

    compliant = (
        fmt in _COMPLIANT
        and im.mode in _COMPLIANT_MODES[fmt]
        and not (fmt == "PNG" and _has_alpha(im))
        and frames == 1
        and orientation == 1
        and max(width, height) <= MAX_SIDE
        and len(data) <= max_bytes
    )
    if compliant:
        mime = _COMPLIANT[fmt]
        removed = False
        if not keep_metadata:
            data, removed = strip_metadata(data, mime)
        return PreparedImage(
            data=data,
            mime_type=mime,
            width=width,
            height=height,
            sha256=hashlib.sha256(data).hexdigest() if removed else source_sha,
            source_sha256=source_sha,
            changes=(_METADATA_REMOVED,) if removed else (),
        )

    from PIL import Image, ImageOps

    changes: list[str] = []
    exif_raw = im.info.get("exif") if keep_metadata and fmt in _LOSSY_SOURCES else None
    exif = exif_raw if isinstance(exif_raw, bytes) else None
    if not keep_metadata and _has_metadata(im):
        changes.append(_METADATA_REMOVED)
    icc = im.info.get("icc_profile")
    icc_bytes = icc if isinstance(icc, bytes) else None
    work: Image.Image = im
    if frames > 1:
        im.seek(0)
        work = im.copy()
        changes.append(f"used the first frame of the animated {fmt}")
    if orientation != 1:
        work = ImageOps.exif_transpose(work)
        changes.append(f"applied the EXIF orientation ({orientation}) so the picture is upright")
    if _has_alpha(work):
        rgba = work.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        work = flat
        changes.append("flattened the transparency onto a white background")
    elif work.mode not in ("RGB", "L"):
        if work.mode not in ("P", "1"):  # palette and bilevel convert losslessly: not worth a line
            changes.append(f"converted the {work.mode} colours to RGB")
        work = work.convert("RGB")

    source = (height, width) if orientation in (5, 6, 7, 8) else (width, height)  # as shown, before any draft
    width, height = work.size
    _size_problem(width, height, field)  # EXIF rotation swaps sides; re-check
    if max(width, height) > MAX_SIDE:
        scale = MAX_SIDE / max(width, height)
        new_size = (max(MIN_SIDE, round(width * scale)), max(MIN_SIDE, round(height * scale)))
        new_size = (min(new_size[0], MAX_SIDE), min(new_size[1], MAX_SIDE))
        work = work.resize(new_size, Image.Resampling.LANCZOS)
    if work.size != source:
        changes.append(
            f"scaled down from {source[0]}x{source[1]} to {work.width}x{work.height} px "
            f"(longest side at most {MAX_SIDE} px, aspect kept)"
        )

    out_fmt = "JPEG" if fmt in _LOSSY_SOURCES else "PNG"
    quality = _JPEG_QUALITIES[0]
    encoded = _encode(work, out_fmt, quality, icc_bytes, exif if out_fmt == "JPEG" else None)
    if len(encoded) <= max_bytes:
        label = "PNG (lossless)" if out_fmt == "PNG" else f"JPEG (quality {quality})"
        changes.append(f"re-encoded as {label}" if fmt == out_fmt else f"converted {fmt} to {label}")
    else:
        out_fmt = "JPEG"
        for quality in _JPEG_QUALITIES:
            encoded = _encode(work, "JPEG", quality, icc_bytes)
            if len(encoded) <= max_bytes:
                break
        while len(encoded) > max_bytes and min(work.size) * 0.8 >= MIN_SIDE:
            before = work.size
            work = work.resize((round(work.width * 0.8), round(work.height * 0.8)), Image.Resampling.LANCZOS)
            encoded = _encode(work, "JPEG", quality, icc_bytes)
            changes.append(
                f"scaled down from {before[0]}x{before[1]} to {work.width}x{work.height} px to fit {max_bytes:,} bytes"
            )
        if len(encoded) > max_bytes:
            raise _invalid(
                field,
                f"the image cannot be made smaller than {max_bytes:,} bytes without "
                f"dropping below {MIN_SIDE} px per side",
                "use a simpler or smaller image",
            )
        changes.append(f"re-encoded {fmt} as JPEG (quality {quality}) to fit under {max_bytes:,} bytes")
    mime = "image/jpeg" if out_fmt == "JPEG" else "image/png"
    return PreparedImage(
        data=encoded,
        mime_type=mime,
        width=work.width,
        height=work.height,
        sha256=hashlib.sha256(encoded).hexdigest(),
        source_sha256=source_sha,
        changes=tuple(changes),
    )


def looks_like_image(head: bytes) -> bool:
    """Whether the first bytes are those of a format :func:`prepare_image` decodes (magic bytes only)."""
    return head.startswith(
        (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
    ) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
