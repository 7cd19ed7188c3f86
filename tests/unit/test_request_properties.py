"""Property tests: whatever an agent sends, either the gateway would accept the body or the agent
is told exactly which argument to fix.

The oracle here is written from the gateway contract (§2.1, §2.2, §3, §11.2) and the tool's
documented rules, not from ``request.py``: generated values carry their own validity label,
and the routing rules are restated below.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlsplit

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from wan_mcp.core.request import SourceKind, ValidatedRequest, parse_video_request
from wan_mcp.errors import ErrorCode, WanError

# --- the contract, restated ----------------------------------------------------------------------

ARGUMENTS = (
    "prompt", "model", "image", "reference_videos", "aspect_ratio", "resolution", "duration",
    "negative_prompt", "seed", "prompt_extend", "shot_type", "audio", "watermark",
)  # fmt: skip
MODELS = ("wan2.6", "wan2.6-flash")
ASPECT_RATIOS = ("16:9", "9:16", "1:1", "4:3", "3:4")
RESOLUTIONS = ("720p", "1080p")
DURATIONS = (5, 10, 15)
SHOT_TYPES = ("single", "multi")
MAX_SEED = 2**31 - 1
FLASH_NOT_LISTED = ("aspect_ratio", "negative_prompt", "seed", "prompt_extend", "shot_type")
WIRE_KEYS = {
    "wan2.6": {
        "model", "prompt", "image_urls", "metadata", "aspect_ratio", "resolution", "duration",
        "negative_prompt", "seed", "prompt_extend", "audio", "shot_type", "watermark",
    },
    "wan2.6-flash": {
        "model", "prompt", "image_urls", "metadata", "resolution", "duration", "audio", "watermark",
    },
}  # fmt: skip
IMAGE_URL = "https://example.com/a.png"


def is_http_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def assert_gateway_accepts(body: dict[str, Any]) -> None:
    """Every rule the gateway (and the simulator) applies to a wan2.6 / wan2.6-flash create body."""
    model = body.get("model")
    assert model in MODELS
    assert set(body) <= WIRE_KEYS[model], set(body) - WIRE_KEYS[model]
    images = body.get("image_urls")
    refs = body.get("metadata", {}).get("reference_urls")
    if "metadata" in body:
        assert set(body["metadata"]) == {"reference_urls"}
    assert images is None or refs is None, "image_urls and reference_urls cannot be combined"
    if images is not None:
        assert isinstance(images, list) and len(images) == 1 and all(map(is_http_url, images))
    if refs is not None:
        assert isinstance(refs, list) and 1 <= len(refs) <= 3 and all(map(is_http_url, refs))
    if images is None and refs is None:
        assert model == "wan2.6", "flash has no text-to-video"
        assert isinstance(body.get("prompt"), str) and body["prompt"].strip(), "t2v needs a prompt"
    if "prompt" in body:
        assert isinstance(body["prompt"], str) and 0 < len(body["prompt"]) <= 1500
    if "aspect_ratio" in body:
        assert images is None and body["aspect_ratio"] in ASPECT_RATIOS
    if "shot_type" in body:
        assert images is None and body["shot_type"] in SHOT_TYPES
    assert body.get("resolution", "1080p") in RESOLUTIONS
    duration = body.get("duration", 5)
    assert type(duration) is int and duration in DURATIONS
    if "seed" in body:
        assert type(body["seed"]) is int and 0 <= body["seed"] <= MAX_SEED
    if "negative_prompt" in body:
        assert isinstance(body["negative_prompt"], str) and 0 < len(body["negative_prompt"]) <= 500
    for flag in ("prompt_extend", "audio", "watermark"):
        if flag in body:
            assert type(body[flag]) is bool
    if model == "wan2.6":
        assert body.get("audio", True) is True, "non-flash wan2.6 cannot be silent"
    for value in body.values():
        assert not (isinstance(value, str) and value.startswith("data:"))


def build_payload(v: ValidatedRequest) -> dict[str, Any]:
    refs = [f"https://example.com/ref{i}.mp4" for i in range(len(v.references))]
    return v.to_payload(image_url=IMAGE_URL if v.mode == "i2v" else None, reference_urls=refs)


def assert_faithful(args: dict[str, Any], v: ValidatedRequest, body: dict[str, Any]) -> None:
    """The body says what the agent asked for (defaults filled in as documented)."""
    given_ = {k: val for k, val in args.items() if val is not None}
    model = given_.get("model", "wan2.6")
    assert body["model"] == model
    expected_mode = "r2v" if "reference_videos" in given_ else "i2v" if "image" in given_ else "t2v"
    assert v.mode == expected_mode
    assert ("image_urls" in body) is (expected_mode == "i2v")
    assert ("metadata" in body) is (expected_mode == "r2v")
    assert body["duration"] == given_.get("duration", 5)
    assert body["resolution"] == given_.get("resolution", "1080p")
    if expected_mode != "i2v" and model == "wan2.6":
        assert body["aspect_ratio"] == given_.get("aspect_ratio", "16:9")
    for name in ("seed", "prompt_extend", "shot_type", "watermark"):
        assert body.get(name) == given_.get(name)
    if model == "wan2.6-flash":
        assert body["audio"] is given_.get("audio", True)
    prompt = given_.get("prompt")
    assert body.get("prompt") == (prompt.strip() or None if isinstance(prompt, str) else None)
    if expected_mode == "r2v":
        assert len(body["metadata"]["reference_urls"]) == len(given_["reference_videos"])


# --- labelled values: (value, valid on its own) --------------------------------------------------

Labelled = tuple[Any, bool]

PNG_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(40)).decode()
VALID_IMAGES = [
    "https://example.com/cat.jpg", "http://cdn.example.org:8080/p/q.png?sig=abc", "/tmp/pics/cat.png",
    "~/cat.webp", "cat.jpeg", "./dir/cat", "C:\\pics\\cat.png", f"data:image/png;base64,{PNG_B64}",
    f"data:image/jpeg;base64,{PNG_B64.rstrip('=')}",
]  # fmt: skip
INVALID_IMAGES = [
    "", "   ", "ftp://example.com/a.png", "file:///tmp/a.png", "javascript:alert(1)",
    "https://u:p@example.com/a.png", "https:///a.png", "https://example.com/a b.png",
    "data:text/plain;base64,aGk=", "data:image/png;base64,@@", "data:image/png,raw",
    "iVBORw0KGgo" + "A" * 300, "movie.mp4", 7, True, ["https://example.com/a.png"], {},
]  # fmt: skip
VALID_VIDEOS = ["https://example.com/a.mp4", "/v/b.mov", "~/c.mp4", "clips/d", "https://example.com/e?x=1"]
INVALID_VIDEO_LISTS = [
    [], ["a.mp4", "b.mp4", "c.mp4", "d.mp4"], ["a.mp4", "a.mp4"], ["data:video/mp4;base64,AAAA"],
    ["face.png"], ["ftp://example.com/a.mp4"], [""], [3], "a.mp4", 5, {"a": 1},
]  # fmt: skip


def labelled(valid: st.SearchStrategy[Any], invalid: st.SearchStrategy[Any]) -> st.SearchStrategy[Labelled]:
    """Mostly valid values (3 in 4), so that enough generated requests get through to the payload checks."""
    return st.sampled_from([True, True, True, False]).flatmap(
        lambda ok: valid.map(lambda v: (v, True)) if ok else invalid.map(lambda v: (v, False))
    )


wrong_types = st.sampled_from([[], {}, 1.5, "x", True])
texts = st.one_of(st.text(max_size=60), st.just("p" * 1500), st.just("  padded prompt  "))

FIELD_VALUES: dict[str, st.SearchStrategy[Labelled]] = {
    "prompt": labelled(texts, st.one_of(st.just("q" * 1501), st.integers(), st.booleans(), st.just(["a"]))),
    "model": labelled(st.sampled_from(MODELS), st.sampled_from(["wan2.5", "WAN2.6", "wan2.6-t2v", "", 2.6])),
    "image": labelled(st.sampled_from(VALID_IMAGES), st.sampled_from(INVALID_IMAGES)),
    "reference_videos": labelled(
        st.lists(st.sampled_from(VALID_VIDEOS), min_size=1, max_size=3, unique=True),
        st.sampled_from(INVALID_VIDEO_LISTS),
    ),
    "aspect_ratio": labelled(st.sampled_from(ASPECT_RATIOS), st.sampled_from(["21:9", "16x9", "1280*720", 1])),
    "resolution": labelled(st.sampled_from(RESOLUTIONS), st.sampled_from(["480p", "1080P", "4k", 1080])),
    "duration": labelled(
        st.sampled_from([5, 10, 15, 5.0, 15.0]),
        st.one_of(st.sampled_from(["5", True, 5.5, "ten"]), st.integers().filter(lambda n: n not in (5, 10, 15))),
    ),
    "negative_prompt": labelled(
        st.text(max_size=40),
        st.one_of(st.just("n" * 501), wrong_types.filter(lambda v: not isinstance(v, str))),
    ),
    "seed": labelled(
        st.one_of(st.integers(0, MAX_SEED), st.just(7.0)),
        st.one_of(st.integers(max_value=-1), st.integers(min_value=MAX_SEED + 1), st.sampled_from(["1", True, 0.5])),
    ),
    "prompt_extend": labelled(st.booleans(), st.sampled_from(["true", "false", 0, 1])),
    "shot_type": labelled(st.sampled_from(SHOT_TYPES), st.sampled_from(["Single", "multiple", "", 2])),
    "audio": labelled(st.booleans(), st.sampled_from(["true", "false", 0, 1])),
    "watermark": labelled(st.booleans(), st.sampled_from(["true", "no", 1])),
}
EXTRA_KEYS = ("image_url", "image_urls", "size", "Prompt", "metadata", "client_business_id", "n")


@st.composite
def any_arguments(draw: st.DrawFn) -> tuple[dict[str, Any], set[str]]:
    """Arguments with random presence, nulls, wrong values and unknown keys, plus the fields that are bad
    on their own."""
    args: dict[str, Any] = {}
    bad: set[str] = set()
    for name in ARGUMENTS:
        choice = draw(st.sampled_from(["absent", "absent", "absent", "null", "value", "value"]))
        if choice == "null":
            args[name] = None
        elif choice == "value":
            value, ok = draw(FIELD_VALUES[name])
            args[name] = value
            if not ok:
                bad.add(name)
    for key in draw(st.lists(st.sampled_from(EXTRA_KEYS), max_size=2, unique=True)):
        args[key] = draw(st.one_of(st.none(), st.integers(), st.text(max_size=5)))
        bad.add(key)
    return args, bad


def routing_problems(args: dict[str, Any]) -> tuple[set[str], set[str]]:
    """The fields a routing rule blames: (certainly blamed, blamed or not depending on wording choices).

    Rules (contract §2.1, §3 and the tool's documented behaviour): image and reference_videos
    are exclusive (blame ``image``); flash needs one of them (blame ``model``) and does not list
    aspect_ratio/negative_prompt/seed/prompt_extend/shot_type; wan2.6 text-to-video needs a
    non-blank prompt; aspect_ratio and shot_type are t2v/r2v only; wan2.6 cannot be silent.
    When the model name itself is invalid, the model-dependent rules may or may not fire.
    """
    present = {k for k, v in args.items() if v is not None}
    model = args["model"] if args.get("model") is not None else "wan2.6"
    known_model = model in MODELS
    certain: set[str] = set()
    maybe: set[str] = set()
    if {"image", "reference_videos"} <= present:
        certain.add("image")
    source = bool({"image", "reference_videos"} & present)
    prompt = args.get("prompt")
    has_prompt = prompt is not None and (not isinstance(prompt, str) or prompt.strip() != "")
    blamed = certain if known_model else maybe
    if model == "wan2.6-flash":
        if not source:
            blamed.add("model")
        blamed.update(present & set(FLASH_NOT_LISTED))
    else:
        if not source and not has_prompt:
            blamed.add("prompt")
        if "image" in present:
            blamed.update(present & {"aspect_ratio", "shot_type"})
        if args.get("audio") is False:
            blamed.add("audio")
    return certain, maybe


# --- properties ------------------------------------------------------------------------------------

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(any_arguments())
def test_every_request_is_either_sendable_or_explained(case: tuple[dict[str, Any], set[str]]) -> None:
    args, bad_values = case
    certain, maybe = routing_problems(args)
    certain |= bad_values
    try:
        v = parse_video_request(args)
    except WanError as err:
        event("rejected")
        assert certain or maybe, f"a valid request was rejected: {err}"
        assert err.code is ErrorCode.INVALID_REQUEST
        assert err.field, "every rejection names a field"
        assert err.field in set(ARGUMENTS) | set(args), err.field
        text = str(err)
        assert err.field in text
        assert err.field in certain | maybe, (err.field, certain, maybe, text)
        for name in certain:  # every certainly-wrong field is mentioned, so one retry can fix them all
            assert f"field '{name}'" in text, (name, text)
        assert err.hint
        return
    event("accepted")
    assert not certain, f"accepted although {sorted(certain)} should have been rejected: {args}"
    body = build_payload(v)
    assert_gateway_accepts(body)
    assert_faithful(args, v, body)


@st.composite
def valid_arguments(draw: st.DrawFn) -> dict[str, Any]:
    """Only requests the contract allows, built mode by mode."""
    model = draw(st.sampled_from(MODELS))
    mode = draw(st.sampled_from(["i2v", "r2v"] if model == "wan2.6-flash" else ["t2v", "i2v", "r2v"]))
    args: dict[str, Any] = {}
    if model == "wan2.6-flash" or draw(st.booleans()):  # wan2.6 is the default: name it only sometimes
        args["model"] = model
    if mode == "t2v":
        args["prompt"] = draw(st.text(max_size=80).map(lambda s: "A scene " + s))
    elif draw(st.booleans()):
        args["prompt"] = draw(texts)
    if mode == "i2v":
        args["image"] = draw(st.sampled_from(VALID_IMAGES))
    if mode == "r2v":
        args["reference_videos"] = draw(st.lists(st.sampled_from(VALID_VIDEOS), min_size=1, max_size=3, unique=True))
    optional: dict[str, st.SearchStrategy[Any]] = {
        "resolution": st.sampled_from(RESOLUTIONS),
        "duration": st.sampled_from(DURATIONS),
        "watermark": st.booleans(),
        "audio": st.booleans() if model == "wan2.6-flash" else st.just(True),
    }
    if model == "wan2.6":
        optional |= {
            "negative_prompt": st.text(max_size=40),
            "seed": st.integers(0, MAX_SEED),
            "prompt_extend": st.booleans(),
        }
        if mode != "i2v":
            optional |= {
                "aspect_ratio": st.sampled_from(ASPECT_RATIOS),
                "shot_type": st.sampled_from(SHOT_TYPES),
            }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            args[name] = draw(st.one_of(st.none(), strategy)) if draw(st.booleans()) else draw(strategy)
    return args


@PROPERTY_SETTINGS
@given(valid_arguments())
def test_valid_requests_are_never_rejected(args: dict[str, Any]) -> None:
    v = parse_video_request(args)
    body = build_payload(v)
    assert_gateway_accepts(body)
    assert_faithful(args, v, body)
    if v.image is not None:
        assert (v.image.kind is SourceKind.DATA) is args["image"].startswith("data:")
        assert (v.image.kind is SourceKind.URL) is args["image"].startswith("http")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=2),
    max_leaves=6,
)
locations = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda scheme, rest: scheme + rest,
        st.sampled_from(["http://", "https://", "data:", "file:"]),
        st.text(max_size=40),
    ),
    st.builds(lambda b: "data:image/png;base64," + b, st.from_regex(r"[A-Za-z0-9+/=_%-]{0,40}", fullmatch=True)),
)


@PROPERTY_SETTINGS
@given(
    st.dictionaries(st.sampled_from(ARGUMENTS + EXTRA_KEYS), json_values, max_size=6),
    st.one_of(st.none(), locations),
    st.one_of(st.none(), st.lists(locations, max_size=4)),
)
@example(args={}, image=None, refs=["~0"])  # found by hypothesis: "~user" of an unknown user raised
@example(args={}, image="~nosuchuser/cat.png", refs=None)
def test_arbitrary_json_never_crashes(args: dict[str, Any], image: str | None, refs: list[str] | None) -> None:
    """Whatever JSON arrives (any type in any argument, any string as a location), the outcome is a
    sendable request or a WanError naming an argument; never another exception."""
    if image is not None:
        args["image"] = image
    if refs is not None:
        args["reference_videos"] = refs
    try:
        v = parse_video_request(args)
    except WanError as err:
        assert err.code is ErrorCode.INVALID_REQUEST
        assert err.field and err.field in set(ARGUMENTS) | set(args)
        assert err.field in str(err)
        return
    assert_gateway_accepts(build_payload(v))
