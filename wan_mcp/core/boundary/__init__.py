"""The boundary between the server and everything outside it: local paths, URLs, downloads.

Every path or URL a tool argument (or a gateway answer) names passes through here before
anything is read, fetched or written: :mod:`.paths` (read roots, confined opens, output
paths), :mod:`.url_policy` (the SSRF guard) and :mod:`.download` (streamed, capped, atomic).
"""

from wan_mcp.core.boundary.download import DownloadResult, download_to
from wan_mcp.core.boundary.paths import CheckedFile, FileBoundary
from wan_mcp.core.boundary.url_policy import UrlPolicy, display_url

__all__ = ["CheckedFile", "DownloadResult", "FileBoundary", "UrlPolicy", "display_url", "download_to"]
