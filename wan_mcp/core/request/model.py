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

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from wan_mcp.core.arguments import (
    Problem,
    json_kind,
    not_an_object,
    raise_problems,
    show,
    unknown_argument,
    without_host_arguments,
    wrong_type,
)
from wan_mcp.core.request.messages import t
from wan_mcp.core.request.sources import (
    MAX_REFERENCE_VIDEOS,
    MediaSource,
    SourceKind,
    classify,
    classify_references,
)

Mode = Literal["t2v", "i2v", "r2v"]
ModelName = Literal["wan2.6", "wan2.6-flash"]
AspectRatio = Literal["16:9", "9:16", "1:1", "4:3", "3:4"]
Resolution = Literal["720p", "1080p"]
Duration = Literal[5, 10, 15]
ShotType = Literal["single", "multi"]

MAX_PROMPT_CHARS: Final = 1500  # upstream cap (contract §9.2); the gateway documents none
MAX_NEGATIVE_PROMPT_CHARS: Final = 500
MAX_SEED: Final = 2_147_483_647
DEFAULT_ASPECT_RATIO: Final[AspectRatio] = "16:9"
#: Fields the wan2.6-flash page does not list (contract §3): sending them is a guess at best.
FLASH_UNSUPPORTED_FIELDS: Final = ("aspect_ratio", "negative_prompt", "seed", "prompt_extend", "shot_type")

_FINGERPRINT_VERSION: Final = "wan-mcp/request/v2"
#: A task id as the gateway and the journal spell them (the service checks the same shape).
_TASK_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")
#: What the gateway does when a field is left out (contract §2.2): spelling one out changes nothing.
_UPSTREAM_DEFAULTS: Final[Mapping[str, object]] = {"prompt_extend": True, "watermark": False, "shot_type": "single"}
_TRAILING_STOPS: Final = ".!?;,。！？；，…"


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
    "continue_from": _FieldSpec("task id", "string", example="video_01ABC"),
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
    "continue": "continue_from",
    "extend": "continue_from",
    "previous_task": "continue_from",
}


# --- cross-field rules -------------------------------------------------------------------------


def _cross_field_problems(args: Mapping[str, Any]) -> list[Problem]:
    """The routing rules of contract §2.1 / §3 that no single field can check.

    Works on presence (plus the model name and audio flag), so it runs on raw arguments
    too: an agent hears about a routing mistake in the same reply as a bad value.
    """
    model = args.get("model", "wan2.6")
    flash = model == "wan2.6-flash"
    continues = args.get("continue_from") is not None
    has_image = args.get("image") is not None
    has_refs = args.get("reference_videos") is not None
    prompt = args.get("prompt")
    has_prompt = prompt is not None and (not isinstance(prompt, str) or bool(prompt.strip()))
    problems: list[Problem] = []
    if continues:
        # Image-to-video from the last frame of a task: the first frame is given, so no other source,
        # and the orientation is the previous shot's.
        if has_image:
            problems.append(Problem("image", t("continue_image"), t("continue_image_fix")))
        if has_refs:
            problems.append(Problem("reference_videos", t("continue_refs"), t("continue_refs_fix")))
        if args.get("aspect_ratio") is not None and not flash:
            problems.append(Problem("aspect_ratio", t("continue_aspect"), t("continue_aspect_fix")))
        if args.get("shot_type") is not None and not flash:
            problems.append(Problem("shot_type", t("i2v_shot_type"), t("i2v_shot_type_fix")))
        has_image, has_refs = True, False  # from here on, it is image-to-video
    elif has_image and has_refs:
        problems.append(Problem("image", t("both_sources"), t("both_sources_fix")))
    if flash:
        if not has_image and not has_refs:
            problems.append(Problem("model", t("flash_t2v"), t("flash_t2v_fix"), ("wan2.6",)))
        problems.extend(
            Problem(name, t("flash_field", name=name), t("flash_field_fix", name=name))
            for name in FLASH_UNSUPPORTED_FIELDS
            if args.get(name) is not None
        )
    elif not has_image and not has_refs and not has_prompt:
        problems.append(Problem("prompt", t("t2v_prompt"), t("t2v_prompt_fix")))
    if has_image and not flash and not continues:  # on flash these two were reported as unsupported already
        if args.get("aspect_ratio") is not None:
            problems.append(Problem("aspect_ratio", t("i2v_aspect"), t("i2v_aspect_fix")))
        if args.get("shot_type") is not None:
            problems.append(Problem("shot_type", t("i2v_shot_type"), t("i2v_shot_type_fix")))
    if model == "wan2.6" and args.get("audio") is False:
        problems.append(Problem("audio", t("audio_off"), t("audio_off_fix"), ("true",)))
    if isinstance(prompt, str):
        duration = args.get("duration", 5)
        why = shot_times_problem(prompt, duration if isinstance(duration, int | float) else 5)
        if why is not None:
            hint = t("shot_times_fix", duration=duration)
            longer = next((d for d in (5, 10, 15) if d >= _last_shot_end(prompt)), None)
            if longer is not None and longer > duration:
                hint += t("shot_times_longer", longer=longer)
            problems.append(Problem("prompt", t("shot_times", problem=why), hint))
    return problems


#: "Shot 2 [3-6 s]" / "Shot 2 [3s-6s]" / "shot 2 [3 - 6 seconds]": Wan's multi-shot timing convention.
_SHOT = re.compile(
    r"\bshot\s*(\d+)\s*\[\s*(\d+(?:\.\d+)?)\s*s?\s*[-–~]\s*(\d+(?:\.\d+)?)\s*(?:s|sec|secs|seconds)?\s*\]",
    re.IGNORECASE,
)


def _shots(prompt: str) -> list[tuple[int, float, float]]:
    return [(int(n), float(a), float(b)) for n, a, b in _SHOT.findall(prompt)]


def _last_shot_end(prompt: str) -> float:
    return max((end for _, _, end in _shots(prompt)), default=0.0)


def shot_times_problem(prompt: str, duration: float) -> str | None:
    """What is wrong with the stated shot times of a multi-shot prompt, or None (also when none are stated).

    The shots must be numbered 1, 2, ... in order, start at 0, each start where the previous one
    ended, and end within the clip's duration.
    """
    shots = _shots(prompt)
    if not shots:
        return None
    expected_start = 0.0
    for position, (number, start, end) in enumerate(shots, start=1):
        if number != position:
            return f"the shots are numbered {', '.join(str(n) for n, _, _ in shots)}; number them 1, 2, 3 in order"
        if end <= start:
            return f"shot {number} [{start:g}-{end:g} s] ends before it starts"
        if abs(start - expected_start) > 1e-9:
            return f"shot {number} starts at {start:g} s but the previous shot ends at {expected_start:g} s"
        expected_start = end
    if expected_start > duration + 1e-9:
        return f"the shots run to {expected_start:g} s but the video lasts {duration:g} s"
    return None


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
#: Validation-context key under which the validators hand their classified sources to
#: parse_video_request, so a data: URL is decoded once, not once per pass.
_SOURCES: Final = "wan_sources"


def _remember(info: ValidationInfo, name: str, value: object) -> None:
    if isinstance(info.context, dict) and isinstance(info.context.get(_SOURCES), dict):
        info.context[_SOURCES][name] = value


_SOURCE_ERROR: Final = "wan_source"


def _problem_error(problem: Problem, error_type: str) -> PydanticCustomError:
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
    continue_from: str | None = Field(
        None,
        max_length=128,
        description="A completed task_id: its last frame starts this shot (i2v). Not with image/reference_videos",
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
    prompt_extend: bool | None = Field(None, description="Let upstream rewrite the prompt (default true). Not on flash")
    shot_type: ShotType | None = Field(None, description="One shot or multi-shot cuts. t2v/r2v only; not on flash")
    audio: bool | None = Field(
        None,
        description=("wan2.6 always has audio (false rejected). flash: default true; false = silent, half price"),
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
    def _image_source(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            try:
                source = classify("image", value)
            except Problem as problem:
                raise _problem_error(problem, _SOURCE_ERROR) from None
            _remember(info, "image", source)
        return value

    @field_validator("continue_from")
    @classmethod
    def _task_id(cls, value: str | None) -> str | None:
        if value is not None and not _TASK_ID.match(value):
            problem = Problem("continue_from", t("continue_id", value=show(value)), t("continue_id_fix"))
            raise _problem_error(problem, _SOURCE_ERROR)
        return value

    @field_validator("reference_videos")
    @classmethod
    def _reference_sources(cls, value: tuple[str, ...] | None, info: ValidationInfo) -> tuple[str, ...] | None:
        if value is not None:
            try:
                sources = classify_references(value)
            except Problem as problem:
                raise _problem_error(problem, _SOURCE_ERROR) from None
            _remember(info, "reference_videos", sources)
        return value

    @model_validator(mode="after")
    def _routing(self) -> VideoRequest:
        problems = _cross_field_problems(self.model_dump(exclude_none=True))
        if problems:
            raise _problem_error(problems[0], _CROSS_FIELD)
        return self

    @property
    def mode(self) -> Mode:
        """Which upstream mode the gateway will pick (contract §2.1): references win, then image
        (a continued shot is image-to-video from the previous task's last frame)."""
        if self.reference_videos:
            return "r2v"
        if self.image is not None or self.continue_from is not None:
            return "i2v"
        return "t2v"


# --- the validated request and its wire body ---------------------------------------------------


def _require_http_url(url: object, what: str) -> str:
    """Guard the wire: only public http(s) URLs go upstream, never paths or base64."""
    if not isinstance(url, str):
        raise ValueError(f"{what} must be a string URL, got {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise ValueError(f"{what} must be an http(s) URL (upload local files and data URLs first), got {url[:60]!r}")
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

    @property
    def has_audio(self) -> bool:
        """Whether the video will have sound (it is billed that way): always on wan2.6."""
        return self.request.model != "wan2.6-flash" or self.request.audio is not False

    def preview_payload(self) -> dict[str, Any]:
        """The body :meth:`to_payload` would build, with ``<upload: ...>`` where an upload's URL goes
        (``dry_run``: nothing is uploaded to learn it)."""

        def url_of(src: MediaSource) -> str:
            return src.value if src.kind is SourceKind.URL else f"<upload: {src.describe()}>"

        image = url_of(self.image) if self.image is not None else None
        if self.request.continue_from is not None:
            image = f"<upload: last frame of {self.request.continue_from}>"
        return self._body(image, [url_of(s) for s in self.references], check=False)

    def to_payload(self, image_url: str | None = None, reference_urls: Sequence[str] = ()) -> dict[str, Any]:
        """The exact ``POST /v1/videos/generations`` body (contract §2.2, §2.4, §3).

        ``image_url``/``reference_urls`` are the http(s) URLs the server got for
        ``image``/``references`` (the originals when they were URLs already, upload
        results otherwise). Passing URLs that do not match the mode is a programming
        error and raises ``ValueError``: no base64 or local path ever reaches the wire.
        """
        return self._body(image_url, reference_urls, check=True)

    def _body(self, image_url: str | None, reference_urls: Sequence[str], *, check: bool) -> dict[str, Any]:
        def url(value: object, what: str) -> str:
            return _require_http_url(value, what) if check else str(value)

        settings = self._settings()
        body: dict[str, Any] = {"model": settings.pop("model")}
        if "prompt" in settings:
            body["prompt"] = settings.pop("prompt")
        if isinstance(reference_urls, str):
            raise ValueError("reference_urls must be a sequence of URLs, not one string")
        if self.mode == "i2v":
            if image_url is None or reference_urls:
                raise ValueError("an i2v request needs image_url and no reference_urls")
            body["image_urls"] = [url(image_url, "image_url")]
        elif self.mode == "r2v":
            if image_url is not None or len(reference_urls) != len(self.references):
                raise ValueError(f"an r2v request needs exactly {len(self.references)} reference_urls and no image_url")
            body["metadata"] = {"reference_urls": [url(u, "reference_urls item") for u in reference_urls]}
        elif image_url is not None or reference_urls:
            raise ValueError("a t2v request takes no image_url or reference_urls")
        body.update(settings)
        return body


def _same_text(text: str) -> str:
    """A prompt as it matters for "is this the same request": runs of whitespace are one space,
    and a trailing full stop (or !, ?, 。...) is no new idea."""
    return " ".join(text.split()).rstrip(_TRAILING_STOPS).rstrip()


def request_fingerprint(v: ValidatedRequest) -> str:
    """sha256 of what would be generated, for spotting an accidental repeat of the same call.

    Computed on the request as it will be sent, with every default made explicit (ours and
    the gateway's), so two calls that differ only in spelling (a default spelled out, a null,
    key order, whitespace, a trailing period) get the same fingerprint; inline image data
    counts by content, files by absolute path, URLs by their text. A different seed is a
    different request: that is how an agent asks for a new take.
    """
    settings = v._settings()
    flash = v.request.model == "wan2.6-flash"
    if not flash:
        for name, value in _UPSTREAM_DEFAULTS.items():
            if name == "shot_type" and v.mode == "i2v":
                continue
            settings.setdefault(name, value)
        settings["audio"] = True  # non-flash Wan 2.6 always has audio
    else:
        settings.setdefault("watermark", False)
    for name in ("prompt", "negative_prompt"):
        if name in settings:
            settings[name] = _same_text(settings[name])
    canonical = {
        "v": _FINGERPRINT_VERSION,
        "mode": v.mode,
        "settings": settings,
        "image": v.image.identity() if v.image else None,
        "continues": v.request.continue_from,
        "references": [s.identity() for s in v.references],
    }
    encoded = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


# --- pydantic errors -> agent-facing problems ---------------------------------------------------


def _size(value: object) -> int:
    return len(value) if isinstance(value, str | list | tuple) else 0


def _from_pydantic(error: Mapping[str, Any]) -> Problem:
    loc = error.get("loc", ())
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind in (_SOURCE_ERROR, _CROSS_FIELD):
        return Problem(ctx["field"], ctx["message"], ctx["hint"], ctx.get("allowed"))
    name = str(loc[0]) if loc else "arguments"
    if kind == "extra_forbidden" or name not in _FIELDS:
        return unknown_argument("generate_video", name, tuple(_FIELDS), _ALIASES)
    spec = _FIELDS[name]
    if len(loc) > 1:  # an item of reference_videos that is not a string
        return Problem(
            name,
            t(
                "item_prefix",
                index=int(loc[1]) + 1,
                problem=t("wrong_type", expected="a string", kind=json_kind(value), value=show(value)),
            ),
            t("fix_array"),
        )
    if kind == "string_too_long":
        limit = ctx.get("max_length")
        return Problem(name, t("too_long", length=_size(value), limit=limit), t("shorten", limit=limit))
    if kind in ("too_short", "too_long"):
        limit = MAX_REFERENCE_VIDEOS
        return Problem(name, t("refs_count", count=_size(value), limit=limit), t("refs_count_fix", limit=limit))
    if kind in ("greater_than_equal", "less_than_equal"):
        return Problem(
            name,
            t("range", value=show(value), limit=MAX_SEED),
            t("seed_fix", limit=MAX_SEED),
            spec.allowed,
        )
    if kind == "value_error":  # a ValueError from a validator: a bug of ours, but still say which field
        reason = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        return Problem(name, t("bad_value", reason=reason), t("bad_value_fix"), spec.allowed)
    expected_kind = spec.kind
    value_kind = json_kind(value)
    matches_kind = value_kind == expected_kind or (expected_kind == "integer" and value_kind == "number")
    if kind == "literal_error" and matches_kind:
        assert spec.allowed is not None
        hint = t("pick")
        if name == "resolution" and isinstance(value, str) and value.lower() == "480p":
            hint = t("480p")
        elif name == "model":
            hint = t("model_fix")
        elif isinstance(value, str):
            fixed = next((a for a in spec.allowed if a.lower() == value.lower()), None)
            if fixed is not None:
                hint = t("case", fixed=fixed)
        return Problem(name, t("not_allowed", value=show(value), noun=spec.noun), hint, spec.allowed)
    return wrong_type(name, expected_kind, value, example=spec.example or "5", allowed=spec.allowed)


def parse_video_request(args: Mapping[str, Any], *, tool_arguments: Sequence[str] = ()) -> ValidatedRequest:
    """The only way from tool arguments to something the gateway client may send.

    Raises ``WanError(INVALID_REQUEST)`` naming the field, the allowed values and the
    fix; when several arguments are wrong, the message lists all of them.
    ``tool_arguments`` are the tool's own arguments (``wait_seconds``...) that the caller
    has already taken out: they are listed among the allowed names of an unknown-argument
    error. Blocking for a large inline image (base64 decoding): call it off the event loop.
    Each data: URL is decoded once.
    """
    if not isinstance(args, Mapping):
        raise not_an_object("generate_video", args)
    args = without_host_arguments(args)
    # An unknown name is wrong even with a null value: the agent believes it means something.
    problems = [
        unknown_argument("generate_video", k, (*_FIELDS, *tool_arguments), _ALIASES)
        for k in args
        if not isinstance(k, str) or k not in _FIELDS
    ]
    known = {k: v for k, v in args.items() if isinstance(k, str) and k in _FIELDS and v is not None}
    problems.extend(_cross_field_problems(known))
    sources: dict[str, Any] = {}
    try:
        request = VideoRequest.model_validate(known, context={_SOURCES: sources})
    except ValidationError as exc:
        # Field problems first: for the same field, "wrong value" beats "wrong combination".
        raise_problems([_from_pydantic(e) for e in exc.errors(include_url=False)] + problems, _FIELD_ORDER)
    if problems:  # cannot happen (the model applies the same rules), but never send on doubt
        raise_problems(problems, _FIELD_ORDER)
    image = sources.get("image") if request.image is not None else None
    if request.image is not None and image is None:
        image = classify("image", request.image)
    references = sources.get("reference_videos") or classify_references(request.reference_videos or ())
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
