"""The ``generate_video`` input: one pydantic model for the JSON schema *and* the validation.

An agent only ever sees two things of this module: the tool's ``inputSchema``
(:func:`video_request_schema`) and, when it gets something wrong, the text of a
:class:`~wan_mcp.errors.WanError`. Both come from here so they cannot drift apart, and
every request that leaves :func:`parse_video_request` is one the gateway accepts
(contract §2, §3, §11.2): invariant 1, "no invalid request ever reaches the gateway".

Decisions where the gateway docs are silent (each one is tested):

* Types are strict, because silently coercing a mistake hides it from the agent:
  booleans must be JSON ``true``/``false`` (not ``"true"``, not ``1``); strings must be
  strings. Integer fields (``duration``, ``seed``) take JSON numbers with no fractional
  part, so ``5`` and ``5.0`` are both accepted (JSON Schema's own meaning of
  ``"integer"``), but ``"5"`` and ``true`` are not.
* ``null`` means "not given" for every known argument (many clients fill unused optional
  arguments with ``null``), so it is never an error and never sent upstream. An unknown
  argument is rejected even when ``null``: the agent believes it means something.
* String arguments are stripped of surrounding whitespace; a blank ``prompt`` or
  ``negative_prompt`` counts as absent (limits apply to the stripped text).
* An empty ``image`` string is rejected rather than read as "no image": it would
  silently turn an image-to-video call into a (billed) text-to-video one.
* ``audio: true`` on ``wan2.6`` is accepted and sent (the docs allow it explicitly);
  ``audio: false`` there is rejected because non-flash Wan 2.6 cannot make silence.
* Obvious media mix-ups are caught by file extension: a video given as ``image``, an
  image given in ``reference_videos``.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Final, Literal, NoReturn, get_args
from urllib.parse import unquote, urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from wan_mcp.errors import ErrorCode, WanError

__all__ = [
    "DEFAULT_ASPECT_RATIO",
    "FLASH_UNSUPPORTED_FIELDS",
    "MAX_NEGATIVE_PROMPT_CHARS",
    "MAX_PROMPT_CHARS",
    "MAX_REFERENCE_VIDEOS",
    "MAX_SEED",
    "MediaSource",
    "Mode",
    "SourceKind",
    "ValidatedRequest",
    "VideoRequest",
    "parse_video_request",
    "request_fingerprint",
    "video_request_schema",
]

Mode = Literal["t2v", "i2v", "r2v"]
ModelName = Literal["wan2.6", "wan2.6-flash"]
AspectRatio = Literal["16:9", "9:16", "1:1", "4:3", "3:4"]
Resolution = Literal["720p", "1080p"]
Duration = Literal[5, 10, 15]
ShotType = Literal["single", "multi"]

MAX_PROMPT_CHARS: Final = 1500  # upstream cap (contract §9.2); the gateway documents none
MAX_NEGATIVE_PROMPT_CHARS: Final = 500
MAX_SEED: Final = 2_147_483_647
MAX_REFERENCE_VIDEOS: Final = 3  # upstream r2v limit (contract §9.4); the gateway documents none
DEFAULT_ASPECT_RATIO: Final[AspectRatio] = "16:9"
#: Fields the wan2.6-flash page does not list (contract §3): sending them is a guess at best.
FLASH_UNSUPPORTED_FIELDS: Final = ("aspect_ratio", "negative_prompt", "seed", "prompt_extend", "shot_type")

_MAX_LOCATION_CHARS: Final = 4096  # a URL or path longer than this is a pasting accident
_MAX_DATA_BYTES: Final = 20 * 1024 * 1024  # decoded data: URL; bigger belongs in a file
_RAW_BASE64_MIN_CHARS: Final = 200
_FINGERPRINT_VERSION: Final = "wan-mcp/request/v1"

_IMAGE_EXTENSIONS: Final = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic"}
)
_VIDEO_EXTENSIONS: Final = frozenset(
    {".mp4", ".mov", ".m4v", ".webm", ".avi", ".mkv", ".flv", ".wmv", ".3gp"}
)
# Magic prefixes of base64-encoded PNG, JPEG, GIF, WEBP (RIFF), BMP.
_BASE64_IMAGE_MAGIC: Final = ("iVBORw0KGgo", "/9j/", "R0lGOD", "UklGR", "Qk")
_BASE64_CHARS: Final = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")
_NOT_BASE64: Final = re.compile(r"[^A-Za-z0-9+/_-]")
_SCHEME: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_DATA_URL: Final = re.compile(r"data:([^,]*),(.*)", re.IGNORECASE | re.DOTALL)


# --- the words an agent reads ---------------------------------------------------------------
# Every message and hint lives in this table so the wording stays consistent; code refers to
# entries by key and fills the ``{}`` slots.

_TEXT: Final[Mapping[str, str]] = {
    # generic value problems
    "not_allowed": "{value} is not a supported {noun}",
    "case": "values are case-sensitive: use {fixed}",
    "pick": "pick one of the allowed values",
    "wrong_type": "expected {expected}, got {kind} {value}",
    "too_long": "is {length} characters long; the limit is {limit}",
    "shorten": "shorten it to at most {limit} characters",
    "range": "{value} is outside 0..{limit}",
    "seed_fix": "use an integer from 0 to {limit}, or omit seed for a random one",
    "unknown_arg": "{name} is not an argument of generate_video",
    "unknown_fix": "remove it (did you mean '{guess}'?)",
    "unknown_fix_plain": "remove it; only the allowed arguments are accepted",
    "not_object": "arguments must be a JSON object, got {kind}",
    "not_object_fix": 'send the arguments as an object, e.g. {"prompt": "..."}',
    "also": " (also wrong: {rest})",
    "also_fix": "; fix all {count} fields in one call",
    # per-type fixes
    "fix_integer": "send a JSON number without quotes, e.g. {example}",
    "fix_boolean": "send JSON true or false without quotes",
    "fix_string": "send a string",
    "fix_array": 'send a JSON array of strings, e.g. ["https://example.com/ref.mp4"]',
    # enum specifics
    "480p": "480p is not supported on wan2.6; use 720p (the cheaper tier)",
    "model_fix": (
        "use wan2.6 (t2v/i2v/r2v, always with audio) or wan2.6-flash (i2v/r2v, cheaper, optional audio); "
        "the mode follows from image/reference_videos"
    ),
    # image / reference sources
    "empty_image": "the value is empty",
    "empty_image_fix": (
        "omit image for text-to-video, or give an http(s) URL, a local file path or a data:image URL"
    ),
    "empty_item": "item {index} is empty",
    "scheme": "the URL scheme '{scheme}:' is not supported",
    "scheme_fix": "use an http(s) URL or a local file path",
    "file_scheme_fix": "pass the local path itself (without file://)",
    "no_host": "the URL has no host",
    "url_fix": "give a full URL such as https://example.com/cat.jpg",
    "bad_port": "the URL has an invalid port",
    "malformed_url": "the URL cannot be parsed",
    "bad_value": "{reason}",
    "bad_value_fix": "correct the value as described",
    "credentials": (
        "the URL contains credentials (user:password@); they would be sent to the gateway in clear"
    ),
    "credentials_fix": "remove the user:password@ part; use a public or pre-signed URL, or a local file path",
    "whitespace": "the URL contains whitespace or control characters",
    "whitespace_fix": "percent-encode spaces (%20) and remove line breaks",
    "nul": "contains a NUL character",
    "nul_fix": "give a plain file path or URL",
    "too_long_location": "is {length} characters long; a URL or path may have at most {limit}",
    "too_long_location_fix": "give a shorter URL, or save the file locally and pass its path",
    "raw_base64": "looks like raw base64 data, not a URL or a file path",
    "raw_base64_fix": "pass it as a data:image/png;base64,... URL or call upload_image first",
    "raw_base64_video_fix": "save the video to a file and pass its path",
    "data_not_base64": "the data: URL is not base64-encoded (no ';base64' before the comma)",
    "data_fix": "encode the image as data:image/png;base64,<base64 bytes>",
    "data_media_type": "the data: URL has media type '{media_type}', not an image/* type",
    "data_media_type_fix": (
        "use an image media type, e.g. data:image/png;base64,<data> or data:image/jpeg;base64,<data>"
    ),
    "data_undecodable": "the base64 in the data: URL cannot be decoded: {reason}",
    "data_undecodable_fix": "re-encode the file with standard base64 (A-Z, a-z, 0-9, +, /, = padding)",
    "data_bad_char": "character {char} at position {position} of the base64 part is not base64",
    "data_bad_length": "{length} base64 characters cannot be a whole number of bytes (truncated?)",
    "data_empty": "the data: URL contains no image bytes",
    "data_too_big": "the data: URL holds {size} bytes; the limit for inline data is {limit} bytes",
    "data_too_big_fix": "save the image to a file and pass its path instead",
    "data_video": "item {index} is a data: URL; reference videos cannot be sent inline",
    "data_video_fix": "save the video to a file first and pass its path, or give an http(s) URL",
    "image_is_video": "'{name}' looks like a video, but image takes one still image",
    "image_is_video_fix": "put videos in reference_videos (reference-to-video); image is for image-to-video",
    "ref_is_image": "item {index} '{name}' looks like an image, but reference_videos takes videos",
    "ref_is_image_fix": "pass a still image as image (image-to-video); reference_videos takes 1-3 videos",
    "item_prefix": "item {index}: {problem}",
    "refs_count": "has {count} items; 1 to {limit} reference videos are allowed",
    "refs_count_fix": "give 1 to {limit} videos (the prompt calls them character1, character2, ... in order)",
    "refs_duplicate": "item {index} ({name}) repeats item {first}",
    "refs_duplicate_fix": (
        "list each reference video once; the prompt calls them character1, character2, ... in order"
    ),
    # cross-field rules
    "both_sources": "image (image-to-video) and reference_videos (reference-to-video) cannot be combined",
    "both_sources_fix": "send image for image-to-video OR reference_videos for reference-to-video, not both",
    "flash_t2v": "wan2.6-flash has no text-to-video mode",
    "flash_t2v_fix": "give image or reference_videos, or use model wan2.6 for text-to-video",
    "flash_field": "wan2.6-flash does not accept {name}: the flash model does not list it",
    "flash_field_fix": "drop {name}, or use model wan2.6",
    "t2v_prompt": "text-to-video needs a prompt (no image or reference_videos given)",
    "t2v_prompt_fix": "describe the video in prompt, or give image or reference_videos",
    "i2v_aspect": "aspect_ratio is not supported with image: the video takes the image's orientation",
    "i2v_aspect_fix": "drop aspect_ratio; crop the image to the wanted orientation",
    "i2v_shot_type": "shot_type applies to text-to-video and reference-to-video only, not with image",
    "i2v_shot_type_fix": "drop shot_type",
    "audio_off": "wan2.6 always generates audio, so audio=false cannot be honoured",
    "audio_off_fix": "use model wan2.6-flash for a silent, cheaper video, or drop audio",
}


def _t(key: str, **slots: object) -> str:
    return _TEXT[key].format(**slots)


# --- field metadata ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _FieldSpec:
    """What an agent needs to fix one argument: what it is, its JSON type, its allowed values."""

    noun: str
    kind: Literal["string", "integer", "boolean", "array"]
    allowed: tuple[str, ...] | None = None
    example: str = ""


def _literal_strings(tp: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in get_args(tp))


_FIELDS: Final[Mapping[str, _FieldSpec]] = {
    "prompt": _FieldSpec("prompt", "string"),
    "model": _FieldSpec("model", "string", _literal_strings(ModelName)),
    "image": _FieldSpec("image", "string"),
    "reference_videos": _FieldSpec("reference video list", "array"),
    "aspect_ratio": _FieldSpec("aspect ratio", "string", _literal_strings(AspectRatio)),
    "resolution": _FieldSpec("resolution", "string", _literal_strings(Resolution)),
    "duration": _FieldSpec("duration", "integer", _literal_strings(Duration), example="5"),
    "negative_prompt": _FieldSpec("negative prompt", "string"),
    "seed": _FieldSpec("seed", "integer", (f"0..{MAX_SEED}",), example="12345"),
    "prompt_extend": _FieldSpec("value", "boolean", ("true", "false")),
    "shot_type": _FieldSpec("shot type", "string", _literal_strings(ShotType)),
    "audio": _FieldSpec("value", "boolean", ("true", "false")),
    "watermark": _FieldSpec("value", "boolean", ("true", "false")),
}
_FIELD_ORDER: Final[Mapping[str, int]] = {name: i for i, name in enumerate(_FIELDS)}
# Names agents reach for that difflib would not map (wire names, other models' names).
_ALIASES: Final[Mapping[str, str]] = {
    "image_url": "image",
    "image_urls": "image",
    "img_url": "image",
    "first_frame": "image",
    "reference_urls": "reference_videos",
    "reference_video_urls": "reference_videos",
    "references": "reference_videos",
    "videos": "reference_videos",
    "size": "aspect_ratio",
    "ratio": "aspect_ratio",
    "length": "duration",
    "seconds": "duration",
    "generate_audio": "audio",
}


# --- sources: image and reference videos -------------------------------------------------------


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

    def identity(self) -> str:
        """A stable name for duplicate detection: bytes for inline data, the location otherwise."""
        if self.kind is SourceKind.DATA:
            assert self.data is not None
            return f"data:{self.media_type};sha256={hashlib.sha256(self.data).hexdigest()}"
        if self.kind is SourceKind.PATH:
            # Resolved against the working directory, where the file boundary will look for it too.
            return "path:" + os.path.normpath(Path.cwd() / Path(self.value).expanduser())
        return "url:" + self.value


class _Problem(Exception):
    """One thing wrong with the arguments, already worded for the agent."""

    def __init__(self, fld: str, message: str, hint: str, allowed: Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.field = fld
        self.message = message
        self.hint = hint
        self.allowed = tuple(allowed) if allowed else None


def _show(value: object, limit: int = 40) -> str:
    """The value as the agent wrote it (JSON spelling), cut short so huge inputs stay readable."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _size(value: object) -> int:
    return len(value) if isinstance(value, str | list | tuple) else 0


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
        raise _Problem(fld, prefix + _t("whitespace"), _t("whitespace_fix"))
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise _Problem(fld, prefix + _t("malformed_url"), _t("url_fix")) from None
    if "@" in parts.netloc:
        raise _Problem(fld, prefix + _t("credentials"), _t("credentials_fix"))
    if not parts.hostname:
        raise _Problem(fld, prefix + _t("no_host"), _t("url_fix"))
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise _Problem(fld, prefix + _t("bad_port"), _t("url_fix")) from None


def _decode_data_url(value: str) -> tuple[bytes, str]:
    match = _DATA_URL.fullmatch(value)
    if match is None:  # "data:" without a comma
        raise _Problem("image", _t("data_not_base64"), _t("data_fix"))
    header, payload = match.group(1), match.group(2)
    params = [p.strip().lower() for p in header.split(";")]
    media_type = params[0] or "text/plain"
    if not media_type.startswith("image/") or len(media_type) <= len("image/"):
        raise _Problem("image", _t("data_media_type", media_type=media_type), _t("data_media_type_fix"))
    if "base64" not in params[1:]:
        raise _Problem("image", _t("data_not_base64"), _t("data_fix"))
    compact = "".join(unquote(payload).split())
    if not compact:
        raise _Problem("image", _t("data_empty"), _t("data_fix"))
    if len(compact) * 3 // 4 > _MAX_DATA_BYTES:
        raise _Problem(
            "image",
            _t("data_too_big", size=len(compact) * 3 // 4, limit=_MAX_DATA_BYTES),
            _t("data_too_big_fix"),
        )
    body = compact.rstrip("=")
    data = b""
    bad = _NOT_BASE64.search(body)
    if bad is not None:
        reason = _t("data_bad_char", char=_show(bad.group()), position=bad.start() + 1)
    elif len(body) % 4 == 1:
        reason = _t("data_bad_length", length=len(body))
    else:
        # Tolerate the URL-safe alphabet and missing padding: both are common and unambiguous.
        body = body.replace("-", "+").replace("_", "/")
        data = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
        reason = ""
    if reason:
        raise _Problem("image", _t("data_undecodable", reason=reason), _t("data_undecodable_fix"))
    if not data:
        raise _Problem("image", _t("data_empty"), _t("data_fix"))
    return data, media_type


def _classify(fld: str, value: str, *, index: int | None = None) -> MediaSource:
    """Sort one location into URL / PATH / DATA, or say exactly why it is unusable.

    Paths are not touched here: whether a file exists and may be read is the file
    boundary's call (read roots), made when the server uploads it.
    """
    is_ref = index is not None
    prefix = "" if index is None else _t("item_prefix", index=index, problem="")
    if not value:
        if is_ref:
            raise _Problem(
                fld, _t("empty_item", index=index), _t("refs_count_fix", limit=MAX_REFERENCE_VIDEOS)
            )
        raise _Problem(fld, _t("empty_image"), _t("empty_image_fix"))
    if "\x00" in value:
        raise _Problem(fld, prefix + _t("nul"), _t("nul_fix"))
    scheme_match = _SCHEME.match(value)
    # "C:\..." / "C:/..." is a Windows drive, not a one-letter URL scheme.
    scheme = scheme_match.group(1).lower() if scheme_match and len(scheme_match.group(1)) > 1 else None
    if scheme == "data":
        if is_ref:
            raise _Problem(fld, _t("data_video", index=index), _t("data_video_fix"))
        data, media_type = _decode_data_url(value)
        return MediaSource(SourceKind.DATA, value, data, media_type)
    if len(value) > _MAX_LOCATION_CHARS:
        raise _Problem(
            fld,
            prefix + _t("too_long_location", length=len(value), limit=_MAX_LOCATION_CHARS),
            _t("too_long_location_fix"),
        )
    if scheme in ("http", "https"):
        _check_url(fld, value, prefix)
        kind = SourceKind.URL
    elif scheme is not None:
        fix = _t("file_scheme_fix") if scheme == "file" else _t("scheme_fix")
        raise _Problem(fld, prefix + _t("scheme", scheme=scheme), fix, ("http", "https", "local path"))
    elif _looks_like_raw_base64(value):
        fix = _t("raw_base64_video_fix") if is_ref else _t("raw_base64_fix")
        raise _Problem(fld, prefix + _t("raw_base64"), fix)
    else:
        kind = SourceKind.PATH
    file_name = _file_name(value, is_url=kind is SourceKind.URL)
    ext = PurePosixPath(file_name).suffix.lower()
    name = _show(file_name, 60).strip('"')
    if is_ref and ext in _IMAGE_EXTENSIONS:
        raise _Problem(fld, _t("ref_is_image", index=index, name=name), _t("ref_is_image_fix"))
    if not is_ref and ext in _VIDEO_EXTENSIONS:
        raise _Problem(fld, _t("image_is_video", name=name), _t("image_is_video_fix"))
    return MediaSource(kind, value)


def _classify_references(values: Sequence[str]) -> tuple[MediaSource, ...]:
    sources: list[MediaSource] = []
    seen: dict[str, int] = {}
    for index, value in enumerate(values, start=1):
        source = _classify("reference_videos", value, index=index)
        key = source.identity()
        if key in seen:
            raise _Problem(
                "reference_videos",
                _t("refs_duplicate", index=index, name=_show(value), first=seen[key]),
                _t("refs_duplicate_fix"),
            )
        seen[key] = index
        sources.append(source)
    return tuple(sources)


# --- cross-field rules -------------------------------------------------------------------------


def _cross_field_problems(args: Mapping[str, Any]) -> list[_Problem]:
    """The routing rules of contract §2.1 / §3 that no single field can check.

    Works on presence (plus the model name and audio flag), so it runs on raw arguments
    too: an agent hears about a routing mistake in the same reply as a bad value.
    """
    model = args.get("model", "wan2.6")
    flash = model == "wan2.6-flash"
    has_image = args.get("image") is not None
    has_refs = args.get("reference_videos") is not None
    prompt = args.get("prompt")
    has_prompt = prompt is not None and (not isinstance(prompt, str) or bool(prompt.strip()))
    problems: list[_Problem] = []
    if has_image and has_refs:
        problems.append(_Problem("image", _t("both_sources"), _t("both_sources_fix")))
    if flash:
        if not has_image and not has_refs:
            problems.append(_Problem("model", _t("flash_t2v"), _t("flash_t2v_fix"), ("wan2.6",)))
        problems.extend(
            _Problem(name, _t("flash_field", name=name), _t("flash_field_fix", name=name))
            for name in FLASH_UNSUPPORTED_FIELDS
            if args.get(name) is not None
        )
    elif not has_image and not has_refs and not has_prompt:
        problems.append(_Problem("prompt", _t("t2v_prompt"), _t("t2v_prompt_fix")))
    if has_image and not flash:  # on flash these two were reported as unsupported already
        if args.get("aspect_ratio") is not None:
            problems.append(_Problem("aspect_ratio", _t("i2v_aspect"), _t("i2v_aspect_fix")))
        if args.get("shot_type") is not None:
            problems.append(_Problem("shot_type", _t("i2v_shot_type"), _t("i2v_shot_type_fix")))
    if model == "wan2.6" and args.get("audio") is False:
        problems.append(_Problem("audio", _t("audio_off"), _t("audio_off_fix"), ("true",)))
    return problems


# --- the model -----------------------------------------------------------------------------------


def _integral_number(value: object) -> object:
    """Let ``5.0`` through as ``5`` (JSON Schema "integer" semantics); refuse booleans.

    ``True`` is an ``int`` in Python; without this check ``seed: true`` would become 1.
    """
    if isinstance(value, bool):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _strip(value: object) -> object:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        return [item.strip() if isinstance(item, str) else item for item in value]
    return value


def _list_to_tuple(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


_CROSS_FIELD: Final = "wan_cross_field"
_SOURCE_ERROR: Final = "wan_source"


def _problem_error(problem: _Problem, error_type: str) -> PydanticCustomError:
    return PydanticCustomError(
        error_type,
        "{message}",
        {
            "message": problem.message,
            "hint": problem.hint,
            "allowed": problem.allowed,
            "field": problem.field,
        },
    )


class VideoRequest(BaseModel):
    """Arguments of ``generate_video``. Construct it only through :func:`parse_video_request`.

    The model alone already enforces every rule (so ``mode`` is always meaningful), but
    only ``parse_video_request`` turns failures into the agent-facing ``WanError``.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    prompt: str | None = Field(
        None,
        max_length=MAX_PROMPT_CHARS,
        description=(
            "What happens. Required for t2v (no image/reference_videos). "
            "Call reference videos character1, character2..."
        ),
    )
    model: ModelName = Field(
        "wan2.6",
        description=(
            "wan2.6: t2v/i2v/r2v, always with audio. "
            "wan2.6-flash: i2v/r2v only (needs image or reference_videos), cheaper, audio optional"
        ),
    )
    image: str | None = Field(
        None,
        description=(
            "i2v only: ONE image as http(s) URL, local file path or data:image/...;base64 URL "
            "(uploaded for you). Not with reference_videos"
        ),
    )
    reference_videos: Annotated[tuple[str, ...] | None, BeforeValidator(_list_to_tuple)] = Field(
        None,
        min_length=1,
        max_length=MAX_REFERENCE_VIDEOS,
        description=(
            "r2v only: videos as http(s) URL or local file path; the prompt calls them "
            "character1, character2... Not with image"
        ),
        json_schema_extra={"uniqueItems": True},
    )
    aspect_ratio: AspectRatio | None = Field(
        None,
        description="t2v/r2v only; not with image (follows its orientation); not on flash",
        json_schema_extra={"default": DEFAULT_ASPECT_RATIO},
    )
    resolution: Resolution = Field("1080p", description="Price per second depends on it")
    duration: Annotated[Duration, BeforeValidator(_integral_number)] = Field(
        5, description="Seconds (billed per second)"
    )
    negative_prompt: str | None = Field(
        None, max_length=MAX_NEGATIVE_PROMPT_CHARS, description="What to avoid. Not on flash"
    )
    seed: Annotated[int | None, BeforeValidator(_integral_number)] = Field(
        None, ge=0, le=MAX_SEED, description="For repeatable results. Not on flash"
    )
    prompt_extend: bool | None = Field(
        None, description="Let upstream rewrite the prompt (default true). Not on flash"
    )
    shot_type: ShotType | None = Field(
        None, description="One shot or multi-shot cuts. t2v/r2v only; not on flash"
    )
    audio: bool | None = Field(
        None,
        description=(
            "wan2.6 always has audio (false rejected). flash: default true; false = silent, half price"
        ),
    )
    watermark: bool | None = Field(None, description="Add an Alibaba Cloud watermark")

    @model_validator(mode="before")
    @classmethod
    def _tidy(cls, data: Any) -> Any:
        """Nulls mean "not given"; surrounding whitespace is never meant (Python's idea of it,
        so the blank-prompt rule and the stripping agree on control characters)."""
        if isinstance(data, Mapping):
            return {k: _strip(v) for k, v in data.items() if v is not None}
        return data

    @field_validator("prompt", "negative_prompt")
    @classmethod
    def _blank_means_absent(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("image")
    @classmethod
    def _image_source(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                _classify("image", value)
            except _Problem as problem:
                raise _problem_error(problem, _SOURCE_ERROR) from None
        return value

    @field_validator("reference_videos")
    @classmethod
    def _reference_sources(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None:
            try:
                _classify_references(value)
            except _Problem as problem:
                raise _problem_error(problem, _SOURCE_ERROR) from None
        return value

    @model_validator(mode="after")
    def _routing(self) -> VideoRequest:
        problems = _cross_field_problems(self.model_dump(exclude_none=True))
        if problems:
            raise _problem_error(problems[0], _CROSS_FIELD)
        return self

    @property
    def mode(self) -> Mode:
        """Which upstream mode the gateway will pick (contract §2.1): references win, then image."""
        if self.reference_videos:
            return "r2v"
        if self.image is not None:
            return "i2v"
        return "t2v"


# --- the validated request and its wire body ---------------------------------------------------


def _require_http_url(url: object, what: str) -> str:
    """Guard the wire: only public http(s) URLs go upstream, never paths or base64."""
    if not isinstance(url, str):
        raise ValueError(f"{what} must be a string URL, got {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise ValueError(
            f"{what} must be an http(s) URL (upload local files and data URLs first), got {url[:60]!r}"
        )
    return url


@dataclass(frozen=True)
class ValidatedRequest:
    """A request that passed every rule; the only thing :meth:`to_payload` can be built from."""

    request: VideoRequest
    mode: Mode
    image: MediaSource | None
    references: tuple[MediaSource, ...]

    def _settings(self) -> dict[str, Any]:
        """The effective generation settings (defaults made explicit), without the media URLs."""
        req = self.request
        flash = req.model == "wan2.6-flash"
        out: dict[str, Any] = {"model": req.model}
        if req.prompt is not None:
            out["prompt"] = req.prompt
        if self.mode != "i2v" and not flash:
            out["aspect_ratio"] = req.aspect_ratio or DEFAULT_ASPECT_RATIO
        out["resolution"] = req.resolution
        out["duration"] = req.duration
        for name in ("negative_prompt", "seed", "prompt_extend", "shot_type"):
            value = getattr(req, name)
            if value is not None:
                out[name] = value
        if flash:
            # Explicit: the silent variant is billed differently, so never rely on a gateway default.
            out["audio"] = True if req.audio is None else req.audio
        elif req.audio is not None:
            out["audio"] = req.audio
        if req.watermark is not None:
            out["watermark"] = req.watermark
        return out

    def to_payload(self, image_url: str | None = None, reference_urls: Sequence[str] = ()) -> dict[str, Any]:
        """The exact ``POST /v1/videos/generations`` body (contract §2.2, §2.4, §3).

        ``image_url``/``reference_urls`` are the http(s) URLs the server got for
        ``image``/``references`` (the originals when they were URLs already, upload
        results otherwise). Passing URLs that do not match the mode is a programming
        error and raises ``ValueError``: no base64 or local path ever reaches the wire.
        """
        settings = self._settings()
        body: dict[str, Any] = {"model": settings.pop("model")}
        if "prompt" in settings:
            body["prompt"] = settings.pop("prompt")
        if isinstance(reference_urls, str):
            raise ValueError("reference_urls must be a sequence of URLs, not one string")
        if self.mode == "i2v":
            if image_url is None or reference_urls:
                raise ValueError("an i2v request needs image_url and no reference_urls")
            body["image_urls"] = [_require_http_url(image_url, "image_url")]
        elif self.mode == "r2v":
            if image_url is not None or len(reference_urls) != len(self.references):
                raise ValueError(
                    f"an r2v request needs exactly {len(self.references)} reference_urls and no image_url"
                )
            body["metadata"] = {
                "reference_urls": [_require_http_url(u, "reference_urls item") for u in reference_urls]
            }
        elif image_url is not None or reference_urls:
            raise ValueError("a t2v request takes no image_url or reference_urls")
        body.update(settings)
        return body


def request_fingerprint(v: ValidatedRequest) -> str:
    """sha256 of what would be generated, for spotting an accidental repeat of the same call.

    Two calls that differ only in spelling (an explicit default, a null, surrounding
    whitespace) get the same fingerprint; inline image data counts by content, files by
    absolute path, URLs by their text.
    """
    canonical = {
        "v": _FINGERPRINT_VERSION,
        "mode": v.mode,
        "settings": v._settings(),
        "image": v.image.identity() if v.image else None,
        "references": [s.identity() for s in v.references],
    }
    encoded = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


# --- pydantic errors -> agent-facing problems ---------------------------------------------------


def _unknown_argument(name: object) -> _Problem:
    text = str(name)
    guess = _ALIASES.get(text.lower()) or next(
        iter(difflib.get_close_matches(text, list(_FIELDS), n=1)), None
    )
    hint = _t("unknown_fix", guess=guess) if guess else _t("unknown_fix_plain")
    return _Problem(text, _t("unknown_arg", name=_show(text, 60)), hint, tuple(_FIELDS))


def _from_pydantic(error: Mapping[str, Any]) -> _Problem:
    loc = error.get("loc", ())
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind in (_SOURCE_ERROR, _CROSS_FIELD):
        return _Problem(ctx["field"], ctx["message"], ctx["hint"], ctx.get("allowed"))
    name = str(loc[0]) if loc else "arguments"
    if kind == "extra_forbidden" or name not in _FIELDS:
        return _unknown_argument(name)
    spec = _FIELDS[name]
    if len(loc) > 1:  # an item of reference_videos that is not a string
        return _Problem(
            name,
            _t(
                "item_prefix",
                index=int(loc[1]) + 1,
                problem=_t("wrong_type", expected="a string", kind=_json_kind(value), value=_show(value)),
            ),
            _t("fix_array"),
        )
    if kind == "string_too_long":
        limit = ctx.get("max_length")
        return _Problem(name, _t("too_long", length=_size(value), limit=limit), _t("shorten", limit=limit))
    if kind in ("too_short", "too_long"):
        limit = MAX_REFERENCE_VIDEOS
        return _Problem(
            name, _t("refs_count", count=_size(value), limit=limit), _t("refs_count_fix", limit=limit)
        )
    if kind in ("greater_than_equal", "less_than_equal"):
        return _Problem(
            name,
            _t("range", value=_show(value), limit=MAX_SEED),
            _t("seed_fix", limit=MAX_SEED),
            spec.allowed,
        )
    if kind == "value_error":  # a ValueError from a validator: a bug of ours, but still say which field
        reason = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        return _Problem(name, _t("bad_value", reason=reason), _t("bad_value_fix"), spec.allowed)
    expected_kind = spec.kind
    value_kind = _json_kind(value)
    matches_kind = value_kind == expected_kind or (expected_kind == "integer" and value_kind == "number")
    if kind == "literal_error" and matches_kind:
        assert spec.allowed is not None
        hint = _t("pick")
        if name == "resolution" and isinstance(value, str) and value.lower() == "480p":
            hint = _t("480p")
        elif name == "model":
            hint = _t("model_fix")
        elif isinstance(value, str):
            fixed = next((a for a in spec.allowed if a.lower() == value.lower()), None)
            if fixed is not None:
                hint = _t("case", fixed=fixed)
        return _Problem(name, _t("not_allowed", value=_show(value), noun=spec.noun), hint, spec.allowed)
    expected = {
        "string": "a string",
        "integer": "an integer",
        "boolean": "a boolean",
        "array": "an array of strings",
    }[expected_kind]
    fix = {
        "string": _t("fix_string"),
        "integer": _t("fix_integer", example=spec.example),
        "boolean": _t("fix_boolean"),
        "array": _t("fix_array"),
    }[expected_kind]
    return _Problem(
        name, _t("wrong_type", expected=expected, kind=value_kind, value=_show(value)), fix, spec.allowed
    )


def _raise_problems(problems: list[_Problem]) -> NoReturn:
    """Raise one ``WanError`` for all problems: the first in argument order leads, the rest ride along.

    An agent that hears about every wrong field at once fixes them in one retry
    instead of one retry per field.
    """
    by_field: dict[str, _Problem] = {}
    for problem in problems:
        by_field.setdefault(problem.field, problem)  # the first problem per field: type before routing
    ordered = sorted(by_field.values(), key=lambda p: _FIELD_ORDER.get(p.field, -1))
    first, rest = ordered[0], ordered[1:]
    message, hint = first.message, first.hint
    if rest:
        parts = []
        for p in rest:
            allowed = f"; allowed: {', '.join(p.allowed)}" if p.allowed and len(p.allowed) <= 6 else ""
            parts.append(f"field '{p.field}': {p.message.rstrip('.')}{allowed}; next: {p.hint.rstrip('.')}")
        message += _t("also", rest=" | ".join(parts))
        hint += _t("also_fix", count=len(ordered))
    raise WanError(
        ErrorCode.INVALID_REQUEST,
        message,
        field=first.field,
        allowed=list(first.allowed) if first.allowed else None,
        hint=hint,
    )


def parse_video_request(args: Mapping[str, Any]) -> ValidatedRequest:
    """The only way from tool arguments to something the gateway client may send.

    Raises ``WanError(INVALID_REQUEST)`` naming the field, the allowed values and the
    fix; when several arguments are wrong, the message lists all of them.
    """
    if not isinstance(args, Mapping):
        raise WanError(
            ErrorCode.INVALID_REQUEST,
            _t("not_object", kind=_json_kind(args)),
            field="arguments",
            hint=_t("not_object_fix"),
        )
    # An unknown name is wrong even with a null value: the agent believes it means something.
    problems = [_unknown_argument(k) for k in args if not isinstance(k, str) or k not in _FIELDS]
    known = {k: v for k, v in args.items() if isinstance(k, str) and k in _FIELDS and v is not None}
    problems.extend(_cross_field_problems(known))
    try:
        request = VideoRequest.model_validate(known)
    except ValidationError as exc:
        # Field problems first: for the same field, "wrong value" beats "wrong combination".
        _raise_problems([_from_pydantic(e) for e in exc.errors(include_url=False)] + problems)
    if problems:  # cannot happen (the model applies the same rules), but never send on doubt
        _raise_problems(problems)
    image = _classify("image", request.image) if request.image is not None else None
    references = _classify_references(request.reference_videos or ())
    return ValidatedRequest(request=request, mode=request.mode, image=image, references=references)


# --- the JSON schema --------------------------------------------------------------------------


def _compact(node: Any) -> Any:
    """Strip what an agent does not need from pydantic's schema: titles, null branches, null defaults."""
    if isinstance(node, list):
        return [_compact(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _compact(v) for k, v in node.items() if k != "title"}
    branches = out.get("anyOf")
    if isinstance(branches, list):
        non_null = [b for b in branches if b != {"type": "null"}]
        if len(non_null) == 1:
            del out["anyOf"]
            out = {**non_null[0], **out}
    if "default" in out and out["default"] is None:
        del out["default"]
    return out


def video_request_schema() -> dict[str, Any]:
    """The ``inputSchema`` of ``generate_video``: small, because every agent pays for it in every prompt."""
    schema = _compact(VideoRequest.model_json_schema(mode="validation"))
    assert "$defs" not in schema, "the tool schema must be self-contained"
    properties = {
        name: {
            k: prop[k]
            for k in (
                "type",
                "enum",
                "default",
                "minimum",
                "maximum",
                "minLength",
                "maxLength",
                "minItems",
                "maxItems",
                "uniqueItems",
                "items",
                "description",
            )
            if k in prop
        }
        for name, prop in schema["properties"].items()
    }
    return {"type": "object", "properties": properties, "additionalProperties": False}
