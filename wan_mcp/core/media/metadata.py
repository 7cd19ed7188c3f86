"""Remove what a picture says about its owner before it leaves the machine, losslessly.

A phone photo carries EXIF (the GPS position, the camera's serial number, the time), XMP and
IPTC (names, captions), comments, and sometimes bytes after the image (a second file appended).
An uploaded image gets a public URL, so by default all of that is removed. The pixels are not
touched: the segments of a JPEG, the chunks of a PNG and of a WebP are filtered as they are,
so nothing is re-encoded and nothing is lost. What is kept is what rendering needs (the colour
profile, transparency, gamma, the JPEG's Adobe colour transform).
"""

from __future__ import annotations

import struct

__all__ = ["strip_metadata"]

_JPEG_KEEP_APP = {0xE0, 0xEE}  # JFIF (APP0), Adobe colour transform (APP14); ICC (APP2) is checked by name
_PNG_KEEP = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"pHYs",
             b"acTL", b"fcTL", b"fdAT", b"cICP", b"mDCV", b"cLLI"}  # fmt: skip
_WEBP_DROP = {b"EXIF", b"XMP "}


class _Malformed(ValueError):
    pass


def strip_metadata(data: bytes, mime_type: str) -> tuple[bytes, bool]:
    """``(cleaned bytes, whether anything was removed)``; the input unchanged for a format we do not filter.

    A structure this code cannot walk is returned as is with ``False``: the caller has already
    decoded the pixels, so the file is an image; being unsure is not a reason to refuse it, and
    the re-encoding path (which never writes metadata) is the fallback the caller can choose.
    """
    try:
        if mime_type == "image/jpeg":
            cleaned = _jpeg(data)
        elif mime_type == "image/png":
            cleaned = _png(data)
        elif mime_type == "image/webp":
            cleaned = _webp(data)
        else:
            return data, False
    except (_Malformed, struct.error, IndexError):
        return data, False
    return cleaned, cleaned != data


def _jpeg(data: bytes) -> bytes:
    if data[:2] != b"\xff\xd8":
        raise _Malformed("no SOI")
    out = bytearray(b"\xff\xd8")
    i, n = 2, len(data)
    while i < n:
        if data[i] != 0xFF:
            raise _Malformed("expected a marker")
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        marker = data[i]
        i += 1
        if marker == 0xD9:  # EOI: anything after it is not part of the image
            out += b"\xff\xd9"
            return bytes(out)
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # RSTn/TEM: no length
            out += bytes((0xFF, marker))
            continue
        (length,) = struct.unpack(">H", data[i : i + 2])
        if length < 2 or i + length > n:
            raise _Malformed("segment overruns the file")
        segment = data[i : i + length]
        i += length
        if _keep_jpeg_segment(marker, segment):
            out += bytes((0xFF, marker)) + segment
        if marker == 0xDA:  # SOS: entropy-coded data follows, up to the next real marker
            start = i
            while i < n - 1 and not (
                data[i] == 0xFF and data[i + 1] not in (0x00, 0xFF) and not 0xD0 <= data[i + 1] <= 0xD7
            ):
                i += 1
            if i >= n - 1:
                raise _Malformed("no end of scan")
            out += data[start:i]
    raise _Malformed("no EOI")


def _is_marker(byte: int, following: int) -> bool:
    """FF then not 00 (stuffing), FF (fill) or D0-D7 (restart): a real marker ends the scan data."""
    return byte == 0xFF and following not in (0x00, 0xFF) and not 0xD0 <= following <= 0xD7


def _keep_jpeg_segment(marker: int, segment: bytes) -> bool:
    if marker == 0xFE:  # COM
        return False
    if 0xE0 <= marker <= 0xEF:  # APPn
        if marker == 0xE2:
            return segment[2:14] == b"ICC_PROFILE\x00"
        return marker in _JPEG_KEEP_APP
    return True


def _png(data: bytes) -> bytes:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise _Malformed("no signature")
    out = bytearray(data[:8])
    i = 8
    while i + 12 <= len(data):
        (length,) = struct.unpack(">I", data[i : i + 4])
        kind = data[i + 4 : i + 8]
        end = i + 12 + length
        if end > len(data):
            raise _Malformed("chunk overruns the file")
        if kind in _PNG_KEEP:
            out += data[i:end]
        i = end
        if kind == b"IEND":
            return bytes(out)  # trailing bytes after IEND are dropped
    raise _Malformed("no IEND")


def _webp(data: bytes) -> bytes:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise _Malformed("not a RIFF WebP")
    (riff_size,) = struct.unpack("<I", data[4:8])
    end = min(len(data), 8 + riff_size)
    chunks = bytearray()
    i = 12
    while i + 8 <= end:
        kind = data[i : i + 4]
        (size,) = struct.unpack("<I", data[i + 4 : i + 8])
        stop = i + 8 + size + (size & 1)
        if i + 8 + size > end:
            raise _Malformed("chunk overruns the file")
        chunk = bytearray(data[i:stop])
        if kind == b"VP8X":
            chunk[8] &= ~0x0C & 0xFF  # clear the EXIF (0x08) and XMP (0x04) flags
        if kind not in _WEBP_DROP:
            chunks += chunk
        i = stop
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + bytes(chunks)
