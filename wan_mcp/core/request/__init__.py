"""The ``generate_video`` input: one pydantic model for the JSON schema *and* the validation.

Split by concern: :mod:`.model` (the fields, the routing rules, the wire body, the schema),
:mod:`.sources` (image and reference video locations, the ONE ``data:`` URL decoder) and
:mod:`.messages` (every sentence an agent may read). Import from here.
"""

from wan_mcp.core.request.model import (
    DEFAULT_ASPECT_RATIO,
    FLASH_UNSUPPORTED_FIELDS,
    MAX_NEGATIVE_PROMPT_CHARS,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    Mode,
    ValidatedRequest,
    VideoRequest,
    parse_video_request,
    request_fingerprint,
    video_request_schema,
)
from wan_mcp.core.request.sources import MAX_REFERENCE_VIDEOS, MediaSource, SourceKind, decode_data_url

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
    "decode_data_url",
    "parse_video_request",
    "request_fingerprint",
    "video_request_schema",
]
