"""A real OAuth 2.1 authorization server for the tests, on loopback (authlib).

authlib's ``AuthorizationServer`` runs the token endpoint (client authentication, grant and
scope checks) and its RFC 9068 generator signs JWT access tokens with an RSA key this server
publishes at its ``jwks_uri``; RFC 8414 metadata says where both are. Grant: client
credentials (each client is a principal; its ``sub`` is the client id). Each registered client
shapes its tokens so the tests can ask for the bad ones a real issuer would hand out: another
audience, already expired, without the scope, or claiming another issuer.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx2
import uvicorn
from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, OAuth2Request
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from joserfc.jwk import KeySet, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class OAuthClient(ClientMixin):  # type: ignore[misc]
    client_id: str
    secret: str
    scope: str = "wan"
    audience: str | None = None  # None: the resource the server is configured with
    expires_in: int = 600
    issuer: str | None = None  # a token claiming another issuer (signed with the real key)

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None

    def get_allowed_scope(self, scope: str) -> str:
        allowed = set(self.scope.split())
        return " ".join(s for s in (scope or self.scope).split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return client_secret == self.secret

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"


class _Tokens(JWTBearerTokenGenerator):  # type: ignore[misc]
    def __init__(self, issuer: str, keys: KeySet, resource: str) -> None:
        super().__init__(issuer=issuer, expires_generator=lambda client, grant_type: client.expires_in)
        self._keys = keys
        self._resource = resource

    def get_jwks(self) -> Any:
        return self._keys

    def get_audiences(self, client: OAuthClient, user: Any, scope: str) -> str:
        return client.audience or self._resource

    def get_extra_claims(self, client: OAuthClient, grant_type: str, user: Any, scope: str) -> dict[str, Any]:
        return {"iss": client.issuer} if client.issuer else {}


class _Server(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, clients: dict[str, OAuthClient]) -> None:
        super().__init__(scopes_supported=["wan", "profile"])
        self._clients = clients

    def query_client(self, client_id: str) -> OAuthClient | None:
        return self._clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        pass  # JWTs are self-contained; nothing to store

    def create_oauth2_request(self, request: tuple[Request, dict[str, str]]) -> OAuth2Request:
        req, form = request
        out = OAuth2Request(req.method, str(req.url), headers=req.headers)
        out.payload = BasicOAuth2Payload(form)
        return out

    def handle_response(self, status: int, body: Any, headers: Any) -> JSONResponse:
        return JSONResponse(body, status_code=status, headers=dict(headers))

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass


class AuthServer:
    """Serve the authorization server on a free loopback port in a thread (``with AuthServer(...)``)."""

    def __init__(self, resource: str) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.resource = resource
        self.key = RSAKey.generate_key(2048, parameters={"kid": "test-key-1", "alg": "RS256", "use": "sig"})
        self.clients: dict[str, OAuthClient] = {}
        self.token_requests = 0
        self.jwks_requests = 0
        server = _Server(self.clients)
        server.register_grant(ClientCredentialsGrant)
        server.register_token_generator("default", _Tokens(self.issuer, KeySet([self.key]), resource))
        self._as = server
        self._uvicorn = uvicorn.Server(uvicorn.Config(self._app(), log_level="warning", lifespan="off"))
        self._thread = threading.Thread(target=self._run, name="oauth-test-server", daemon=True)

    def add_client(self, client: OAuthClient) -> OAuthClient:
        self.clients[client.client_id] = client
        return client

    def token(self, client_id: str, secret: str, scope: str = "wan") -> str:
        """An access token from the token endpoint (client credentials), as a client gets one."""
        reply = httpx2.post(
            f"{self.issuer}/token", data={"grant_type": "client_credentials", "scope": scope}, auth=(client_id, secret)
        )
        assert reply.status_code == 200, reply.text
        token: str = reply.json()["access_token"]
        return token

    def _app(self) -> Starlette:
        async def metadata(_request: Request) -> Response:
            return JSONResponse(
                {
                    "issuer": self.issuer,
                    "token_endpoint": f"{self.issuer}/token",
                    "jwks_uri": f"{self.issuer}/jwks",
                    "grant_types_supported": ["client_credentials"],
                    "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                    "scopes_supported": ["wan", "profile"],
                }
            )

        async def jwks(_request: Request) -> Response:
            self.jwks_requests += 1
            return JSONResponse(KeySet([self.key]).as_dict(private=False))

        async def token(request: Request) -> Response:
            self.token_requests += 1
            form = {k: str(v) for k, v in (await request.form()).items()}
            response: Response = self._as.create_token_response((request, form))
            return response

        return Starlette(
            routes=[
                Route("/.well-known/oauth-authorization-server", metadata),
                Route("/jwks", jwks),
                Route("/token", token, methods=["POST"]),
            ]
        )

    def _run(self) -> None:
        asyncio.run(self._uvicorn.serve(sockets=[self._sock]))

    def __enter__(self) -> AuthServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._uvicorn.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test authorization server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._uvicorn.should_exit = True
        self._thread.join(10)
        self._sock.close()
