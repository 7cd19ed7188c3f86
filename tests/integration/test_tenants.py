"""Tenants against real services on loopback: the OAuth verifier and an authorization server,
and a tenant's own gateway key across a restart (the simulator checks every key)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import httpx2
import jwt
import pytest
from joserfc.jwk import RSAKey
from pydantic import SecretStr

from tests.helpers import simulator_settings
from tests.oauth_server import AuthServer, OAuthClient
from wan_mcp.core.clock import VirtualClock
from wan_mcp.core.tenancy import Tenant
from wan_mcp.core.views import TaskView
from wan_mcp.errors import ErrorCode, WanError
from wan_mcp.server.app import open_service
from wan_mcp.server.oauth import JwtVerifier, oauth_principal
from wan_mcp.simulator.harness import SimulatorServer

pytestmark = pytest.mark.anyio
RESOURCE = "http://127.0.0.1:9/mcp"


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_jwt_access_tokens_are_verified_against_the_issuers_published_keys() -> None:
    with AuthServer(RESOURCE) as auth:
        auth.add_client(OAuthClient("carol-app", "s"))
        auth.add_client(OAuthClient("elsewhere", "s", audience="https://other.example/mcp"))
        auth.add_client(OAuthClient("expired", "s", expires_in=-300))
        auth.add_client(OAuthClient("liar", "s", issuer="https://issuer.example"))
        auth.add_client(OAuthClient("noscope", "s", scope="profile"))
        async with httpx2.AsyncClient() as http:
            clock = VirtualClock()
            verifier = JwtVerifier(issuer=auth.issuer, audience=RESOURCE, http=lambda: http, clock=clock)
            good = await verifier.verify(auth.token("carol-app", "s"))
            assert good is not None
            assert good.client_id == oauth_principal(auth.issuer, "carol-app") and good.subject == "carol-app"
            assert good.scopes == ["wan"] and good.resource == RESOURCE and good.token == "(redacted)"
            # The scope is the SDK middleware's to check (403 insufficient_scope): the token is genuine.
            scopeless = await verifier.verify(auth.token("noscope", "s", scope="profile"))
            assert scopeless is not None and "wan" not in scopeless.scopes
            for client in ("elsewhere", "expired", "liar"):
                assert await verifier.verify(auth.token(client, "s")) is None, client

            # Forgeries: no signature, an HMAC keyed with the public key, a key the issuer never published.
            claims = jwt.decode(auth.token("carol-app", "s"), options={"verify_signature": False})
            unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
            public_pem = auth.key.as_pem(private=False)
            signing_input = f"{_b64({'alg': 'HS256', 'kid': 'test-key-1'})}.{_b64(claims)}"
            mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
            hmac_forged = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
            other = RSAKey.generate_key(2048, parameters={"kid": "test-key-1"})
            resigned = jwt.encode(claims, other.as_pem(private=True), algorithm="RS256", headers={"kid": "test-key-1"})
            for forged in (unsigned, hmac_forged, resigned, "not.a.jwt", "x" * 20_000):
                assert await verifier.verify(forged) is None
            # The keys are fetched once (then cached), not per token; forged kids re-fetch at most every 30 s.
            for _ in range(5):
                assert await verifier.verify(auth.token("carol-app", "s")) is not None
            unknown_kid = jwt.encode(claims, other.as_pem(private=True), algorithm="RS256", headers={"kid": "k-99"})
            for _ in range(5):
                assert await verifier.verify(unknown_kid) is None
            assert auth.jwks_requests == 1, auth.jwks_requests
            clock._now += 31  # past the re-fetch pause: one unknown kid fetches the keys again (rotation)
            for _ in range(5):
                assert await verifier.verify(unknown_kid) is None
            assert auth.jwks_requests == 2, auth.jwks_requests


async def test_an_unreachable_issuer_refuses_tokens_without_failing_the_server() -> None:
    async with httpx2.AsyncClient() as http:
        verifier = JwtVerifier(issuer="http://127.0.0.1:1", audience=RESOURCE, http=lambda: http)
        with AuthServer(RESOURCE) as auth:
            auth.add_client(OAuthClient("carol-app", "s"))
            token = auth.token("carol-app", "s")
        assert await verifier.verify(token) is None


async def test_a_task_made_with_a_tenants_own_key_resumes_after_a_restart_only_with_that_key(
    tmp_path: Path,
) -> None:
    server_key, own_key = "sk-server-0123456789abcdef", "sk-tenant-fedcba9876543210"
    keyless, keyed = Tenant("carol", remote=True), Tenant("carol", remote=True, api_key=SecretStr(own_key))
    with SimulatorServer(job_seconds=1.5, api_keys={server_key, own_key}) as sim:
        settings = simulator_settings(sim, tmp_path, key=server_key, budget_daily_usd=0)
        async with open_service(settings, remote=True) as service:
            made = await service.generate({"prompt": "tide", "resolution": "720p"}, wait_seconds=0, tenant=keyed)
            assert isinstance(made, TaskView)
        task = made.task_id
        assert {t["id"]: t["owner"] for t in sim.tasks()}[task] == hashlib.sha256(own_key.encode()).hexdigest()[:16]
        async with open_service(settings, remote=True) as service:  # a restart: no key in memory
            seen = sim.count()
            waiting = (await service.status(task, wait_seconds=0, tenant=keyless)).view
            assert waiting.status in ("queued", "in_progress") and "X-Wan-Api-Key" in (waiting.next or "")
            assert sim.count() == seen  # never asked about with the server's key
            done = (await service.status(task, wait_seconds=30, tenant=keyed)).view
            assert done.status == "completed" and done.local_path and "/tenants/carol/" in done.local_path
            # Another tenant cannot wait on it, with or without a key.
            with pytest.raises(WanError) as refused:
                await service.status(task, wait_seconds=0, tenant=Tenant("dave", remote=True))
            assert refused.value.code is ErrorCode.NOT_FOUND
