"""A minimal OpenID Connect provider on loopback for tests: discovery, JWKS, an authorization endpoint that signs
in a preset user at once (redirecting back with a code), and a token endpoint that checks the client, the
redirect URI and the PKCE verifier and issues an RS256 ID token. Knobs make it misbehave (tamper, expire,
change the nonce, sign with a key it does not publish)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey


@dataclass
class Behaviour:
    claims: dict[str, Any] = field(default_factory=dict)
    """Claims of the user signed in (sub, email, groups...)."""
    tamper: bool = False
    expired: bool = False
    wrong_nonce: bool = False
    foreign_key: bool = False


class OidcProvider:
    def __init__(self, client_id: str = "console", client_secret: str = "provider secret"):
        self.client_id, self.client_secret = client_id, client_secret
        self.key = RSAKey.generate_key(2048, parameters={"kid": "k1", "alg": "RS256", "use": "sig"})
        self.behaviour = Behaviour()
        self.codes: dict[str, dict[str, str]] = {}
        self.issuer = ""
        self.token_requests: list[dict[str, str]] = []
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/jwks", self.jwks)
        app.router.add_get("/authorize", self.authorize)
        app.router.add_post("/token", self.token)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.issuer = f"http://127.0.0.1:{port}"
        return self.issuer

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def discovery(self, request: web.Request) -> web.Response:
        return web.json_response({
            "issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"], "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"]})

    async def jwks(self, request: web.Request) -> web.Response:
        return web.json_response(KeySet([self.key]).as_dict(private=False))

    async def authorize(self, request: web.Request) -> web.Response:
        q = request.query
        if q.get("client_id") != self.client_id or q.get("response_type") != "code" \
                or q.get("code_challenge_method") != "S256" or "openid" not in q.get("scope", "").split():
            return web.Response(status=400, text="bad authorization request")
        code = secrets.token_urlsafe(16)
        self.codes[code] = {"nonce": q.get("nonce", ""), "challenge": q.get("code_challenge", ""),
                            "redirect_uri": q["redirect_uri"]}
        raise web.HTTPFound(q["redirect_uri"] + "?" + urlencode({"code": code, "state": q.get("state", "")}))

    async def token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.token_requests.append({k: str(v) for k, v in form.items()})
        expected = "Basic " + base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"error": "invalid_client"}, status=401)
        grant = self.codes.pop(str(form.get("code", "")), None)
        verifier = str(form.get("code_verifier", ""))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if grant is None or grant["redirect_uri"] != form.get("redirect_uri") or grant["challenge"] != challenge:
            return web.json_response({"error": "invalid_grant"}, status=400)
        return web.json_response({"access_token": secrets.token_urlsafe(16), "token_type": "Bearer",
                                  "id_token": self.id_token(grant["nonce"])})

    def id_token(self, nonce: str) -> str:
        b = self.behaviour
        now = int(time.time()) - (7200 if b.expired else 0)
        claims = {"iss": self.issuer, "aud": self.client_id, "iat": now, "exp": now + 300,
                  "nonce": "another nonce" if b.wrong_nonce else nonce, **b.claims}
        key = RSAKey.generate_key(2048, parameters={"kid": "k1"}) if b.foreign_key else self.key
        token = jwt.encode({"alg": "RS256", "kid": "k1"}, claims, key)
        if b.tamper:
            head, body, sig = token.split(".")
            payload = dict(claims, groups=["mail-admins"])
            body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
            token = f"{head}.{body}.{sig}"
        return token


@contextmanager
def provider_in_thread(provider: OidcProvider | None = None) -> Iterator[OidcProvider]:
    """The provider served from a thread of its own (for synchronous tests such as Playwright's)."""
    provider = provider or OidcProvider()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(provider.start(), loop).result(timeout=10)
    try:
        yield provider
    finally:
        asyncio.run_coroutine_threadsafe(provider.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
