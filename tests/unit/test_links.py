"""Signed download links: only an unaltered, unexpired link of ours opens a file, and only its
owner's (the rules in wan_mcp/core/links.py; the HTTP route is tested end to end in tests/e2e)."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wan_mcp.core.links import DownloadLinks
from wan_mcp.errors import ErrorCode, WanError

KEY = b"k" * 32
BASE = "https://wan.example.com"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _links(root: Path, clock: Clock | None = None, key: bytes = KEY) -> DownloadLinks:
    return DownloadLinks(key, base_url=BASE + "/", output_dir=root, ttl_seconds=600, clock=clock or Clock())


def _file(root: Path, tenant: str, name: str = "video_A.mp4") -> Path:
    path = root / "tenants" / tenant / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"mp4")
    return path


def _split(url: str) -> tuple[str, str]:
    path, _, sig = url.partition("?sig=")
    return path.rsplit("/", 1)[1], sig


def test_a_link_names_its_owner_task_and_file_and_expires(tmp_path: Path) -> None:
    clock = Clock()
    links = _links(tmp_path, clock)
    path = _file(tmp_path, "alice")
    link = links.sign(tenant="alice", task_id="video_A", local_path=str(path), size_bytes=3)
    assert link is not None and link.url.startswith(f"{BASE}/files/video_A.mp4?sig=")
    assert link.expires_at == clock.now + 600
    claims = links.check(*_split(link.url))
    assert (claims.tenant, claims.task_id, claims.path, claims.size_bytes) == ("alice", "video_A", path.resolve(), 3)

    clock.now += 601  # expired: refused, with the way to a fresh one
    with pytest.raises(WanError) as expired:
        links.check(*_split(link.url))
    assert expired.value.code is ErrorCode.AUTH and "expired" in expired.value.message
    assert "get_task_status" in (expired.value.hint or "")


def test_only_files_in_the_tenants_own_folder_get_a_link(tmp_path: Path) -> None:
    links = _links(tmp_path)
    bobs = _file(tmp_path, "bob")
    assert links.sign(tenant="alice", task_id="video_A", local_path=str(bobs), size_bytes=3) is None
    sneaky = tmp_path / "tenants" / "alice" / ".." / "bob" / "video_A.mp4"
    assert links.sign(tenant="alice", task_id="video_A", local_path=str(sneaky), size_bytes=3) is None
    local = tmp_path / "video_A.mp4"  # the local user's folder is nobody's to link
    assert links.sign(tenant="alice", task_id="video_A", local_path=str(local), size_bytes=3) is None
    assert (
        links.sign(tenant="alice", task_id="video_A", local_path=str(_file(tmp_path, "alice")), size_bytes=None) is None
    )


def test_a_link_signed_with_our_key_but_escaping_its_folder_is_refused(tmp_path: Path) -> None:
    """Defence in depth: even a token carrying our signature never opens a file outside its tenant's folder."""
    links = _links(tmp_path)
    _file(tmp_path, "bob")
    forged = jwt.encode(
        {"sub": "alice", "tid": "video_A", "path": "tenants/alice/../bob/video_A.mp4", "size": 3,
         "exp": 2_000_000_000, "aud": "wan-mcp:file"},
        KEY,
        algorithm="HS256",
    )  # fmt: skip
    with pytest.raises(WanError, match="outside its owner's folder"):
        links.check("video_A.mp4", forged)


def test_another_servers_links_and_renamed_links_are_refused(tmp_path: Path) -> None:
    path = _file(tmp_path, "alice")
    theirs = _links(tmp_path, key=b"x" * 32).sign(tenant="alice", task_id="video_A", local_path=str(path), size_bytes=3)
    assert theirs is not None
    with pytest.raises(WanError, match="not valid"):
        _links(tmp_path).check(*_split(theirs.url))
    ours = _links(tmp_path).sign(tenant="alice", task_id="video_A", local_path=str(path), size_bytes=3)
    assert ours is not None
    with pytest.raises(WanError, match="name was changed"):
        _links(tmp_path).check("video_B.mp4", _split(ours.url)[1])
    head, body, _ = _split(ours.url)[1].split(".")
    unsigned = jwt.encode(jwt.decode(_split(ours.url)[1], options={"verify_signature": False}), None, algorithm="none")
    for bare in (f"{head}.{body}.", unsigned):  # no signature, or "alg": "none"
        with pytest.raises(WanError, match="not valid"):
            _links(tmp_path).check("video_A.mp4", bare)


@given(position=st.integers(min_value=0, max_value=10_000), char=st.sampled_from("AQgw_-0"))
def test_any_altered_character_of_a_link_is_refused(tmp_path_factory: pytest.TempPathFactory, position: int,
                                                    char: str) -> None:  # fmt: skip
    root = tmp_path_factory.getbasetemp() / "links-prop"
    links = _links(root)
    path = _file(root, "alice")
    link = links.sign(tenant="alice", task_id="video_A", local_path=str(path), size_bytes=3)
    assert link is not None
    name, sig = _split(link.url)
    i = position % len(sig)
    altered = sig[:i] + char + sig[i + 1 :]
    if altered == sig:
        return
    try:
        claims = links.check(name, altered)
    except WanError:
        return
    # base64url's last character carries spare bits: a change there may decode to the same bytes.
    assert i == len(sig) - 1 and claims.tenant == "alice" and claims.path == path.resolve()
