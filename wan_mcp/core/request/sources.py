"""Where ``image`` and ``reference_videos`` come from: URL, local path or inline data.

:func:`classify` sorts one location into :class:`SourceKind` (or says exactly why it is
unusable) without touching the disk: whether a file may be read is the file boundary's call.
:func:`decode_data_url` is the ONE ``data:`` URL decoder of the product (``generate_video``'s
``image`` and ``upload_image``'s ``data`` both use it), so the two accept exactly the same input.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Final
from urllib.parse import unquote, urlsplit

from wan_mcp.core.arguments import Problem, show
from wan_mcp.core.request.messages import t

__all__ = [
    "MAX_DATA_BYTES",
    "MAX_REFERENCE_VIDEOS",
    "MediaSource",
    "SourceKind",
    "classify",
    "classify_references",
    "decode_data_url",
]

MAX_REFERENCE_VIDEOS: Final = 3  # upstream r2v limit (contract §9.4); the gateway documents none
_MAX_LOCATION_CHARS: Final = 4096  # a URL or path longer than this is a pasting accident
MAX_DATA_BYTES: Final = 20 * 1024 * 1024  # decoded data: URL; bigger belongs in a file
_RAW_BASE64_MIN_CHARS: Final = 200
_IMAGE_EXTENSIONS: Final = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic"})
_VIDEO_EXTENSIONS: Final = frozenset({".mp4", ".mov", ".m4v", ".webm", ".avi", ".mkv", ".flv", ".wmv", ".3gp"})
# Magic prefixes of base64-encoded PNG, JPEG, GIF, WEBP (RIFF), BMP.
_BASE64_IMAGE_MAGIC: Final = ("iVBORw0KGgo", "/9j/", "R0lGOD", "UklGR", "Qk")
_BASE64_CHARS: Final = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")
_NOT_BASE64: Final = re.compile(r"[^A-Za-z0-9+/_-]")
_SCHEME: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_DATA_URL: Final = re.compile(r"data:([^,]*),(.*)", re.IGNORECASE | re.DOTALL)


class SourceKind(StrEnum):
    URL = "url"  # public http(s) URL: sent to the gateway as is
    PATH = "path"  # local file: the file boundary checks it, then the server uploads it
    DATA = "data"  # data: URL: decoded here, uploaded by the server


@dataclass(frozen=True)
class MediaSource:
    """Where one input file comes from; the server turns every kind into an http(s) URL."""

    kind: SourceKind
    value: str
    data: bytes | None = None
    media_type: str | None = None

    def __repr__(self) -> str:  # a data: URL can be megabytes: never dump it into logs
        shown = self.value if len(self.value) <= 80 else self.value[:60] + f"...({len(self.value)} chars)"
        size = "" if self.data is None else f", data=<{len(self.data)} bytes>"
        return f"MediaSource(kind={self.kind.value!r}, value={shown!r}{size}, media_type={self.media_type!r})"

    def describe(self) -> str:
        """A short human name: the path, or ``inline image/png, 123456 bytes`` (never the data)."""
        if self.kind is SourceKind.DATA:
            size = len(self.data) if self.data is not None else 0
            return f"inline {self.media_type or 'data'}, {size} bytes"
        return self.value if len(self.value) <= 200 else self.value[:200] + "..."

    def identity(self) -> str:
        """A stable name for duplicate detection: bytes for inline data, the location otherwise."""
        if self.kind is SourceKind.DATA:
            assert self.data is not None
            return f"data:{self.media_type};sha256={hashlib.sha256(self.data).hexdigest()}"
        if self.kind is SourceKind.PATH:
            # Resolved against the working directory, where the file boundary will look for it too.
            # os.path.expanduser leaves an unknown "~user" as it is; Path.expanduser raises.
            return "path:" + os.path.normpath(Path.cwd() / os.path.expanduser(self.value))  # noqa: PTH111
        return "url:" + self.value


def _file_name(location: str, *, is_url: bool) -> str:
    path = unquote(urlsplit(location).path) if is_url else location
    return PurePosixPath(path.replace("\\", "/")).name


def _looks_like_raw_base64(value: str) -> bool:
    """Guess whether a long string is pasted file content rather than a path.

    Base64 has no dots, so a real image path (``photo.png``) never matches; only a
    JPEG's base64 starts with ``/``, and that one is recognised by its magic prefix.
    """
    compact = "".join(value.split())
    if len(compact) <= _RAW_BASE64_MIN_CHARS or not _BASE64_CHARS.fullmatch(compact):
        return False
    return compact.startswith(_BASE64_IMAGE_MAGIC) or not compact.startswith("/")


def _check_url(fld: str, url: str, prefix: str) -> None:
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise Problem(fld, prefix + t("whitespace"), t("whitespace_fix"))
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise Problem(fld, prefix + t("malformed_url"), t("url_fix")) from None
    if "@" in parts.netloc:
        raise Problem(fld, prefix + t("credentials"), t("credentials_fix"))
    if not parts.hostname:
        raise Problem(fld, prefix + t("no_host"), t("url_fix"))
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise Problem(fld, prefix + t("bad_port"), t("url_fix")) from None


def decode_data_url(value: str, *, field: str = "image") -> tuple[bytes, str]:
    """Decode a ``data:image/...;base64,...`` URL: (bytes, declared media type).

    Tolerates what agents commonly send and is unambiguous: the URL-safe alphabet, missing
    padding, whitespace and line breaks. Caps the size before decoding. The declared type is
    only a claim: callers sniff the bytes (``prepare_image`` does). Raises :class:`Problem`
    naming ``field``.
    """
    if len(value) > 2 * MAX_DATA_BYTES:  # refuse a flood before any pass over it (base64 is 4/3 of the bytes)
        raise Problem(field, t("data_too_big", size=len(value) * 3 // 4, limit=MAX_DATA_BYTES), t("data_too_big_fix"))
    match = _DATA_URL.fullmatch(value)
    if match is None:  # "data:" without a comma
        raise Problem(field, t("data_not_base64"), t("data_fix"))
    header, payload = match.group(1), match.group(2)
    params = [p.strip().lower() for p in header.split(";")]
    media_type = params[0] or "text/plain"
    if not media_type.startswith("image/") or len(media_type) <= len("image/"):
        raise Problem(field, t("data_media_type", media_type=media_type), t("data_media_type_fix"))
    if "base64" not in params[1:]:
        raise Problem(field, t("data_not_base64"), t("data_fix"))
    compact = "".join(unquote(payload).split())
    if not compact:
        raise Problem(field, t("data_empty"), t("data_fix"))
    if len(compact) * 3 // 4 > MAX_DATA_BYTES:
        raise Problem(
            field,
            t("data_too_big", size=len(compact) * 3 // 4, limit=MAX_DATA_BYTES),
            t("data_too_big_fix"),
        )
    body = compact.rstrip("=")
    data = b""
    bad = _NOT_BASE64.search(body)
    if bad is not None:
        reason = t("data_bad_char", char=show(bad.group()), position=bad.start() + 1)
    elif len(body) % 4 == 1:
        reason = t("data_bad_length", length=len(body))
    else:
        # Tolerate the URL-safe alphabet and missing padding: both are common and unambiguous.
        body = body.replace("-", "+").replace("_", "/")
        data = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
        reason = ""
    if reason:
        raise Problem(field, t("data_undecodable", reason=reason), t("data_undecodable_fix"))
    if not data:
        raise Problem(field, t("data_empty"), t("data_fix"))
    return data, media_type


def classify(fld: str, value: str, *, index: int | None = None) -> MediaSource:
    """Sort one location into URL / PATH / DATA, or say exactly why it is unusable.

    Paths are not touched here: whether a file exists and may be read is the file
    boundary's call (read roots), made when the server uploads it.
    """
    is_ref = index is not None
    prefix = "" if index is None else t("item_prefix", index=index, problem="")
    if not value:
        if is_ref:
            raise Problem(fld, t("empty_item", index=index), t("refs_count_fix", limit=MAX_REFERENCE_VIDEOS))
        raise Problem(fld, t("empty_image"), t("empty_image_fix"))
    if "\x00" in value:
        raise Problem(fld, prefix + t("nul"), t("nul_fix"))
    scheme_match = _SCHEME.match(value)
    # "C:\..." / "C:/..." is a Windows drive, not a one-letter URL scheme.
    scheme = scheme_match.group(1).lower() if scheme_match and len(scheme_match.group(1)) > 1 else None
    if scheme == "data":
        if is_ref:
            raise Problem(fld, t("data_video", index=index), t("data_video_fix"))
        data, media_type = decode_data_url(value, field=fld)
        return MediaSource(SourceKind.DATA, value, data, media_type)
    if len(value) > _MAX_LOCATION_CHARS:
        raise Problem(
            fld,
            prefix + t("too_long_location", length=len(value), limit=_MAX_LOCATION_CHARS),
            t("too_long_location_fix"),
        )
    if scheme in ("http", "https"):
        _check_url(fld, value, prefix)
        kind = SourceKind.URL
    elif scheme is not None:
        fix = t("file_scheme_fix") if scheme == "file" else t("scheme_fix")
        raise Problem(fld, prefix + t("scheme", scheme=scheme), fix, ("http", "https", "local path"))
    elif _looks_like_raw_base64(value):
        fix = t("raw_base64_video_fix") if is_ref else t("raw_base64_fix")
        raise Problem(fld, prefix + t("raw_base64"), fix)
    else:
        kind = SourceKind.PATH
    file_name = _file_name(value, is_url=kind is SourceKind.URL)
    ext = PurePosixPath(file_name).suffix.lower()
    name = show(file_name, 60).strip('"')
    if is_ref and ext in _IMAGE_EXTENSIONS:
        raise Problem(fld, t("ref_is_image", index=index, name=name), t("ref_is_image_fix"))
    if not is_ref and ext in _VIDEO_EXTENSIONS:
        raise Problem(fld, t("image_is_video", name=name), t("image_is_video_fix"))
    return MediaSource(kind, value)


def classify_references(values: Sequence[str]) -> tuple[MediaSource, ...]:
    sources: list[MediaSource] = []
    seen: dict[str, int] = {}
    for index, value in enumerate(values, start=1):
        source = classify("reference_videos", value, index=index)
        key = source.identity()
        if key in seen:
            raise Problem(
                "reference_videos",
                t("refs_duplicate", index=index, name=show(value), first=seen[key]),
                t("refs_duplicate_fix"),
            )
        seen[key] = index
        sources.append(source)
    return tuple(sources)
