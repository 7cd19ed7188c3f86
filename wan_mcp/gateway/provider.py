"""The seam between the product and a video backend.

The core talks to this Protocol, not to :class:`~wan_mcp.gateway.client.GatewayClient`,
so a second backend (DashScope's native Wan API, which differs in body shape, status
names and auth headers, see the contract §10) can sit beside ToAPIs by translating to the
same wire types. Every method raises :class:`~wan_mcp.errors.WanError` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from pydantic import SecretStr

from wan_mcp.gateway.wire import Balance, GatewayTask, UploadedFile

__all__ = ["VideoProvider"]


@runtime_checkable
class VideoProvider(Protocol):
    """A video backend. ``create_task`` must create at most one upstream task per call."""

    async def create_task(self, payload: Mapping[str, Any], client_business_id: str) -> GatewayTask: ...

    async def get_task(self, id_or_business_id: str) -> GatewayTask: ...

    async def upload_image(self, data: bytes, filename: str, mime: str) -> UploadedFile: ...

    async def upload_video(self, data: bytes, filename: str, mime: str) -> UploadedFile: ...

    async def get_balance(self) -> Balance: ...

    def with_key(self, api_key: SecretStr) -> VideoProvider:
        """This backend, calling with another account's key (a tenant's own); the original is unchanged."""
        ...

    def check_ready(self) -> None:
        """Raise a CONFIG ``WanError`` if the backend cannot be called at all (e.g. no key)."""
        ...
