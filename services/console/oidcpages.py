"""OpenID Connect sign-in's pages: ``/signin/oidc`` sends the browser to the provider, ``/signin/oidc/callback``
checks what comes back and opens the console's own session, exactly as a local sign-in does."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from psycopg.rows import dict_row

from .accounts import _COLUMNS, Account, _account
from .core import Console, client_ip, console_of
from .notifylinks import link_keys
from .oidc import Identity, OidcClient, OidcConfig, OidcRefused, Pending, identity_from_claims
from .pages import render

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
PENDING_COOKIE = "mailmoat_oidc"
PENDING_SECONDS = 600
SALT = "mailmoat-console-oidc-pending"
NO_PASSWORD = "!oidc"
"""The password hash of an account made by OpenID Connect: not a hash, so no password ever matches it."""


def oidc_of(request: Request) -> OidcClient | None:
    return getattr(request.app.state, "oidc", None)


def client_from_env() -> OidcClient | None:
    """The relying party configured by ``MAILMOAT_CONSOLE_OIDC_*``, or None."""
    config = OidcConfig.from_env()
    return OidcClient(config) if config else None


def _cookie_name(console: Console) -> str:
    return ("__Host-" if console.config.secure_cookies else "") + PENDING_COOKIE


def _redirect_uri(console: Console) -> str:
    return console.config.url.rstrip("/") + "/signin/oidc/callback"


async def _serializer(console: Console) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(await link_keys(console.accounts.pool), salt=SALT)


async def upsert_account(console: Console, identity: Identity) -> Account | None:
    """The subject's account, made or brought up to date (role, mailboxes) from the provider's claims; None when
    the name belongs to an account with a password."""
    async with console.accounts.pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            f"INSERT INTO console_accounts (name, role, password_hash, addresses) VALUES (%s, %s, %s, %s) "
            f"ON CONFLICT ((lower(name))) DO UPDATE SET role = EXCLUDED.role, addresses = EXCLUDED.addresses, "
            f"updated_at = now() WHERE console_accounts.password_hash = %s RETURNING {_COLUMNS}",
            (identity.account_name, identity.role.value, NO_PASSWORD, list(identity.addresses), NO_PASSWORD))
        row = await cur.fetchone()
    return _account(row) if row else None


@router.get("/signin/oidc")
async def oidc_start(request: Request) -> Response:
    console, oidc = console_of(request), oidc_of(request)
    if oidc is None:
        return await render(request, "error.html", 404, status=404, message="Not found.")
    pending = Pending.new()
    try:
        url = await oidc.authorization_url(pending, _redirect_uri(console))
    except Exception as exc:  # the provider unreachable or its document unusable
        log.warning("console: OpenID Connect provider unavailable: %s", exc)
        return await render(request, "error.html", 503, status=503,
                            message=f"{oidc.config.name} cannot be reached; try again shortly.")
    value = (await _serializer(console)).dumps([pending.state, pending.nonce, pending.verifier])
    response = RedirectResponse(url, status_code=303)
    options = console.cookie_options(PENDING_SECONDS) | {"samesite": "lax"}  # comes back from the provider
    response.set_cookie(_cookie_name(console), value, **options)
    return response


@router.get("/signin/oidc/callback")
async def oidc_callback(request: Request, code: Annotated[str, Query(max_length=4096)] = "",
                        state: Annotated[str, Query(max_length=200)] = "",
                        error: Annotated[str, Query(max_length=200)] = "") -> Response:
    console, oidc = console_of(request), oidc_of(request)
    if oidc is None:
        return await render(request, "error.html", 404, status=404, message="Not found.")
    ip = client_ip(request)
    subject = "-"
    try:
        try:
            saved = (await _serializer(console)).loads(request.cookies.get(_cookie_name(console), ""),
                                                       max_age=PENDING_SECONDS)
            pending = Pending(*saved)
        except (BadSignature, TypeError, ValueError):
            raise OidcRefused("no sign-in of this browser is under way (cookie missing, changed or expired)") from None
        if error:
            raise OidcRefused(f"the provider answered error={error}")
        if not code or state != pending.state:
            raise OidcRefused("the state does not match this browser's sign-in")
        claims = await oidc.exchange(code, pending, _redirect_uri(console))
        subject = str(claims.get("sub", "-"))[:190]
        identity = identity_from_claims(claims, oidc.config)
        account = await upsert_account(console, identity)
        if account is None:
            raise OidcRefused(f"the account name {identity.account_name!r} belongs to a local account")
        if account.disabled:
            raise OidcRefused("the account is disabled")
    except OidcRefused as exc:
        await console.audit.write("signin", actor=f"oidc:{subject}", client_ip=ip, outcome="refused",
                                  detail={"method": "oidc", "reason": str(exc)})
        response = await render(request, "error.html", 403, status=403,
                                message=f"Sign-in with {oidc.config.name} refused.")
        response.delete_cookie(_cookie_name(console), path="/", secure=console.config.secure_cookies, httponly=True)
        return response
    token, _ = await console.sessions.create(account.id, ip, request.headers.get("user-agent", ""))
    await console.audit.write("signin", actor=account.principal, client_ip=ip,
                              detail={"method": "oidc", "groups": list(identity.groups)})
    # A page, not a redirect: the navigation came from the provider's site, and a SameSite=Strict cookie goes
    # with the next request only once the console's own page starts it.
    response = HTMLResponse('<!doctype html><meta http-equiv="refresh" content="0;url=/trace"><title>Signed in'
                            '</title><p>Signed in. <a href="/trace">Continue</a></p>')
    response.set_cookie(console.session_cookie, token, **console.cookie_options(console.session_seconds))
    response.delete_cookie(_cookie_name(console), path="/", secure=console.config.secure_cookies, httponly=True)
    return response
