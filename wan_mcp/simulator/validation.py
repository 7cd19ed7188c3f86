"""Create-request rules for ``wan2.6`` and ``wan2.6-flash``, from the gateway contract (§2, §3, §11.2).

The simulator is deliberately stricter than the real gateway is known to be: every rule a
documented request shape implies is enforced, so a client bug (a string duration, an
``aspect_ratio`` on an image job, a flash request carrying t2v-only fields) fails loudly in tests
instead of being silently ignored. Unknown top-level keys are the exception: the real gateway
ignores them, so we do too. Every message names the offending field, because the clients under
test surface these messages to agents and humans.

JSON ``null`` on an optional field is treated as "absent" [I]: the gateway is a Go service where
null and missing decode to the same zero value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

MODELS: Final = ("wan2.6", "wan2.6-flash")
DURATIONS: Final = (5, 10, 15)
RESOLUTIONS: Final = ("720p", "1080p")
ASPECT_RATIOS: Final = ("16:9", "9:16", "1:1", "4:3", "3:4")
SHOT_TYPES: Final = ("single", "multi")

# Contract table 2.3: (aspect_ratio, resolution) -> output pixels.
FRAME_SIZES: Final[dict[tuple[str, str], tuple[int, int]]] = {
    ("16:9", "720p"): (1280, 720),
    ("16:9", "1080p"): (1920, 1080),
    ("9:16", "720p"): (720, 1280),
    ("9:16", "1080p"): (1080, 1920),
    ("1:1", "720p"): (960, 960),
    ("1:1", "1080p"): (1440, 1440),
    ("4:3", "720p"): (1088, 832),
    ("4:3", "1080p"): (1632, 1248),
    ("3:4", "720p"): (832, 1088),
    ("3:4", "1080p"): (1248, 1632),
}

# Fields the flash page does not list; sending them is almost certainly a client bug.
FLASH_UNSUPPORTED: Final = ("aspect_ratio", "negative_prompt", "seed", "prompt_extend", "shot_type")

# [I] Upstream r2v accepts at most 3 reference videos; the gateway documents no limit.
MAX_REFERENCE_URLS: Final = 3
# [I] Upstream seeds are non-negative 32-bit signed integers.
MAX_SEED: Final = 2**31 - 1
# [I] Generous sanity caps: the gateway documents none, upstream mirrors quote 1500-5000.
MAX_PROMPT_CHARS: Final = 5000
MAX_BUSINESS_ID_CHARS: Final = 128


class InvalidRequest(Exception):
    """A 400 ``invalid_request_error``; ``field`` is the dotted path of the offending input."""

    def __init__(self, field: str, detail: str) -> None:
        self.field = field
        self.detail = detail
        super().__init__(f"invalid request parameters: {field} {detail}")


@dataclass(frozen=True)
class GenerationRequest:
    """A validated create request, with the gateway's defaults applied."""

    model: str
    mode: str  # "t2v" | "i2v" | "r2v"
    prompt: str | None
    image_url: str | None
    reference_urls: tuple[str, ...]
    aspect_ratio: str | None  # as sent; None means "default" (16:9) or "follow the image" (i2v)
    resolution: str
    duration: int
    negative_prompt: str | None
    seed: int | None
    prompt_extend: bool
    audio: bool  # effective: wan2.6 always has audio [I: `audio: false` is ignored there]
    shot_type: str | None
    watermark: bool
    client_business_id: str | None


def _present(body: dict[str, Any], key: str) -> bool:
    return body.get(key) is not None


def _string(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(field, f"must be a string (got {_json_type(value)})")
    return value


def _boolean(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest(field, f"must be a boolean true/false (got {_json_type(value)})")
    return value


def _integer(value: object, field: str) -> int:
    # bool is an int subclass in Python, and 5.0 is a float: both are client bugs.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(field, f"must be an integer (got {_json_type(value)})")
    return value


def _choice(value: object, field: str, allowed: tuple[str, ...]) -> str:
    text = _string(value, field)
    if text not in allowed:
        raise InvalidRequest(field, f"must be one of {', '.join(allowed)} (got {text!r})")
    return text


def _json_type(value: object) -> str:
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
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _http_url(value: object, field: str) -> str:
    url = _string(value, field)
    lowered = url.strip().lower()
    if lowered.startswith("data:") or ";base64," in lowered:
        raise InvalidRequest(
            field,
            "must be a public http(s) URL; base64/data URIs are no longer accepted, upload the file first",
        )
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidRequest(field, f"must be a public http(s) URL (got {url[:80]!r})")
    return url.strip()


def _url_list(value: object, field: str) -> list[str]:
    if not isinstance(value, list):
        raise InvalidRequest(field, f"must be an array of URL strings (got {_json_type(value)})")
    return [_http_url(item, f"{field}[{index}]") for index, item in enumerate(value)]


def _business_id(value: object, field: str) -> str:
    text = _string(value, field)
    if not text.strip():
        raise InvalidRequest(field, "must not be empty")
    if len(text) > MAX_BUSINESS_ID_CHARS:
        raise InvalidRequest(field, f"must be at most {MAX_BUSINESS_ID_CHARS} characters")
    if "/" in text:
        raise InvalidRequest(field, "must not contain '/' (it is used as a URL path segment)")
    return text


def validate_create(body: object) -> GenerationRequest:
    """Validate a decoded JSON body; raise :class:`InvalidRequest` naming the first bad field."""
    if not isinstance(body, dict):
        raise InvalidRequest("body", f"must be a JSON object (got {_json_type(body)})")

    if not _present(body, "model"):
        raise InvalidRequest("model", f"is required; one of {', '.join(MODELS)}")
    model = _choice(body["model"], "model", MODELS)
    flash = model == "wan2.6-flash"

    if flash:
        for key in FLASH_UNSUPPORTED:
            if _present(body, key):
                raise InvalidRequest(key, "is not supported by wan2.6-flash; remove it (use model wan2.6)")

    metadata: dict[str, Any] = {}
    if _present(body, "metadata"):
        raw_metadata = body["metadata"]
        if not isinstance(raw_metadata, dict):
            raise InvalidRequest("metadata", f"must be an object (got {_json_type(raw_metadata)})")
        metadata = raw_metadata

    images = _url_list(body["image_urls"], "image_urls") if _present(body, "image_urls") else []
    if len(images) > 1:
        raise InvalidRequest("image_urls", f"accepts only 1 image (got {len(images)})")
    references: list[str] = []
    if metadata.get("reference_urls") is not None:
        references = _url_list(metadata["reference_urls"], "metadata.reference_urls")
        if len(references) > MAX_REFERENCE_URLS:
            raise InvalidRequest(
                "metadata.reference_urls",
                f"accepts at most {MAX_REFERENCE_URLS} videos (got {len(references)})",
            )
    if images and references:
        raise InvalidRequest("image_urls", "cannot be combined with metadata.reference_urls; send one or the other")
    mode = "i2v" if images else "r2v" if references else "t2v"

    prompt: str | None = None
    if _present(body, "prompt"):
        prompt = _string(body["prompt"], "prompt")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise InvalidRequest("prompt", f"must be at most {MAX_PROMPT_CHARS} characters (got {len(prompt)})")
    if mode == "t2v":
        if flash:
            raise InvalidRequest(
                "image_urls",
                "is required for wan2.6-flash (or metadata.reference_urls); text-to-video needs model wan2.6",
            )
        if prompt is None or not prompt.strip():
            raise InvalidRequest("prompt", "is required for text-to-video (no image_urls or reference_urls)")

    aspect_ratio: str | None = None
    if _present(body, "aspect_ratio"):
        aspect_ratio = _choice(body["aspect_ratio"], "aspect_ratio", ASPECT_RATIOS)
        if mode == "i2v":
            raise InvalidRequest(
                "aspect_ratio",
                "is not supported for image-to-video; the output follows the image orientation",
            )

    resolution = _choice(body["resolution"], "resolution", RESOLUTIONS) if _present(body, "resolution") else "1080p"

    duration = 5
    if _present(body, "duration"):
        duration = _integer(body["duration"], "duration")
        if duration not in DURATIONS:
            raise InvalidRequest("duration", f"must be one of 5, 10, 15 seconds (got {duration})")

    negative_prompt = _string(body["negative_prompt"], "negative_prompt") if _present(body, "negative_prompt") else None
    if negative_prompt is not None and len(negative_prompt) > MAX_PROMPT_CHARS:
        raise InvalidRequest("negative_prompt", f"must be at most {MAX_PROMPT_CHARS} characters")

    seed: int | None = None
    if _present(body, "seed"):
        seed = _integer(body["seed"], "seed")
        if not 0 <= seed <= MAX_SEED:
            raise InvalidRequest("seed", f"must be between 0 and {MAX_SEED} (got {seed})")

    prompt_extend = _boolean(body["prompt_extend"], "prompt_extend") if _present(body, "prompt_extend") else True
    audio = _boolean(body["audio"], "audio") if _present(body, "audio") else True
    shot_type = _choice(body["shot_type"], "shot_type", SHOT_TYPES) if _present(body, "shot_type") else None
    watermark = _boolean(body["watermark"], "watermark") if _present(body, "watermark") else False

    business_id: str | None = None
    if _present(body, "client_business_id"):
        business_id = _business_id(body["client_business_id"], "client_business_id")
    elif metadata.get("client_business_id") is not None:
        business_id = _business_id(metadata["client_business_id"], "metadata.client_business_id")

    return GenerationRequest(
        model=model,
        mode=mode,
        prompt=prompt,
        image_url=images[0] if images else None,
        reference_urls=tuple(references),
        aspect_ratio=aspect_ratio,
        resolution=resolution,
        duration=duration,
        negative_prompt=negative_prompt,
        seed=seed,
        prompt_extend=prompt_extend,
        audio=audio if flash else True,
        shot_type=shot_type,
        watermark=watermark,
        client_business_id=business_id,
    )


def closest_aspect_ratio(width: int, height: int) -> str:
    """The documented aspect ratio nearest (in log space, so 2:1 and 1:2 are equally far) to an image."""
    if width <= 0 or height <= 0:
        return "16:9"
    target = math.log(width / height)

    def distance(ratio: str) -> float:
        w, h = (int(part) for part in ratio.split(":"))
        return abs(math.log(w / h) - target)

    return min(ASPECT_RATIOS, key=distance)
