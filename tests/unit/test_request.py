"""The generate_video input: every rule, the wire bodies, the schema an agent reads.

Payloads are compared with the documented bodies of the gateway contract (§2.4, §3).
Defaults we send explicitly even when the agent omits them (so a change of gateway
default can never change what is generated or billed):

* ``resolution`` and ``duration`` always;
* ``aspect_ratio: "16:9"`` for wan2.6 t2v/r2v (never for i2v, never for flash);
* ``audio: true`` for wan2.6-flash.

So the documented wan2.6 r2v body is the only one that differs from ours: we add
``"aspect_ratio": "16:9"``.
"""

from __future__ import annotations

import ast
import base64
import json
from pathlib import Path
from typing import Any

import pytest

import wan_mcp.core.request as request_module
from wan_mcp.core.request import (
    FLASH_UNSUPPORTED_FIELDS,
    MAX_SEED,
    MediaSource,
    SourceKind,
    ValidatedRequest,
    VideoRequest,
    parse_video_request,
    request_fingerprint,
    video_request_schema,
)
from wan_mcp.errors import ErrorCode, WanError

PNG_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
PNG_B64 = base64.b64encode(PNG_BYTES).decode()
PNG_DATA_URL = f"data:image/png;base64,{PNG_B64}"
ALL_FIELDS = list(VideoRequest.model_fields)


def rejected(args: dict[str, Any]) -> WanError:
    with pytest.raises(WanError) as info:
        parse_video_request(args)
    err = info.value
    assert err.code is ErrorCode.INVALID_REQUEST
    return err


def payload_of(args: dict[str, Any]) -> dict[str, Any]:
    """Parse and build the body, standing in for the server's uploads with fixed URLs."""
    v = parse_video_request(args)
    image_url = None
    if v.image is not None:
        image_url = v.image.value if v.image.kind is SourceKind.URL else "https://files.example.com/img.png"
    refs = [
        s.value if s.kind is SourceKind.URL else f"https://files.example.com/ref{i}.mp4"
        for i, s in enumerate(v.references)
    ]
    return v.to_payload(image_url=image_url, reference_urls=refs)


# --- documented bodies ----------------------------------------------------------------------

# (args an agent would send, the documented body (contract §2.4 / §3), what we add explicitly)
DOCUMENTED = [
    pytest.param(
        {"prompt": "A cute cat running on grass, sunny day", "aspect_ratio": "16:9", "resolution": "1080p",
         "duration": 5},
        {"model": "wan2.6", "prompt": "A cute cat running on grass, sunny day", "aspect_ratio": "16:9",
         "resolution": "1080p", "duration": 5},
        {},
        id="2.4-t2v",
    ),
    pytest.param(
        {"prompt": "The cat starts running playfully", "image": "https://example.com/cat.jpg",
         "resolution": "1080p", "duration": 10},
        {"model": "wan2.6", "prompt": "The cat starts running playfully",
         "image_urls": ["https://example.com/cat.jpg"], "resolution": "1080p", "duration": 10},
        {},
        id="2.4-i2v",
    ),
    pytest.param(
        {"prompt": "The character waves and smiles at the camera",
         "reference_videos": ["https://cdn.example.com/ref-character.mp4"], "shot_type": "single",
         "resolution": "1080p", "duration": 5},
        {"model": "wan2.6", "prompt": "The character waves and smiles at the camera",
         "metadata": {"reference_urls": ["https://cdn.example.com/ref-character.mp4"]}, "shot_type": "single",
         "resolution": "1080p", "duration": 5},
        {"aspect_ratio": "16:9"},
        id="2.4-r2v",
    ),
    pytest.param(
        {"prompt": "A golden retriever runs through a field of sunflowers",
         "negative_prompt": "blurry, low quality, deformed", "aspect_ratio": "16:9", "resolution": "1080p",
         "duration": 10, "seed": 12345, "prompt_extend": True, "shot_type": "multi", "watermark": False},
        {"model": "wan2.6", "prompt": "A golden retriever runs through a field of sunflowers",
         "negative_prompt": "blurry, low quality, deformed", "aspect_ratio": "16:9", "resolution": "1080p",
         "duration": 10, "seed": 12345, "prompt_extend": True, "shot_type": "multi", "watermark": False},
        {},
        id="2.4-t2v-full",
    ),
    pytest.param(
        {"model": "wan2.6-flash", "image": "https://example.com/photo.jpg",
         "prompt": "The person comes alive and smiles", "resolution": "1080p", "duration": 5, "audio": True},
        {"model": "wan2.6-flash", "image_urls": ["https://example.com/photo.jpg"],
         "prompt": "The person comes alive and smiles", "resolution": "1080p", "duration": 5, "audio": True},
        {},
        id="3-flash-i2v-audio",
    ),
    pytest.param(
        {"model": "wan2.6-flash", "image": "https://example.com/photo.jpg", "resolution": "720p",
         "duration": 5, "audio": False},
        {"model": "wan2.6-flash", "image_urls": ["https://example.com/photo.jpg"], "resolution": "720p",
         "duration": 5, "audio": False},
        {},
        id="3-flash-i2v-silent",
    ),
    pytest.param(
        {"model": "wan2.6-flash", "prompt": "The character is watching a movie on the couch",
         "reference_videos": ["https://cdn.example.com/ref-character.mp4"], "resolution": "1080p",
         "duration": 5, "audio": True},
        {"model": "wan2.6-flash", "prompt": "The character is watching a movie on the couch",
         "metadata": {"reference_urls": ["https://cdn.example.com/ref-character.mp4"]}, "resolution": "1080p",
         "duration": 5, "audio": True},
        {},
        id="3-flash-r2v",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("args", "documented", "explicit_defaults"), DOCUMENTED)
def test_documented_bodies_round_trip(
    args: dict[str, Any], documented: dict[str, Any], explicit_defaults: dict[str, Any]
) -> None:
    assert payload_of(args) == {**documented, **explicit_defaults}


@pytest.mark.parametrize(("args", "documented", "explicit_defaults"), DOCUMENTED)
def test_documented_bodies_from_minimal_args(
    args: dict[str, Any], documented: dict[str, Any], explicit_defaults: dict[str, Any]
) -> None:
    """Leaving out every argument that equals its default yields the same body."""
    defaults = {"model": "wan2.6", "aspect_ratio": "16:9", "resolution": "1080p", "duration": 5}
    if args.get("model") == "wan2.6-flash":
        defaults["audio"] = True
    minimal = {k: v for k, v in args.items() if defaults.get(k, object()) != v}
    assert payload_of(minimal) == {**documented, **explicit_defaults}


def test_payload_never_sends_unset_optionals() -> None:
    body = payload_of({"prompt": "a cat"})
    assert body == {"model": "wan2.6", "prompt": "a cat", "aspect_ratio": "16:9", "resolution": "1080p",
                    "duration": 5}  # fmt: skip


def test_flash_audio_is_always_explicit() -> None:
    body = payload_of({"model": "wan2.6-flash", "image": "https://example.com/a.png"})
    assert body["audio"] is True
    assert "aspect_ratio" not in body


def test_wan26_audio_true_is_sent() -> None:
    assert payload_of({"prompt": "a cat", "audio": True})["audio"] is True


def test_i2v_payload_has_no_aspect_ratio_and_r2v_keeps_the_chosen_one() -> None:
    assert "aspect_ratio" not in payload_of({"image": "https://example.com/a.png"})
    body = payload_of({"reference_videos": ["https://example.com/r.mp4"], "aspect_ratio": "9:16"})
    assert body["aspect_ratio"] == "9:16"
    assert body["metadata"] == {"reference_urls": ["https://example.com/r.mp4"]}


def test_r2v_keeps_reference_order() -> None:
    urls = ["https://example.com/b.mp4", "https://example.com/a.mp4", "https://example.com/c.mp4"]
    v = parse_video_request({"reference_videos": urls, "prompt": "character1 greets character2"})
    assert v.mode == "r2v"
    assert [s.value for s in v.references] == urls
    assert v.to_payload(reference_urls=urls)["metadata"]["reference_urls"] == urls


@pytest.mark.parametrize(
    ("args", "image_url", "reference_urls"),
    [
        ({"prompt": "a cat"}, "https://example.com/a.png", ()),
        ({"prompt": "a cat"}, None, ["https://example.com/r.mp4"]),
        ({"image": "a.png"}, None, ()),
        ({"image": "a.png"}, "/tmp/a.png", ()),
        ({"image": "a.png"}, PNG_DATA_URL, ()),
        ({"image": "a.png"}, "https://example.com/a.png", ["https://example.com/r.mp4"]),
        ({"reference_videos": ["a.mp4", "b.mp4"]}, None, ["https://example.com/a.mp4"]),
        ({"reference_videos": ["a.mp4"]}, None, ["file:///tmp/a.mp4"]),
        ({"reference_videos": ["a.mp4"]}, None, "https://example.com/a.mp4"),
        ({"reference_videos": ["a.mp4"]}, "https://example.com/a.png", ["https://example.com/a.mp4"]),
    ],
)
def test_to_payload_refuses_urls_that_do_not_fit(
    args: dict[str, Any], image_url: str | None, reference_urls: Any
) -> None:
    v = parse_video_request(args)
    with pytest.raises(ValueError, match=r"image_url|reference_urls"):
        v.to_payload(image_url=image_url, reference_urls=reference_urls)


# --- rejections -----------------------------------------------------------------------------

LONG_B64 = "iVBORw0KGgo" + "A" * 300
# (args, field named, fragment of the rendered text: the hint or the allowed values)
REJECTIONS = [
    # types and enums
    ({"prompt": "a", "duration": 7}, "duration", "Allowed: 5, 10, 15"),
    ({"prompt": "a", "duration": "5"}, "duration", "without quotes"),
    ({"prompt": "a", "duration": 5.5}, "duration", "Allowed: 5, 10, 15"),
    ({"prompt": "a", "duration": True}, "duration", "without quotes"),
    ({"prompt": "a", "duration": 0}, "duration", "pick one of the allowed values"),
    ({"prompt": "a", "resolution": "480p"}, "resolution", "use 720p"),
    ({"prompt": "a", "resolution": "1080P"}, "resolution", "case-sensitive: use 1080p"),
    ({"prompt": "a", "resolution": 1080}, "resolution", "Allowed: 720p, 1080p"),
    ({"prompt": "a", "aspect_ratio": "21:9"}, "aspect_ratio", "Allowed: 16:9, 9:16, 1:1, 4:3, 3:4"),
    ({"prompt": "a", "aspect_ratio": "1280*720"}, "aspect_ratio", "pick one of the allowed values"),
    ({"prompt": "a", "model": "wan2.5"}, "model", "Allowed: wan2.6, wan2.6-flash"),
    ({"prompt": "a", "model": "wan2.6-t2v"}, "model", "the mode follows from image/reference_videos"),
    ({"prompt": "a", "shot_type": "multiple"}, "shot_type", "Allowed: single, multi"),
    ({"prompt": "a", "seed": -1}, "seed", "0 to 2147483647"),
    ({"prompt": "a", "seed": MAX_SEED + 1}, "seed", "0 to 2147483647"),
    ({"prompt": "a", "seed": "42"}, "seed", "without quotes"),
    ({"prompt": "a", "seed": 4.2}, "seed", "without quotes"),
    ({"prompt": "a", "seed": True}, "seed", "without quotes"),
    ({"prompt": "a", "watermark": "false"}, "watermark", "true or false without quotes"),
    ({"prompt": "a", "prompt_extend": 1}, "prompt_extend", "true or false without quotes"),
    ({"model": "wan2.6-flash", "image": "a.png", "audio": "false"}, "audio", "true or false without quotes"),
    ({"prompt": 42}, "prompt", "send a string"),
    ({"prompt": "x" * 1501}, "prompt", "at most 1500 characters"),
    ({"prompt": "a", "negative_prompt": "x" * 501}, "negative_prompt", "at most 500 characters"),
    ({"prompt": "a", "negative_prompt": ["blur"]}, "negative_prompt", "send a string"),
    # unknown arguments
    ({"prompt": "a", "image_url": "https://example.com/a.png"}, "image_url", "did you mean 'image'"),
    ({"prompt": "a", "reference_urls": ["https://x.com/a.mp4"]}, "reference_urls", "'reference_videos'"),
    ({"prompt": "a", "durations": 5}, "durations", "did you mean 'duration'"),
    ({"prompt": "a", "size": "1280*720"}, "size", "did you mean 'aspect_ratio'"),
    ({"prompt": "a", "zzz": 1}, "zzz", "Allowed: prompt, model, image, continue_from, reference_videos"),
    # routing
    ({}, "prompt", "describe the video in prompt"),
    ({"prompt": "   "}, "prompt", "describe the video in prompt"),
    ({"prompt": "", "duration": 10}, "prompt", "describe the video in prompt"),
    ({"image": "a.png", "reference_videos": ["r.mp4"]}, "image", "not both"),
    ({"model": "wan2.6-flash", "prompt": "a cat"}, "model", "or use model wan2.6 for text-to-video"),
    ({"model": "wan2.6-flash"}, "model", "give image or reference_videos"),
    ({"prompt": "a", "audio": False}, "audio", "use model wan2.6-flash for a silent, cheaper video"),
    ({"image": "a.png", "aspect_ratio": "9:16"}, "aspect_ratio", "crop the image to the wanted orientation"),
    ({"image": "a.png", "shot_type": "multi"}, "shot_type", "drop shot_type"),
    # image sources
    ({"image": ""}, "image", "omit image for text-to-video"),
    ({"image": "   "}, "image", "omit image for text-to-video"),
    ({"image": 12}, "image", "send a string"),
    ({"image": ["https://example.com/a.png"]}, "image", "send a string"),
    ({"image": "ftp://example.com/a.png"}, "image", "Allowed: http, https, local path"),
    ({"image": "file:///tmp/a.png"}, "image", "without file://"),
    ({"image": "javascript:alert(1)"}, "image", "Allowed: http, https, local path"),
    ({"image": "s3://bucket/a.png"}, "image", "'s3:' is not supported"),
    ({"image": "https://user:secret@example.com/a.png"}, "image", "remove the user:password@ part"),
    ({"image": "https:///a.png"}, "image", "no host"),
    ({"image": "http://example.com:99999/a.png"}, "image", "invalid port"),
    ({"image": "http://[::1"}, "image", "cannot be parsed"),
    ({"image": "https://example.com/my cat.png"}, "image", "percent-encode"),
    ({"image": "a\x00.png"}, "image", "NUL"),
    ({"image": "https://example.com/" + "a" * 5000}, "image", "at most 4096"),
    ({"image": LONG_B64}, "image", "pass it as a data:image/png;base64,... URL or call upload_image first"),
    ({"image": "QUFB" * 100}, "image", "call upload_image first"),
    ({"image": "/9j/" + "QUFB" * 100}, "image", "call upload_image first"),
    ({"image": "clip.mp4"}, "image", "put videos in reference_videos"),
    ({"image": "https://example.com/v/clip.MOV?x=1"}, "image", "put videos in reference_videos"),
    ({"image": "data:image/png;base64,@@@@"}, "image", 'character "@" at position 1'),
    ({"image": "data:image/png;base64,QUFBQ"}, "image", "cannot be a whole number of bytes"),
    ({"image": "data:image/png;base64,QU=FB"}, "image", "is not base64"),
    ({"image": "data:image/png;base64,"}, "image", "no image bytes"),
    ({"image": "data:image/png,rawbytes"}, "image", "not base64-encoded"),
    ({"image": "data:text/plain;base64,aGVsbG8="}, "image", "'text/plain'"),
    ({"image": "data:;base64,aGVsbG8="}, "image", "not an image/* type"),
    ({"image": "data:image/;base64,aGVsbG8="}, "image", "not an image/* type"),
    ({"image": "data:image/png;base64"}, "image", "not base64-encoded"),
    # reference videos
    ({"reference_videos": []}, "reference_videos", "give 1 to 3 videos"),
    ({"reference_videos": ["a.mp4", "b.mp4", "c.mp4", "d.mp4"]}, "reference_videos", "has 4 items"),
    ({"reference_videos": "a.mp4"}, "reference_videos", "JSON array of strings"),
    ({"reference_videos": [1]}, "reference_videos", "item 1: expected a string"),
    ({"reference_videos": ["a.mp4", ""]}, "reference_videos", "item 2 is empty"),
    ({"reference_videos": ["a.mp4", "a.mp4"]}, "reference_videos", "list each reference video once"),
    ({"reference_videos": ["clips/a.mp4", "./clips/../clips/a.mp4"]}, "reference_videos", "repeats item 1"),
    ({"reference_videos": [PNG_DATA_URL.replace("image/png", "video/mp4")]}, "reference_videos",
     "save the video to a file first"),
    ({"reference_videos": ["ftp://example.com/a.mp4"]}, "reference_videos", "item 1: the URL scheme 'ftp:'"),
    ({"reference_videos": ["https://u:p@example.com/a.mp4"]}, "reference_videos", "credentials"),
    ({"reference_videos": ["face.jpg"]}, "reference_videos", "pass a still image as image"),
    ({"reference_videos": ["QUFB" * 100]}, "reference_videos", "save the video to a file"),
    # flash does not list these
    *[
        ({"model": "wan2.6-flash", "image": "a.png", name: value}, name, f"drop {name}, or use model wan2.6")
        for name, value in [("aspect_ratio", "16:9"), ("negative_prompt", "blur"), ("seed", 1),
                            ("prompt_extend", False), ("shot_type", "single")]
    ],
]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "field", "fragment"), REJECTIONS, ids=[f"{r[1]}-{i}" for i, r in enumerate(REJECTIONS)]
)
def test_rejection_names_field_and_fix(args: dict[str, Any], field: str, fragment: str) -> None:
    err = rejected(args)
    text = str(err)
    assert err.field == field, text
    assert f"field '{field}'" in text
    assert fragment.lower() in text.lower(), text
    assert err.hint, "every rejection carries a fix"
    assert text == err.render()


def test_flash_unsupported_list_matches_contract() -> None:
    assert set(FLASH_UNSUPPORTED_FIELDS) == {
        "aspect_ratio",
        "negative_prompt",
        "seed",
        "prompt_extend",
        "shot_type",
    }


def test_message_matches_documented_example() -> None:
    assert str(rejected({"prompt": "a cat", "duration": 7})) == (
        "[invalid_request] field 'duration': 7 is not a supported duration. Allowed: 5, 10, 15. "
        "Next: pick one of the allowed values."
    )


def test_credentials_are_not_echoed() -> None:
    text = str(rejected({"image": "https://alice:hunter2secret@example.com/a.png"}))
    assert "hunter2secret" not in text


def test_several_wrong_fields_are_all_mentioned_first_in_argument_order() -> None:
    err = rejected({"audio": False, "duration": 7, "seed": -3, "prompt": "a cat", "resolution": "480p"})
    text = str(err)
    assert err.field == "resolution"  # argument order of the schema: resolution < duration < seed < audio
    assert err.allowed == ["720p", "1080p"]
    for name in ("duration", "seed", "audio"):
        assert f"field '{name}'" in text
    assert "fix all 4 fields in one call" in text


def test_unknown_argument_leads_and_routing_errors_ride_along() -> None:
    err = rejected({"image_url": "https://example.com/a.png", "aspect_ratio": "1:1"})
    assert err.field == "image_url"
    assert err.allowed == ALL_FIELDS
    assert "field 'prompt'" in str(err)  # without image, it is text-to-video and needs a prompt


def test_field_error_beats_routing_error_for_the_same_field() -> None:
    err = rejected({"model": "wan2.6-flash", "image": "a.png", "seed": "7"})
    assert err.field == "seed"
    assert "without quotes" in str(err)
    assert str(err).count("field 'seed'") == 1


# --- accepted spellings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "key", "sent"),
    [
        ({"prompt": "a", "duration": 10.0}, "duration", 10),
        ({"prompt": "a", "seed": 7.0}, "seed", 7),
        ({"prompt": "a", "seed": 0}, "seed", 0),
        ({"prompt": "a", "seed": MAX_SEED}, "seed", MAX_SEED),
        ({"prompt": "  a cat  "}, "prompt", "a cat"),
        ({"prompt": "x" * 1500}, "prompt", "x" * 1500),
        ({"prompt": "a", "negative_prompt": "n" * 500}, "negative_prompt", "n" * 500),
        ({"prompt": "a", "negative_prompt": "  "}, "negative_prompt", None),
        ({"prompt": "a", "seed": None, "audio": None, "image": None, "model": None}, "model", "wan2.6"),
        ({"prompt": "a", "duration": None}, "duration", 5),
        ({"prompt": "a", "watermark": True}, "watermark", True),
        ({"prompt": "a", "prompt_extend": False}, "prompt_extend", False),
        ({"image": "a.png", "prompt": ""}, "prompt", None),
    ],
)
def test_accepted_spellings(args: dict[str, Any], key: str, sent: Any) -> None:
    body = payload_of(args)
    assert body.get(key) == sent
    if isinstance(sent, int) and not isinstance(sent, bool):
        assert type(body[key]) is int


# --- sources ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("https://example.com/cat.jpg", SourceKind.URL),
        ("HTTP://Example.com:8080/a/b.png?sig=1#x", SourceKind.URL),
        ("http://[::1]/a.png", SourceKind.URL),
        ("/home/me/pictures/cat.png", SourceKind.PATH),
        ("~/cat.png", SourceKind.PATH),
        ("cat.png", SourceKind.PATH),
        ("./pics/cat.webp", SourceKind.PATH),
        ("../cat", SourceKind.PATH),
        ("C:\\Users\\me\\cat.png", SourceKind.PATH),
        ("C:/Users/me/cat.png", SourceKind.PATH),
        ("movie%2Emp4", SourceKind.PATH),  # paths are not percent-decoded: this is no .mp4
        ("  https://example.com/a.png\n", SourceKind.URL),  # surrounding whitespace is dropped
        ("/" + "a" * 300, SourceKind.PATH),  # long path of base64-ish characters: still a path
        ("./" + "QUFB" * 100, SourceKind.PATH),  # "./" marks it as a path
        ("QUFB" * 50, SourceKind.PATH),  # 200 characters: too short to be pasted file content
        (PNG_DATA_URL, SourceKind.DATA),
    ],
)
def test_image_classification(value: str, kind: SourceKind) -> None:
    v = parse_video_request({"image": value})
    assert v.mode == "i2v"
    assert v.image is not None
    assert v.image.kind is kind
    assert v.image.value == value.strip()
    assert (v.image.data is not None) is (kind is SourceKind.DATA)


@pytest.mark.parametrize(
    "data_url",
    [
        PNG_DATA_URL,
        f"DATA:IMAGE/PNG;BASE64,{PNG_B64}",
        f"data:image/png;name=cat.png;base64,{PNG_B64}",
        f"data:image/png;base64,{PNG_B64[:40]}\n{PNG_B64[40:]}",  # wrapped lines
        f"data:image/png;base64,{PNG_B64.rstrip('=')}",  # missing padding
        "data:image/png;base64," + base64.urlsafe_b64encode(PNG_BYTES).decode(),  # URL-safe alphabet
        f"data:image/png;base64,{PNG_B64.replace('+', '%2B').replace('/', '%2F')}",  # percent-encoded
    ],
)
def test_data_url_decoding(data_url: str) -> None:
    v = parse_video_request({"image": data_url, "model": "wan2.6-flash"})
    assert v.image == MediaSource(SourceKind.DATA, data_url, PNG_BYTES, "image/png")


def test_data_url_media_type_is_kept() -> None:
    v = parse_video_request({"image": "data:image/jpeg;base64,/9j/4AAQSkZJRg=="})
    assert v.image is not None
    assert v.image.media_type == "image/jpeg"
    assert v.image.data == base64.b64decode("/9j/4AAQSkZJRg==")


def test_data_url_repr_stays_short() -> None:
    big = "data:image/png;base64," + base64.b64encode(bytes(30_000)).decode()
    v = parse_video_request({"image": big})
    assert len(repr(v.image)) < 200
    assert "30000 bytes" in repr(v.image)


def test_data_url_too_big_is_rejected_without_decoding() -> None:
    huge = "data:image/png;base64," + "A" * (28 * 1024 * 1024)
    err = rejected({"image": huge})
    assert "save the image to a file" in str(err)
    assert len(str(err)) < 500


@pytest.mark.parametrize(
    "refs",
    [
        ["https://cdn.example.com/ref-character.mp4"],
        ["/videos/a.mp4", "~/b.mov", "c"],
        ["https://example.com/a.mp4", "https://example.com/b.mp4", "https://example.com/a.mp4?v=2"],
    ],
)
def test_reference_classification(refs: list[str]) -> None:
    v = parse_video_request({"reference_videos": refs})
    assert v.mode == "r2v"
    assert [s.value for s in v.references] == refs
    assert all(s.kind is (SourceKind.URL if r.startswith("https://") else SourceKind.PATH)
               for s, r in zip(v.references, refs, strict=True))  # fmt: skip


# --- the model itself ------------------------------------------------------------------------------


def test_model_alone_enforces_routing_and_derives_mode() -> None:
    assert VideoRequest(prompt="a").mode == "t2v"
    assert VideoRequest.model_validate({"image": "a.png"}).mode == "i2v"
    assert VideoRequest.model_validate({"reference_videos": ["a.mp4"]}).mode == "r2v"
    with pytest.raises(ValueError, match="cannot be combined"):
        VideoRequest.model_validate({"image": "a.png", "reference_videos": ["a.mp4"]})


def test_validated_request_is_hashable_and_frozen() -> None:
    v = parse_video_request({"reference_videos": ["a.mp4"], "prompt": "character1 waves"})
    assert isinstance(v, ValidatedRequest)
    hash(v)
    with pytest.raises(ValueError, match="frozen"):
        v.request.duration = 10  # type: ignore[misc]


# --- fingerprint ----------------------------------------------------------------------------------


def test_fingerprint_ignores_spelling_but_not_content() -> None:
    base = request_fingerprint(parse_video_request({"prompt": "a cat"}))
    same = [
        {
            "prompt": " a cat ",
            "aspect_ratio": "16:9",
            "resolution": "1080p",
            "duration": 5.0,
            "model": "wan2.6",
        },
        {"prompt": "a cat", "seed": None, "negative_prompt": ""},
        # The request as it will be sent: the gateway's defaults spelled out change nothing,
        # nor do inner whitespace and a trailing full stop (issue 10: both bypassed the guard).
        {"prompt": "a cat", "watermark": False, "prompt_extend": True, "shot_type": "single", "audio": True},
        {"prompt": "a  cat."},
        {"prompt": "a\tcat !"},
        {"duration": 5, "prompt": "a cat", "resolution": "1080p"},
    ]
    for args in same:
        assert request_fingerprint(parse_video_request(args)) == base
    different = [
        {"prompt": "a dog"},
        {"prompt": "a cat", "duration": 10},
        {"prompt": "a cat", "aspect_ratio": "1:1"},
        {"prompt": "a cat", "seed": 1},
        {"prompt": "a cat", "watermark": True},
        {"prompt": "a cat", "prompt_extend": False},
        {"prompt": "a cat", "shot_type": "multi"},
        {"prompt": "a cat", "resolution": "720p"},
        {"prompt": "a cat", "image": "a.png"},
        {"prompt": "a cat. a dog"},
    ]
    prints = {request_fingerprint(parse_video_request(a)) for a in different}
    assert base not in prints
    assert len(prints) == len(different)
    assert len(base) == 64
    assert int(base, 16) >= 0


def test_fingerprint_of_inline_data_uses_bytes_and_paths_resolve() -> None:
    a = parse_video_request({"image": f"data:image/png;base64,{PNG_B64}"})
    b = parse_video_request({"image": f"data:image/png;base64,{PNG_B64.rstrip('=')}"})
    assert request_fingerprint(a) == request_fingerprint(b)
    p1 = parse_video_request({"image": "pics/cat.png"})
    p2 = parse_video_request({"image": "./pics/../pics/cat.png"})
    assert request_fingerprint(p1) == request_fingerprint(p2)


# --- the schema ------------------------------------------------------------------------------------


def _walk(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found.extend(_walk(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_walk(value))
    return found


def test_schema_is_compact() -> None:
    schema = video_request_schema()
    text = json.dumps(schema, separators=(",", ":"))
    # The server adds wait_seconds (~150 bytes); the whole inputSchema must stay <= 2,400.
    assert len(text.encode()) <= 2250, len(text)
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert list(schema["properties"]) == ALL_FIELDS
    assert "required" not in schema
    for node in _walk(schema):
        assert "title" not in node
        assert "$defs" not in node and "$ref" not in node and "anyOf" not in node
        assert node.get("default", "x") is not None


def test_schema_states_the_rules() -> None:
    props = video_request_schema()["properties"]
    assert "i2v only" in props["image"]["description"]
    assert "r2v only" in props["reference_videos"]["description"]
    assert "Not with reference_videos" in props["image"]["description"]
    assert "not with image" in props["aspect_ratio"]["description"]
    assert "t2v/r2v only" in props["aspect_ratio"]["description"]
    assert "t2v/r2v only" in props["shot_type"]["description"]
    assert "wan2.6-flash: i2v/r2v only" in props["model"]["description"]
    assert "Required for t2v" in props["prompt"]["description"]
    assert "Not with image" in props["reference_videos"]["description"]
    for name in FLASH_UNSUPPORTED_FIELDS:
        assert "not on flash" in props[name]["description"].lower()
    assert "false rejected" in props["audio"]["description"]
    assert props["prompt"]["maxLength"] == 1500
    assert props["negative_prompt"]["maxLength"] == 500
    assert (props["seed"]["minimum"], props["seed"]["maximum"]) == (0, MAX_SEED)
    assert (props["reference_videos"]["minItems"], props["reference_videos"]["maxItems"]) == (1, 3)
    assert props["duration"] == {**props["duration"], "type": "integer", "enum": [5, 10, 15], "default": 5}
    assert props["resolution"]["default"] == "1080p"
    assert props["model"]["default"] == "wan2.6"
    assert props["aspect_ratio"]["default"] == "16:9"


# For each enum field: args in which every enum value is legal (t2v on wan2.6 unless noted).
ENUM_CONTEXT: dict[str, dict[str, Any]] = {
    "model": {"image": "https://example.com/a.png"},
    "aspect_ratio": {"prompt": "a"},
    "resolution": {"prompt": "a"},
    "duration": {"prompt": "a"},
    "shot_type": {"prompt": "a"},
}


@pytest.mark.parametrize("name", list(ENUM_CONTEXT))
def test_schema_enums_match_validation(name: str) -> None:
    prop = video_request_schema()["properties"][name]
    for value in prop["enum"]:
        assert payload_of({**ENUM_CONTEXT[name], name: value})[name] == value
    outside = "other" if prop["type"] == "string" else max(prop["enum"]) + 1
    assert rejected({**ENUM_CONTEXT[name], name: outside}).allowed == [str(v) for v in prop["enum"]]
    if "default" in prop:
        assert payload_of(ENUM_CONTEXT[name])[name] == prop["default"]
    else:  # no documented default: left to the gateway, so not sent
        assert name not in payload_of(ENUM_CONTEXT[name])


@pytest.mark.parametrize("name", ["prompt_extend", "audio", "watermark"])
def test_schema_booleans_match_validation(name: str) -> None:
    assert video_request_schema()["properties"][name]["type"] == "boolean"
    args = {"model": "wan2.6-flash", "image": "a.png"} if name != "prompt_extend" else {"prompt": "a"}
    for value in (True, False):
        assert payload_of({**args, name: value})[name] is value
    for bad in ("true", 1, 0, "yes"):
        assert rejected({**args, name: bad}).field == name


def test_schema_bounds_match_validation() -> None:
    props = video_request_schema()["properties"]
    limit = props["prompt"]["maxLength"]
    payload_of({"prompt": "p" * limit})
    assert rejected({"prompt": "p" * (limit + 1)}).field == "prompt"
    limit = props["negative_prompt"]["maxLength"]
    payload_of({"prompt": "a", "negative_prompt": "n" * limit})
    assert rejected({"prompt": "a", "negative_prompt": "n" * (limit + 1)}).field == "negative_prompt"
    payload_of({"prompt": "a", "seed": props["seed"]["maximum"]})
    assert rejected({"prompt": "a", "seed": props["seed"]["maximum"] + 1}).field == "seed"
    assert rejected({"prompt": "a", "seed": props["seed"]["minimum"] - 1}).field == "seed"
    refs = [f"v{i}.mp4" for i in range(props["reference_videos"]["maxItems"] + 1)]
    payload_of({"reference_videos": refs[:-1]})
    assert rejected({"reference_videos": refs}).field == "reference_videos"


def test_schema_is_a_fresh_copy() -> None:
    schema = video_request_schema()
    schema["properties"].clear()
    assert video_request_schema()["properties"]


# --- layering -----------------------------------------------------------------------------------


def test_request_package_imports_only_stdlib_pydantic_errors_and_arguments() -> None:
    allowed_third_party = {"pydantic", "pydantic_core"}
    ours = {"wan_mcp.errors", "wan_mcp.core.arguments"}
    for path in Path(request_module.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                inside = name.startswith("wan_mcp.core.request")
                assert inside or name in ours or top in allowed_third_party or top in _stdlib(), (path.name, name)


def _stdlib() -> frozenset[str]:
    import sys

    return frozenset(sys.stdlib_module_names)


# --- films: continue_from and multi-shot timing (issue 14) ------------------------------------------


def test_continue_from_is_image_to_video_from_a_task() -> None:
    v = parse_video_request({"continue_from": "video_01ABC", "prompt": "it lands", "seed": 3, "resolution": "720p"})
    assert v.mode == "i2v" and v.image is None and v.request.continue_from == "video_01ABC"
    assert v.preview_payload()["image_urls"] == ["<upload: last frame of video_01ABC>"]
    assert "aspect_ratio" not in v.preview_payload() and v.preview_payload()["seed"] == 3
    flash = parse_video_request({"continue_from": "video_01ABC", "model": "wan2.6-flash", "audio": False})
    assert flash.mode == "i2v" and not flash.has_audio  # flash needs a first frame: continue_from is one
    other = parse_video_request({"continue_from": "video_01ABD", "prompt": "it lands", "seed": 3, "resolution": "720p"})
    assert request_fingerprint(v) != request_fingerprint(other)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"continue_from": "video_1", "image": "https://x.org/a.png"}, "image"),
        ({"continue_from": "video_1", "reference_videos": ["https://x.org/a.mp4"]}, "reference_videos"),
        ({"continue_from": "video_1", "aspect_ratio": "9:16"}, "aspect_ratio"),
        ({"continue_from": "video_1", "shot_type": "multi"}, "shot_type"),
        ({"continue_from": "no spaces allowed"}, "continue_from"),
        ({"continue_from": 12}, "continue_from"),
        ({"continue": "video_1"}, "continue"),
    ],
)
def test_continue_from_refuses_what_cannot_go_with_it(args: dict[str, Any], field: str) -> None:
    with pytest.raises(WanError) as info:
        parse_video_request(args)
    assert info.value.field == field, info.value.render()
    if field == "continue":
        assert "continue_from" in info.value.render()


@pytest.mark.parametrize(
    ("prompt", "duration", "fragment"),
    [
        ("Shot 1 [0-3 s]: a. Shot 2 [3-7 s]: b.", 5, "run to 7 s but the video lasts 5 s"),
        ("Shot 1 [0-3 s]: a. Shot 2 [4-5 s]: b.", 5, "starts at 4 s but the previous shot ends at 3 s"),
        ("Shot 1 [1-3 s]: a. Shot 2 [3-5 s]: b.", 5, "starts at 1 s"),
        ("Shot 2 [0-3 s]: a. Shot 1 [3-5 s]: b.", 5, "number them 1, 2, 3 in order"),
        ("Shot 1 [0-3 s]: a. Shot 2 [3-3 s]: b.", 5, "ends before it starts"),
    ],
)
def test_multi_shot_times_must_fit_the_duration(prompt: str, duration: int, fragment: str) -> None:
    with pytest.raises(WanError) as info:
        parse_video_request({"prompt": prompt, "duration": duration, "shot_type": "multi"})
    assert info.value.field == "prompt" and fragment in info.value.message
    assert "Shot 1 [0-3 s]" in (info.value.hint or "")


def test_multi_shot_times_that_fit_pass_and_a_longer_duration_is_suggested() -> None:
    parse_video_request({"prompt": "Shot 1 [0-3 s]: a. Shot 2 [3-5 s]: b.", "shot_type": "multi"})
    parse_video_request({"prompt": "shot 1 [0s-6s] a, shot 2 [6 - 10 seconds] b", "duration": 10})
    parse_video_request({"prompt": "a single shot with no times"})
    with pytest.raises(WanError) as info:
        parse_video_request({"prompt": "Shot 1 [0-6 s]: a. Shot 2 [6-12 s]: b.", "duration": 10})
    assert "set duration to 15" in (info.value.hint or "")
