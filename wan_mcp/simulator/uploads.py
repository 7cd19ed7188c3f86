"""Upload rules (contract §6) and the in-memory store that later serves the files.

Types are sniffed from magic bytes, never from the client's filename or declared
Content-Type, because that is what the gateway documents ("Unsupported image type") and
because a client that mislabels files is exactly the kind of bug we want tests to catch.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Final

IMAGE_MAX_BYTES: Final = 10 * 1024 * 1024
VIDEO_MAX_BYTES: Final = 50 * 1024 * 1024

IMAGE_UNSUPPORTED: Final = "Unsupported image type. Allowed: JPEG, PNG, WebP, GIF"
IMAGE_TOO_LARGE: Final = "Image too large. Maximum size is 10MB"
VIDEO_UNSUPPORTED: Final = "Unsupported or invalid video file. Allowed: MP4, WebM, MOV"
VIDEO_TOO_LARGE: Final = "Video too large. Maximum size is 50MB"

EXTENSIONS: Final = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "video/quicktime": ".mov",
}

# Top-level atoms that may open a QuickTime file written before 'ftyp' existed.
_LEGACY_MOV_ATOMS: Final = (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")


def sniff_image(data: bytes) -> str | None:
    """MIME type of a JPEG/PNG/WebP/GIF by its magic bytes, else None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def sniff_video(data: bytes) -> str | None:
    """MIME type of an MP4/MOV (ISO BMFF brand) or WebM (EBML doctype) by magic bytes, else None."""
    if len(data) >= 12 and data[4:8] == b"ftyp":
        return "video/quicktime" if data[8:12] == b"qt  " else "video/mp4"
    if len(data) >= 8 and data[4:8] in _LEGACY_MOV_ATOMS:
        return "video/quicktime"
    if data.startswith(b"\x1a\x45\xdf\xa3") and b"webm" in data[:64]:
        return "video/webm"
    return None


@dataclass(frozen=True)
class Upload:
    """A stored upload; ``name`` is the last path segment of its public URL."""

    id: str
    kind: str  # "image" | "video"
    name: str
    mime_type: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


class UploadStore:
    """Thread-safe name -> upload map (tests inspect it from another thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, Upload] = {}

    def add(self, upload: Upload) -> None:
        with self._lock:
            self._by_name[upload.name] = upload

    def get(self, name: str) -> Upload | None:
        with self._lock:
            return self._by_name.get(name)

    def clear(self) -> None:
        with self._lock:
            self._by_name.clear()
