"""The local file boundary under attack: a traversal corpus, TOCTOU swaps, confined output names."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wan_mcp.core.boundary import FileBoundary
from wan_mcp.core.media import looks_like_image
from wan_mcp.errors import ErrorCode, WanError

SECRET = b"TOP-SECRET-CONTENT"
PNG_BYTES = b"\x89PNG\r\n\x1a\nnot really, but bytes are bytes"


@dataclass
class Tree:
    home: Path
    root: Path
    outside: Path
    out: Path
    boundary: FileBoundary


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Tree:
    home = tmp_path / "home"
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    # The default output dir lives in a dot-folder of home (platformdirs: ~/.local/share).
    out = home / ".local" / "share" / "wan-mcp" / "videos"
    for d in (home, root, outside, out, root / "sub", home / "pics", home / ".ssh", home / ".aws"):
        d.mkdir(parents=True, exist_ok=True)
    (outside / "secret.txt").write_bytes(SECRET)
    (home / ".ssh" / "id_rsa").write_bytes(SECRET)
    (home / ".aws" / "credentials").write_bytes(SECRET)
    (home / ".netrc").write_bytes(SECRET)
    (root / "ok.png").write_bytes(PNG_BYTES)
    (home / "pics" / "cat.png").write_bytes(PNG_BYTES)
    (out / "result.mp4").write_bytes(b"video")
    monkeypatch.setenv("HOME", str(home))
    boundary = FileBoundary([home, root, out], out, restrict_dotdirs=True)
    return Tree(home, root, outside, out, boundary)


def _link(path: Path, target: Path | str) -> str:
    path.symlink_to(target)
    return str(path)


def _fifo(path: Path) -> str:
    os.mkfifo(path)
    return str(path)


# Each case builds its hostile path inside the fixture tree.
CORPUS: dict[str, Callable[[Tree], str]] = {
    "dotdot-relative-to-home": lambda t: "../outside/secret.txt",
    "dotdot-from-root": lambda t: f"{t.root}/../outside/secret.txt",
    "dotdot-deep": lambda t: f"{t.root}/sub/../../outside/secret.txt",
    "dotdot-many": lambda t: f"{t.root}/" + "../" * 30 + "etc/passwd",
    "absolute-outside": lambda t: str(t.outside / "secret.txt"),
    "etc-passwd": lambda t: "/etc/passwd",
    "symlink-file-out": lambda t: _link(t.root / "link.png", t.outside / "secret.txt"),
    "symlink-dir-out": lambda t: _link(t.root / "linkdir", t.outside) + "/secret.txt",
    "symlink-relative-out": lambda t: _link(t.root / "rel.png", "../outside/secret.txt"),
    "symlink-loop": lambda t: (
        _link(t.root / "loop1", t.root / "loop2"),
        _link(t.root / "loop2", t.root / "loop1"),
    )[0],
    "symlink-self": lambda t: _link(t.root / "self", t.root / "self"),
    "symlink-to-proc": lambda t: _link(t.root / "env.png", "/proc/self/environ"),
    "symlink-into-dotdir": lambda t: _link(t.root / "key.png", t.home / ".ssh" / "id_rsa"),
    "tilde-other-user": lambda t: "~otheruser/x.png",
    "tilde-root": lambda t: "~root/.ssh/id_rsa",
    "proc-environ": lambda t: "/proc/self/environ",
    "proc-root-escape": lambda t: "/proc/self/root/etc/passwd",
    "dev-zero": lambda t: "/dev/zero",
    "dev-stdin": lambda t: "/dev/stdin",
    "sys": lambda t: "/sys/kernel/notes",
    "fifo-in-root": lambda t: _fifo(t.root / "pipe.png"),
    "directory": lambda t: str(t.root / "sub"),
    "root-itself": lambda t: str(t.root),
    "nul-byte": lambda t: f"{t.root}/ok.png\x00.jpg",
    "long-component": lambda t: f"{t.root}/{'a' * 300}.png",
    "long-path": lambda t: f"{t.root}/" + "a/" * 2100 + "x.png",
    "fullwidth-solidus": lambda t: f"{t.root}/..／outside／secret.txt",
    "one-dot-leader": lambda t: f"{t.root}/․․/outside/secret.txt",
    "fullwidth-dots": lambda t: f"{t.root}/．．/outside/secret.txt",
    "percent-encoded": lambda t: f"{t.root}/%2e%2e/outside/secret.txt",
    "percent-in-file-url": lambda t: f"file://{t.root}/%2e%2e/outside/secret.txt",
    "file-url-remote-host": lambda t: f"file://evil.example{t.root}/ok.png",
    "backslashes": lambda t: f"{t.root}\\..\\outside\\secret.txt",
    "dot-ssh": lambda t: "~/.ssh/id_rsa",
    "dot-aws-absolute": lambda t: str(t.home / ".aws" / "credentials"),
    "dotfile-netrc": lambda t: "~/.netrc",
    "dotdir-relative": lambda t: ".ssh/id_rsa",
    "dotdir-via-dotdot": lambda t: "~/pics/../.ssh/id_rsa",
    "symlink-named-dotdir": lambda t: _link(t.home / ".dotfiles", t.home / "pics") + "/cat.png",
    "symlink-hiding-dotdir": lambda t: _link(t.home / "pics" / "k", t.home / ".ssh") + "/id_rsa",
    "empty": lambda t: "",
    "blank": lambda t: "   ",
    "missing": lambda t: f"{t.root}/nope.png",
}


@pytest.mark.timeout(10)
@pytest.mark.parametrize("case", sorted(CORPUS))
def test_traversal_corpus_is_refused(tree: Tree, case: str) -> None:
    raw = CORPUS[case](tree)
    with pytest.raises(WanError) as caught:
        tree.boundary.resolve_readable(raw, field="image")
    assert caught.value.code in (ErrorCode.FILE_ACCESS, ErrorCode.INVALID_FILE)
    assert caught.value.field == "image"
    with pytest.raises(WanError) as caught_read:
        tree.boundary.read_bytes(raw, field="image", max_bytes=1 << 20)
    err = caught_read.value
    assert err.code in (ErrorCode.FILE_ACCESS, ErrorCode.INVALID_FILE)
    text = str(err)
    assert "field 'image'" in text
    assert SECRET.decode() not in text
    assert str(tree.root) in text  # the allowed folders are listed
    assert "WAN_MCP_ALLOWED_DIRS" in text


def _refusal(tree: Tree, raw: str, caplog: pytest.LogCaptureFixture, **kw: int) -> tuple[str, str]:
    """(the message the agent gets with the path blanked out, the reason only the log knows)."""
    caplog.clear()
    with caplog.at_level("INFO", logger="wan_mcp.files"), pytest.raises(WanError) as caught:
        tree.boundary.read_bytes(raw, field="path", max_bytes=kw.get("max_bytes", 1 << 20), accept=looks_like_image)
    return caught.value.render().replace(repr(raw), "<path>"), caplog.text


def test_refusal_message_explains_and_lists_roots(tree: Tree) -> None:
    with pytest.raises(WanError) as caught:
        tree.boundary.resolve_readable(str(tree.outside / "secret.txt"), field="path")
    err = caught.value
    assert err.allowed == [str(tree.home.resolve()), str(tree.root.resolve()), str(tree.out.resolve())]
    assert "inside the allowed folders" in err.message
    assert err.hint is not None and "into one of the allowed folders" in err.hint and "data: URL" in err.hint


def test_no_existence_oracle_every_unusable_path_gets_the_same_answer(
    tree: Tree, caplog: pytest.LogCaptureFixture
) -> None:
    (tree.root / "big.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 5000)
    (tree.root / "notes.txt").write_bytes(b"just text, not a picture")
    (tree.root / "locked.png").write_bytes(PNG_BYTES)
    cases = {
        "missing inside": (f"{tree.root}/nope.png", "no such file"),
        "missing outside": (f"{tree.outside}/nope.png", "outside the allowed folders"),
        "existing outside": (f"{tree.outside}/secret.txt", "outside the allowed folders"),
        "a folder": (f"{tree.root}/sub", "a directory"),
        "a dot-folder": ("~/.ssh/id_rsa", "dot-folders"),
        "too big": (f"{tree.root}/big.png", "over the 4,096-byte limit"),
        "not an image": (f"{tree.root}/notes.txt", "not of an accepted type"),
    }
    answers = set()
    for name, (raw, logged) in cases.items():
        message, log_text = _refusal(tree, raw, caplog, max_bytes=4096)
        answers.add(message)
        assert logged in log_text, (name, log_text)  # the owner can still see why
    assert len(answers) == 1, answers  # the agent cannot tell any of them apart
    assert "5,0" not in next(iter(answers))  # not even a size


def test_the_first_bytes_decide_before_the_file_is_read_in_full(tree: Tree) -> None:
    (tree.root / "big.bin").write_bytes(b"\x00" * (8 << 20))
    seen: list[int] = []

    def accept(head: bytes) -> bool:
        seen.append(len(head))
        return False

    with pytest.raises(WanError):
        tree.boundary.read_bytes(str(tree.root / "big.bin"), field="image", max_bytes=16 << 20, accept=accept)
    assert seen == [4096]


@pytest.mark.parametrize(
    "raw",
    [
        "\\\\attacker.example\\share\\cat.png",  # UNC: resolving it sends the NTLM hash out
        "//attacker.example/share/cat.png",
        "\\\\?\\C:\\Users\\me\\cat.png",
        "\\\\.\\PhysicalDrive0",
        "\\??\\C:\\x.png",
        "{root}/CON",
        "{root}/nul.png",
        "C:\\Users\\me\\COM1.jpg",
    ],
)
def test_windows_network_and_device_paths_are_refused_on_the_text(tree: Tree, raw: str) -> None:
    raw = raw.format(root=tree.root)
    with pytest.raises(WanError, match=r"network \(UNC\)") as caught:
        tree.boundary.check(raw, field="image")
    assert caught.value.field == "image"


@pytest.mark.parametrize(
    "raw",
    [
        "{root}/ok.png",
        "~/pics/cat.png",
        "pics/cat.png",
        "{home}/pics/../pics/cat.png",
        "file://{root}/ok.png",
        "{out}/result.mp4",
    ],
)
def test_allowed_paths_are_read(tree: Tree, raw: str) -> None:
    raw = raw.format(root=tree.root, home=tree.home, out=tree.out)
    path, data = tree.boundary.read_bytes(raw, field="image", max_bytes=1 << 20)
    assert path.is_absolute() and path == Path(os.path.realpath(path))
    assert data in (PNG_BYTES, b"video")


def test_output_root_inside_home_dotdir_is_readable(tree: Tree) -> None:
    # ~/.local/share/wan-mcp/videos is a dot-folder of home but it is our own output root.
    path = tree.boundary.resolve_readable("~/.local/share/wan-mcp/videos/result.mp4", field="video")
    assert path == (tree.out / "result.mp4").resolve()
    with pytest.raises(WanError):
        tree.boundary.resolve_readable("~/.local/share/other.db", field="video")


def test_symlink_inside_root_to_inside_root_is_fine(tree: Tree) -> None:
    link = _link(tree.root / "alias.png", tree.root / "ok.png")
    path, data = tree.boundary.read_bytes(link, field="image", max_bytes=100)
    assert path == (tree.root / "ok.png").resolve() and data == PNG_BYTES


def test_explicit_roots_allow_dotdirs_when_not_restricted(tree: Tree) -> None:
    (tree.root / ".hidden").mkdir()
    (tree.root / ".hidden" / "a.png").write_bytes(PNG_BYTES)
    loose = FileBoundary([tree.root], tree.out, restrict_dotdirs=False)
    assert loose.read_bytes(f"{tree.root}/.hidden/a.png", field="image", max_bytes=100)[1] == PNG_BYTES
    strict = FileBoundary([tree.root], tree.out, restrict_dotdirs=True)
    with pytest.raises(WanError):
        strict.read_bytes(f"{tree.root}/.hidden/a.png", field="image", max_bytes=100)


def test_proc_is_refused_even_when_root_is_slash(tree: Tree) -> None:
    everything = FileBoundary([Path("/")], tree.out, restrict_dotdirs=False)
    for raw in ("/proc/self/environ", "/dev/zero", "/sys/kernel/notes"):
        with pytest.raises(WanError, match="never readable"):
            everything.read_bytes(raw, field="image", max_bytes=100)


def test_size_cap_refuses_and_logs_the_size(tree: Tree, caplog: pytest.LogCaptureFixture) -> None:
    (tree.root / "big.png").write_bytes(b"x" * 5000)
    message, logged = _refusal(tree, str(tree.root / "big.png"), caplog, max_bytes=4096)
    assert "5,000 bytes, over the 4,096-byte limit" in logged and "5,000" not in message


# --- TOCTOU: the file changes between check and open ---------------------------------------


@pytest.mark.timeout(10)
def test_toctou_file_swapped_for_symlink(tree: Tree, caplog: pytest.LogCaptureFixture) -> None:
    target = tree.root / "swap.png"
    target.write_bytes(PNG_BYTES)
    checked = tree.boundary.check(str(target), field="image")
    target.unlink()
    target.symlink_to(tree.outside / "secret.txt")
    with caplog.at_level("INFO", logger="wan_mcp.files"), pytest.raises(WanError) as caught:
        tree.boundary.read_checked(checked, field="image", max_bytes=1 << 20)
    assert caught.value.code is ErrorCode.FILE_ACCESS and "symlink" in caplog.text


@pytest.mark.timeout(10)
def test_toctou_parent_dir_swapped_for_symlink(tree: Tree) -> None:
    folder = tree.root / "album"
    folder.mkdir()
    (folder / "a.png").write_bytes(PNG_BYTES)
    (tree.outside / "a.png").write_bytes(SECRET)
    checked = tree.boundary.check(str(folder / "a.png"), field="image")
    folder.rename(tree.root / "album-old")
    folder.symlink_to(tree.outside)
    with pytest.raises(WanError) as caught:
        tree.boundary.read_checked(checked, field="image", max_bytes=1 << 20)
    assert SECRET.decode() not in str(caught.value)


@pytest.mark.timeout(10)
def test_toctou_file_replaced_by_another_file(tree: Tree, caplog: pytest.LogCaptureFixture) -> None:
    target = tree.root / "r.png"
    target.write_bytes(PNG_BYTES)
    checked = tree.boundary.check(str(target), field="image")
    replacement = tree.root / "r.new"
    replacement.write_bytes(SECRET)
    os.replace(replacement, target)
    with caplog.at_level("INFO", logger="wan_mcp.files"), pytest.raises(WanError):
        tree.boundary.read_checked(checked, field="image", max_bytes=1 << 20)
    assert "swapped" in caplog.text


@pytest.mark.timeout(10)
def test_toctou_file_replaced_by_fifo_does_not_hang(tree: Tree, caplog: pytest.LogCaptureFixture) -> None:
    target = tree.root / "f.png"
    target.write_bytes(PNG_BYTES)
    checked = tree.boundary.check(str(target), field="image")
    target.unlink()
    os.mkfifo(target)
    with caplog.at_level("INFO", logger="wan_mcp.files"), pytest.raises(WanError):
        tree.boundary.read_checked(checked, field="image", max_bytes=1 << 20)
    assert "FIFO" in caplog.text or "swapped" in caplog.text


def test_file_grown_after_check_hits_the_cap(tree: Tree) -> None:
    target = tree.root / "grow.png"
    target.write_bytes(b"x" * 10)
    checked = tree.boundary.check(str(target), field="image")
    with target.open("ab") as fh:
        fh.write(b"x" * 5000)
    with pytest.raises(WanError) as caught:
        tree.boundary.read_checked(checked, field="image", max_bytes=100)
    assert caught.value.code is ErrorCode.FILE_ACCESS


# --- output names ------------------------------------------------------------------------


NAME = re.compile(r"[A-Za-z0-9._-]+")


def test_output_path_is_confined_and_created_private(tmp_path: Path) -> None:
    out = tmp_path / "a" / "videos"
    boundary = FileBoundary([tmp_path], out)
    path = boundary.output_path("../../etc/passwd")
    assert path.parent == out.resolve()
    assert NAME.fullmatch(path.name) and path.name.endswith(".mp4")
    assert not path.name.startswith(".")
    assert stat.S_IMODE(out.stat().st_mode) == 0o700


def test_output_path_names_never_collide(tmp_path: Path) -> None:
    boundary = FileBoundary([tmp_path], tmp_path / "out")
    names = {boundary.output_path(i).name for i in ("a/b", "a_b", "a:b", "a b", "A/B")}
    assert len(names) == 5
    assert boundary.output_path("task_123").name == boundary.output_path("task_123").name
    long_name = boundary.output_path("x" * 5000, ".webm").name
    assert len(long_name) < 120 and long_name.endswith(".webm")


def test_output_path_refuses_planted_symlink(tmp_path: Path) -> None:
    out = tmp_path / "out"
    boundary = FileBoundary([tmp_path], out)
    first = boundary.output_path("task-1")
    first.symlink_to(tmp_path / "elsewhere.mp4")
    with pytest.raises(WanError) as caught:
        boundary.output_path("task-1")
    assert caught.value.code is ErrorCode.FILE_ACCESS


@pytest.mark.parametrize("suffix", ["mp4", ".mp4/../../x", "..", ".m p4", ""])
def test_output_path_rejects_odd_suffixes(tmp_path: Path, suffix: str) -> None:
    with pytest.raises(WanError):
        FileBoundary([tmp_path], tmp_path / "out").output_path("t", suffix)


def test_output_root_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(WanError) as caught:
        FileBoundary([tmp_path], blocker / "videos").output_path("t")
    assert "WAN_MCP_OUTPUT_DIR" in str(caught.value)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(task_id=st.text(min_size=0, max_size=300))
def test_output_path_property(tmp_path: Path, task_id: str) -> None:
    root = tmp_path / "prop"
    path = FileBoundary([tmp_path], root).output_path(task_id)
    assert path.parent == root.resolve()
    assert NAME.fullmatch(path.name)
    assert path.name not in (".", "..") and not path.name.startswith((".", "-"))
