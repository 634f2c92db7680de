"""Optional OpenID Connect sign-in: settings (``MAILMOAT_CONSOLE_OIDC_*``), the claims' mapping to a role and
mailboxes, and the relying party (discovery, the authorization code flow with PKCE, state and nonce, the ID
token verified against the provider's JWKS). The pages are in ``oidcpages``."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from .rights import Role, addresses_of

if TYPE_CHECKING:  # httpx, authlib and joserfc (with cryptography) load with the first OpenID Connect sign-in
    import httpx
    from joserfc.jwk import KeySet

ROLE_RANK = {Role.user: 0, Role.helpdesk: 1, Role.admin: 2}
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
"""Asymmetric signatures only: an ID token is checked against the provider's published keys."""
LEEWAY = 60
"""Seconds of clock difference allowed on exp, iat and nbf."""


class OidcRefused(Exception):
    """A sign-in through the provider refused: why (audited, shown in general terms)."""


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    client_id: str
    client_secret: str
    name: str
    """Shown on the sign-in page: "Sign in with <name>"."""
    groups_claim: str = "groups"
    roles: Mapping[str, Role] = field(default_factory=dict)
    """Group -> role; a member of several mapped groups gets the highest role."""
    scopes: str = "openid email profile"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OidcConfig | None:
        """The settings, or None when ``MAILMOAT_CONSOLE_OIDC_ISSUER`` is unset (no OpenID Connect sign-in)."""
        env = os.environ if env is None else env
        issuer = env.get("MAILMOAT_CONSOLE_OIDC_ISSUER", "").strip()
        if not issuer:
            return None
        client_id = env.get("MAILMOAT_CONSOLE_OIDC_CLIENT_ID", "").strip()
        secret = env.get("MAILMOAT_CONSOLE_OIDC_CLIENT_SECRET", "")
        secret_file = env.get("MAILMOAT_CONSOLE_OIDC_CLIENT_SECRET_FILE", "").strip()
        if secret_file:
            secret = Path(secret_file).read_text().strip()
        if not client_id or not secret:
            raise ValueError("MAILMOAT_CONSOLE_OIDC_ISSUER needs MAILMOAT_CONSOLE_OIDC_CLIENT_ID and "
                             "MAILMOAT_CONSOLE_OIDC_CLIENT_SECRET (or _CLIENT_SECRET_FILE)")
        return cls(issuer=issuer, client_id=client_id, client_secret=secret,
                   name=env.get("MAILMOAT_CONSOLE_OIDC_NAME", "").strip() or (urlsplit(issuer).hostname or issuer),
                   groups_claim=env.get("MAILMOAT_CONSOLE_OIDC_GROUPS_CLAIM", "").strip() or "groups",
                   roles=parse_roles(env.get("MAILMOAT_CONSOLE_OIDC_ROLES", "")),
                   scopes=env.get("MAILMOAT_CONSOLE_OIDC_SCOPES", "").strip() or cls.scopes)


def parse_roles(text: str) -> dict[str, Role]:
    """``group=role,group=role`` (roles: admin, helpdesk, user) as a mapping."""
    roles: dict[str, Role] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        group, sep, role = item.rpartition("=")
        if not sep or not group.strip():
            raise ValueError(f"MAILMOAT_CONSOLE_OIDC_ROLES: {item.strip()!r} is not group=role")
        try:
            roles[group.strip()] = Role(role.strip())
        except ValueError:
            raise ValueError(f"MAILMOAT_CONSOLE_OIDC_ROLES: {role.strip()!r} is not admin, helpdesk or user") from None
    return roles


@dataclass(frozen=True)
class Identity:
    """Who the provider signed in, as the console sees them."""
    subject: str
    role: Role
    addresses: tuple[str, ...]
    groups: tuple[str, ...]

    @property
    def account_name(self) -> str:
        """The console account of the subject (no local account can take the ``oidc:`` prefix's place by
        password: these accounts have none)."""
        return f"oidc:{self.subject}"


def identity_from_claims(claims: Mapping[str, Any], config: OidcConfig) -> Identity:
    """The role and mailboxes of verified ID token claims. The role is the highest of the mapped groups'; with no
    mapped group, an ``email`` the provider marks verified makes an end user of that mailbox; neither: refused.
    The verified ``email`` is the account's mailbox in any role."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject or len(subject) > 190 or not subject.isprintable() \
            or any(c.isspace() for c in subject):
        raise OidcRefused("the ID token has no usable subject")
    raw = claims.get(config.groups_claim, [])
    groups = (raw,) if isinstance(raw, str) else tuple(g for g in raw if isinstance(g, str)) \
        if isinstance(raw, list) else ()
    email = claims.get("email")
    verified = claims.get("email_verified") is True or claims.get("email_verified") == "true"
    addresses = tuple(sorted(addresses_of([email]))) if isinstance(email, str) and verified and "@" in email else ()
    mapped = [config.roles[g] for g in groups if g in config.roles]
    if mapped:
        role = max(mapped, key=ROLE_RANK.__getitem__)
    elif addresses:
        role = Role.user
    else:
        raise OidcRefused("no group mapped to a role and no verified email address")
    return Identity(subject, role, addresses, groups)


@dataclass(frozen=True)
class Pending:
    """What the browser's sign-in started with (kept in a signed cookie until the callback)."""
    state: str
    nonce: str
    verifier: str

    @classmethod
    def new(cls) -> Pending:
        from authlib.common.security import generate_token

        return cls(generate_token(32), generate_token(32), generate_token(64))


def _client() -> httpx.AsyncClient:
    """The HTTP client of one exchange with the provider."""
    import httpx

    return httpx.AsyncClient(timeout=10, follow_redirects=False)


class OidcClient:
    """The relying party: the provider's discovery document and keys (cached), the authorization URL, the code
    exchanged for tokens and the ID token verified."""

    def __init__(self, config: OidcConfig, *, http: Callable[[], httpx.AsyncClient] | None = None,
                 clock: Callable[[], float] = time.time, cache_seconds: float = 3600):
        self.config = config
        self._http = http or _client
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._discovery: dict[str, Any] | None = None
        self._keys: KeySet | None = None
        self._fetched = 0.0
        self._lock = asyncio.Lock()

    async def discovery(self) -> dict[str, Any]:
        async with self._lock:
            if self._discovery is None or self._clock() - self._fetched > self._cache_seconds:
                url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
                async with self._http() as client:
                    answer = await client.get(url)
                answer.raise_for_status()
                document = answer.json()
                if document.get("issuer") != self.config.issuer:
                    raise OidcRefused(f"the discovery document names issuer {document.get('issuer')!r}")
                for needed in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                    if not isinstance(document.get(needed), str):
                        raise OidcRefused(f"the discovery document has no {needed}")
                self._discovery, self._keys, self._fetched = document, None, self._clock()
            return self._discovery

    async def keys(self, refresh: bool = False) -> KeySet:
        from joserfc.jwk import KeySet

        document = await self.discovery()
        if self._keys is None or refresh:
            async with self._http() as client:
                answer = await client.get(document["jwks_uri"])
            answer.raise_for_status()
            self._keys = KeySet.import_key_set(answer.json())
        return self._keys

    async def authorization_url(self, pending: Pending, redirect_uri: str) -> str:
        from authlib.oauth2.rfc7636 import create_s256_code_challenge

        document = await self.discovery()
        query = {"response_type": "code", "client_id": self.config.client_id, "redirect_uri": redirect_uri,
                 "scope": self.config.scopes, "state": pending.state, "nonce": pending.nonce,
                 "code_challenge": create_s256_code_challenge(pending.verifier), "code_challenge_method": "S256"}
        endpoint = document["authorization_endpoint"]
        return endpoint + ("&" if "?" in endpoint else "?") + urlencode(query)

    async def exchange(self, code: str, pending: Pending, redirect_uri: str) -> dict[str, Any]:
        """The authorization code and the PKCE verifier for tokens; the ID token's verified claims."""
        import httpx

        document = await self.discovery()
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "code_verifier": pending.verifier}
        methods = document.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        auth = None
        if "client_secret_basic" in methods:
            auth = httpx.BasicAuth(self.config.client_id, self.config.client_secret)
        else:
            form.update(client_id=self.config.client_id, client_secret=self.config.client_secret)
        async with self._http() as client:
            answer = await client.post(document["token_endpoint"], data=form, auth=auth,
                                       headers={"Accept": "application/json"})
        if answer.status_code != 200:
            raise OidcRefused(f"the token endpoint answered {answer.status_code}")
        id_token = answer.json().get("id_token")
        if not isinstance(id_token, str):
            raise OidcRefused("the token endpoint returned no ID token")
        return await self.verify(id_token, pending.nonce)

    async def verify(self, id_token: str, nonce: str) -> dict[str, Any]:
        """The claims of an ID token signed by one of the provider's keys (fetched again once for an unknown
        key id), issued by it for this client, unexpired, with this sign-in's nonce."""
        from joserfc import jwt
        from joserfc.errors import JoseError

        try:
            try:
                token = jwt.decode(id_token, await self.keys(), algorithms=list(ALGORITHMS))
            except (JoseError, ValueError):
                token = jwt.decode(id_token, await self.keys(refresh=True), algorithms=list(ALGORITHMS))
            registry = jwt.JWTClaimsRegistry(
                now=int(self._clock()), leeway=LEEWAY, iss={"essential": True, "value": self.config.issuer},
                aud={"essential": True, "value": self.config.client_id}, exp={"essential": True},
                iat={"essential": True}, sub={"essential": True}, nonce={"essential": True, "value": nonce})
            registry.validate(token.claims)
        except (JoseError, ValueError) as exc:
            raise OidcRefused(f"the ID token is not valid: {type(exc).__name__}: {exc}") from None
        claims = dict(token.claims)
        audience = claims.get("aud")
        if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != self.config.client_id:
            raise OidcRefused("the ID token names other audiences and is not authorised for this client")
        return claims
