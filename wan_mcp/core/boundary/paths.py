"""The local file boundary: which paths a tool argument may read, and where results are written.

Tool arguments come from a model that may have been prompt-injected, so a path is
hostile until proven otherwise. The rules, in the order they are applied:

* the text itself: no NUL, no overlong names, ``~`` only for the current user, relative
  paths anchored at the user's HOME (hosts start servers with ``cwd=/``);
* the *real* path (symlinks resolved) must sit inside a realpath'd read root, and never
  inside ``/proc``, ``/sys`` or ``/dev``; with ``restrict_dotdirs`` nothing under a
  dot-entry of a read root (``~/.ssh``, ``~/.aws``, ``~/.netrc``) is readable, except through
  the output root, which usually lives under ``~/.local/share``;
* containment is decided before existence, so refusals leak nothing about files outside;
* the open itself walks down from the root with ``O_NOFOLLOW`` on every component and
  compares ``(st_dev, st_ino)`` with what was checked, which defeats a symlink or file swap
  between check and open; ``O_NONBLOCK`` keeps a FIFO swapped in from hanging us.

The URL policy and downloads live beside it (``core/boundary/``); image fixing and video
probing in ``core/media/``.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import stat
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from urllib.parse import unquote, urlsplit

from wan_mcp.errors import ErrorCode, WanError

__all__ = ["CheckedFile", "FileBoundary"]

MAX_PATH_CHARS = 4096
MAX_COMPONENT_BYTES = 255
#: Kernel pseudo-filesystems: reading them leaks the environment (API keys) or never ends.
FORBIDDEN_TREES = (Path("/proc"), Path("/sys"), Path("/dev"))
log = logging.getLogger("wan_mcp.files")
_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,10}")
_MAX_STEM = 80
_READ_CHUNK = 1 << 20

_FIX_HINT = (
    "put the picture (JPEG, PNG, WebP, GIF, BMP or TIFF up to 50 MB; videos MP4, MOV or WebM) into one of "
    "the allowed folders (the first is the inbox) and pass that path, or send it as a data: URL; the "
    "server's owner can add folders with WAN_MCP_ALLOWED_DIRS (wan-mcp no longer reads the whole home "
    "folder by default)"
)
#: UNC (\\host\share, //host/share), the \\?\ and \\.\ namespaces and NT object paths (\??\).
_WINDOWS_SPECIAL = re.compile(r"^(?:[\\/]{2}|\\\?\?\\)")
#: Windows device names, reserved in every folder and with any extension (CON, NUL.txt, COM1...).
_DEVICE_NAME = re.compile(r"(?i)(?:CON|PRN|AUX|NUL|COM[0-9¹²³]|LPT[0-9¹²³]|CONIN\$|CONOUT\$)(?:\..*)?")
_HEAD_BYTES = 4096  # enough to tell an image or video by its magic bytes (WebM names itself in its header)


@dataclass(frozen=True)
class CheckedFile:
    """A path that passed every check, with the identity of the file that was checked.

    Kept separate from the read so a caller (or a test) can hold a checked path while
    the file system changes underneath; :meth:`FileBoundary.read_checked` then proves the
    file it opens is the one that was checked.
    """

    path: Path
    root: Path
    st_dev: int
    st_ino: int
    size: int


def _show(raw: str) -> str:
    """Echo a path back to the agent without letting a hostile one flood the message."""
    text = raw if len(raw) <= 160 else raw[:120] + "..." + raw[-30:]
    return repr(text)


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


class FileBoundary:
    """Confines reads to ``read_roots`` (minus ``excluded`` trees) and writes to ``output_root``.

    ``excluded``: folders inside a root that stay unreadable, e.g. the tenants' own output
    folders inside the shared output root (each remote tenant gets a boundary of its own).
    """

    def __init__(
        self,
        read_roots: Sequence[Path],
        output_root: Path,
        *,
        restrict_dotdirs: bool = True,
        excluded: Sequence[Path] = (),
    ) -> None:
        seen: list[Path] = []
        for root in read_roots:
            real = Path(os.path.realpath(Path(root).expanduser()))
            if real not in seen:
                seen.append(real)
        self._roots = tuple(seen)
        self._output_root_raw = Path(output_root).expanduser()
        self._output_root = Path(os.path.realpath(self._output_root_raw))
        self._restrict_dotdirs = restrict_dotdirs
        self._excluded = tuple(Path(os.path.realpath(Path(p).expanduser())) for p in excluded)

    @property
    def read_roots(self) -> tuple[Path, ...]:
        return self._roots

    @property
    def output_root(self) -> Path:
        return self._output_root

    @property
    def restrict_dotdirs(self) -> bool:
        return self._restrict_dotdirs

    # --- reads --------------------------------------------------------------------------

    def _refuse_text(self, raw: str, field: str, why: str) -> WanError:
        """A refusal for what the text itself says (no file system state is revealed)."""
        return WanError(
            ErrorCode.FILE_ACCESS,
            f"cannot read {_show(raw)}: {why}",
            field=field,
            allowed=[str(r) for r in self._roots],
            hint=_FIX_HINT,
        )

    def _refuse(self, raw: str, field: str, why: str) -> WanError:
        """The one refusal for everything the file system decided: no existence oracle.

        Missing, a folder, unreadable, too big, not an image or video, outside the allowed
        folders, a dot-folder, swapped under us: an injected agent probing the disk learns
        nothing from the answer. The real reason goes to the server's log for its owner.
        """
        log.info("refused %s for %s: %s", _show(raw), field, why)
        return WanError(
            ErrorCode.FILE_ACCESS,
            f"cannot use {_show(raw)}: it is not a readable image or video of an accepted type and size "
            "inside the allowed folders",
            field=field,
            allowed=[str(r) for r in self._roots],
            hint=_FIX_HINT,
        )

    def _absolute(self, raw: str, field: str) -> Path:
        """Turn the agent's text into an absolute, lexically normalised path."""
        if not isinstance(raw, str) or not raw.strip():
            raise self._refuse_text(str(raw), field, "the path is empty")
        text = raw
        if "\x00" in text:
            raise self._refuse_text(text.replace("\x00", "\\0"), field, "the path contains a NUL byte")
        if _WINDOWS_SPECIAL.match(text) or _DEVICE_NAME.fullmatch(PurePath(text.replace("\\", "/")).name):
            # Decided on the text alone, before anything resolves it: on Windows, resolving
            # \\host\share connects out and hands the user's NTLM hash to that host.
            raise self._refuse_text(raw, field, "network (UNC), \\?\\ and device paths are never read")
        if text.lower().startswith("file:"):
            # Our own results are returned as file:// links; agents feed them back.
            parts = urlsplit(text)
            if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
                raise self._refuse_text(raw, field, "only file:// URLs on this machine are accepted")
            text = unquote(parts.path)
            if "\x00" in text:
                raise self._refuse_text(raw, field, "the path contains a NUL byte")
        if len(text) > MAX_PATH_CHARS:
            raise self._refuse_text(raw, field, f"the path is longer than {MAX_PATH_CHARS} characters")
        try:
            encoded = os.fsencode(text)
        except UnicodeError:
            raise self._refuse_text(raw, field, "the path cannot be encoded for this file system") from None
        if any(len(part) > MAX_COMPONENT_BYTES for part in encoded.split(b"/")):
            raise self._refuse_text(raw, field, f"a path component is longer than {MAX_COMPONENT_BYTES} bytes")
        home = Path.home()
        if text.startswith("~"):
            head, _, rest = text.partition("/")
            if head != "~":
                raise self._refuse_text(raw, field, "only '~' (the current user's home) may be used, not '~user'")
            path = home / rest if rest else home
        else:
            path = Path(text)
        if not path.is_absolute():
            path = home / path
        return Path(os.path.normpath(path))

    def _dot_violation(self, path: Path, root: Path) -> bool:
        if not self._restrict_dotdirs or root == self._output_root:
            return False
        rel = path.relative_to(root)
        return any(part.startswith(".") for part in rel.parts)

    def _containing_root(self, lexical: Path, real: Path) -> Path | None:
        """The root that admits ``real``, or None.

        The dot rule is applied to both spellings: ``~/.ssh`` may be a symlink into
        ``~/dotfiles/ssh`` (dotfile managers do this), so naming a dot-folder is refused even
        when its real path looks innocent. The output root is exempt: by default it lives
        under ``~/.local/share`` and the agent legitimately reads our own results.
        """
        if _is_within(real, self._output_root) and self._output_root in self._roots:
            return self._output_root
        for root in self._roots:
            if _is_within(real, root) and not self._dot_violation(real, root):
                break
        else:
            return None
        for other in self._roots:
            if _is_within(lexical, other) and self._dot_violation(lexical, other):
                return None
        return root

    def check(self, raw: str, *, field: str) -> CheckedFile:
        """Resolve and check ``raw``, returning the checked file's identity (no bytes read)."""
        lexical = self._absolute(raw, field)
        try:
            real = Path(os.path.realpath(lexical))
        except (OSError, ValueError) as exc:  # ELOOP under strict realpath on newer Pythons
            raise self._refuse(raw, field, f"the path cannot be resolved ({exc.__class__.__name__})") from None
        for tree in FORBIDDEN_TREES:
            if _is_within(real, tree) or _is_within(lexical, tree):
                raise self._refuse_text(raw, field, f"system paths under {tree} are never readable")
        root = self._containing_root(lexical, real)
        if root is not None and any(_is_within(real, ex) or _is_within(lexical, ex) for ex in self._excluded):
            root = None  # answered like any other outside path: no hint that the folder exists
        if root is None:
            why = "it is outside the allowed folders"
            if self._restrict_dotdirs and any(_is_within(real, r) for r in self._roots):
                why = "files in hidden dot-folders (such as ~/.ssh or ~/.aws) are never readable"
            raise self._refuse(raw, field, why)
        try:
            st = real.stat()
        except FileNotFoundError:
            raise self._refuse(raw, field, "no such file") from None
        except PermissionError:
            raise self._refuse(raw, field, "permission denied") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._refuse(raw, field, "the path contains a symlink loop") from None
            raise self._refuse(raw, field, f"the file cannot be examined ({exc.strerror})") from None
        if not stat.S_ISREG(st.st_mode):
            raise self._refuse(raw, field, f"it is {_kind(st.st_mode)}, not a regular file")
        return CheckedFile(path=real, root=root, st_dev=st.st_dev, st_ino=st.st_ino, size=st.st_size)

    def resolve_readable(self, raw: str, *, field: str) -> Path:
        """The real path behind ``raw`` if it may be read; :class:`WanError` otherwise."""
        return self.check(raw, field=field).path

    def read_bytes(
        self, raw: str, *, field: str, max_bytes: int, accept: Callable[[bytes], bool] | None = None
    ) -> tuple[Path, bytes]:
        """Check and read ``raw`` in one go. Blocking: run it via ``offload.run_sync``.

        ``accept`` sees the first bytes; a file it refuses is never read further.
        """
        checked = self.check(raw, field=field)
        return checked.path, self.read_checked(checked, field=field, max_bytes=max_bytes, raw=raw, accept=accept)

    def read_checked(
        self,
        checked: CheckedFile,
        *,
        field: str,
        max_bytes: int,
        raw: str | None = None,
        accept: Callable[[bytes], bool] | None = None,
    ) -> bytes:
        """Open what :meth:`check` approved and prove it is still the same file before reading."""
        shown = raw if raw is not None else str(checked.path)
        if checked.size > max_bytes:
            raise self._too_big(shown, field, checked.size, max_bytes)
        try:
            fd = _open_confined(checked.path, checked.root)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EMLINK, errno.ENOTDIR):
                why = "the file was replaced by a symlink after it was checked"
            elif exc.errno == errno.ENOENT:
                why = "the file vanished after it was checked"
            elif exc.errno in (errno.EACCES, errno.EPERM):
                why = "permission denied"
            else:
                why = f"the file cannot be opened ({exc.strerror})"
            raise self._refuse(shown, field, why) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise self._refuse(shown, field, f"it became {_kind(st.st_mode)} after it was checked")
            if (st.st_dev, st.st_ino) != (checked.st_dev, checked.st_ino):
                raise self._refuse(shown, field, "the file was swapped for another after it was checked")
            if st.st_size > max_bytes:
                raise self._too_big(shown, field, st.st_size, max_bytes)
            chunks: list[bytes] = []
            total = 0
            if accept is not None:
                head = os.read(fd, _HEAD_BYTES)
                if not accept(head):
                    raise self._refuse(shown, field, "its first bytes are not of an accepted type")
                chunks.append(head)
                total = len(head)
            while True:
                chunk = os.read(fd, min(_READ_CHUNK, max_bytes + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
                if total > max_bytes:  # the file grew while we read it
                    raise self._too_big(shown, field, total, max_bytes)
            return b"".join(chunks)
        except OSError as exc:
            raise self._refuse(shown, field, f"reading failed ({exc.strerror})") from None
        finally:
            os.close(fd)

    def _too_big(self, raw: str, field: str, size: int, max_bytes: int) -> WanError:
        return self._refuse(raw, field, f"{size:,} bytes, over the {max_bytes:,}-byte limit")

    # --- writes -------------------------------------------------------------------------

    def output_path(self, task_id: str, suffix: str = ".mp4") -> Path:
        """A file name we build ourselves from the task id, confined to the output root.

        The id comes from the gateway, not from us, so it is treated as untrusted text:
        sanitised, length-capped, and suffixed with a hash of the raw id so that two ids
        that sanitise alike ("a/b", "a_b") never share a file.
        """
        if not _SUFFIX.fullmatch(suffix):
            raise WanError(
                ErrorCode.INVALID_FILE,
                f"output suffix {suffix!r} is not a plain extension like '.mp4'",
                field="suffix",
                hint="pass an extension of 1-10 letters or digits with a leading dot",
            )
        stem = _ID_CHARS.sub("_", task_id).lstrip(".-_")[:_MAX_STEM] or "task"
        digest = hashlib.sha256(task_id.encode("utf-8", "surrogatepass")).hexdigest()[:10]
        name = f"{stem}-{digest}{suffix.lower()}"
        try:
            self._output_root_raw.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise WanError(
                ErrorCode.FILE_ACCESS,
                f"cannot create the output folder {self._output_root_raw} ({exc.strerror})",
                field="output_dir",
                hint="set WAN_MCP_OUTPUT_DIR to a writable folder",
            ) from None
        root = Path(os.path.realpath(self._output_root_raw))
        if root != self._output_root:  # created since __init__ through a symlinked ancestor
            self._roots = tuple(root if r == self._output_root else r for r in self._roots)
            self._output_root = root
        path = root / name
        real = Path(os.path.realpath(path))
        if real.parent != root or not _is_within(real, root):
            raise WanError(
                ErrorCode.FILE_ACCESS,
                f"the output file for task {task_id[:80]!r} would land outside {root}",
                field="output_dir",
                hint=f"remove the symlink at {path} or set WAN_MCP_OUTPUT_DIR to another folder",
            )
        return path


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a plain file"


_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_NOCTTY = getattr(os, "O_NOCTTY", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)


def _open_confined(path: Path, root: Path) -> int:
    """Open ``path`` by walking down from ``root`` without following any symlink.

    ``path`` is already a realpath, so a symlink met on the way can only be one swapped
    in after the check: every component is opened relative to its parent's fd with
    ``O_NOFOLLOW``, and the kernel refuses it (ELOOP/ENOTDIR). Where ``dir_fd`` is not
    available (Windows) we fall back to a plain open; the inode comparison still holds.
    """
    flags = os.O_RDONLY | _O_CLOEXEC | _O_NOFOLLOW | _O_NONBLOCK | _O_NOCTTY | _O_BINARY
    if os.open not in os.supports_dir_fd or sys.platform == "win32":
        return os.open(path, flags)
    parts = path.relative_to(root).parts
    dfd = os.open(root, os.O_RDONLY | _O_CLOEXEC | _O_DIRECTORY)
    try:
        for part in parts[:-1]:
            nfd = os.open(part, os.O_RDONLY | _O_CLOEXEC | _O_DIRECTORY | _O_NOFOLLOW, dir_fd=dfd)
            os.close(dfd)
            dfd = nfd
        return os.open(parts[-1], flags, dir_fd=dfd)
    finally:
        os.close(dfd)
