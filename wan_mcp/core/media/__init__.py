"""Media work on untrusted bytes: images made fit for Wan (:mod:`.images`) and result videos
checked, probed and given a poster frame (:mod:`.video`). Everything here is blocking (callers
run it through :func:`wan_mcp.core.offload.run_sync`) except :mod:`.describer`, which asks helper
processes (:mod:`.describe_child`) for probes and posters."""

from wan_mcp.core.media.describer import DescribeHelpers, VideoDescriber
from wan_mcp.core.media.images import PreparedImage, looks_like_image, prepare_image
from wan_mcp.core.media.video import (
    VideoInfo,
    poster_frame,
    probe_video,
    sniff_video,
    video_problem,
)

__all__ = [
    "DescribeHelpers",
    "PreparedImage",
    "VideoDescriber",
    "VideoInfo",
    "looks_like_image",
    "poster_frame",
    "prepare_image",
    "probe_video",
    "sniff_video",
    "video_problem",
]
