"""Every message and hint ``generate_video``'s checks can say, in one table.

Code refers to entries by key and fills the ``{}`` slots, so the wording stays consistent
and a reviewer reads everything an agent may be told in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = ["TEXT", "t"]

TEXT: Final[Mapping[str, str]] = {
    # generic value problems
    "not_allowed": "{value} is not a supported {noun}",
    "case": "values are case-sensitive: use {fixed}",
    "pick": "pick one of the allowed values",
    "wrong_type": "expected {expected}, got {kind} {value}",
    "too_long": "is {length} characters long; the limit is {limit}",
    "shorten": "shorten it to at most {limit} characters",
    "range": "{value} is outside 0..{limit}",
    "seed_fix": "use an integer from 0 to {limit}, or omit seed for a random one",
    # per-type fixes
    "fix_array": 'send a JSON array of strings, e.g. ["https://example.com/ref.mp4"]',
    # enum specifics
    "480p": "480p is not supported on wan2.6; use 720p (the cheaper tier)",
    "model_fix": (
        "use wan2.6 (t2v/i2v/r2v, always with audio) or wan2.6-flash (i2v/r2v, cheaper, optional audio); "
        "the mode follows from image/reference_videos"
    ),
    # image / reference sources
    "empty_image": "the value is empty",
    "empty_image_fix": ("omit image for text-to-video, or give an http(s) URL, a local file path or a data:image URL"),
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
    "credentials": ("the URL contains credentials (user:password@); they would be sent to the gateway in clear"),
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
    "continue_image": "continue_from already gives the first frame (the last frame of that task); image cannot "
    "be combined with it",
    "continue_image_fix": "drop image to continue the shot, or drop continue_from to start from your image",
    "continue_refs": "continue_from (image-to-video from a task's last frame) cannot be combined with reference_videos",
    "continue_refs_fix": "drop reference_videos, or drop continue_from for reference-to-video",
    "continue_aspect": "aspect_ratio is not supported with continue_from: the shot keeps the previous one's "
    "orientation",
    "continue_aspect_fix": "drop aspect_ratio",
    "continue_id": "{value} is not a task id",
    "continue_id_fix": "pass the task_id of a completed video (from generate_video or list_tasks)",
    "shot_times": "{problem}",
    "shot_times_fix": "write the shots as 'Shot 1 [0-3 s]: ... Shot 2 [3-{duration} s]: ...' within "
    "the {duration} s duration, each starting where the previous ended",
    "shot_times_longer": "; or set duration to {longer}",
    "audio_off": "wan2.6 always generates audio, so audio=false cannot be honoured",
    "audio_off_fix": "use model wan2.6-flash for a silent, cheaper video, or drop audio",
}


def t(key: str, **slots: object) -> str:
    return TEXT[key].format(**slots)
