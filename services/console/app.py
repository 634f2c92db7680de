"""The console's ASGI application: the API, the pages, the stylesheet, security headers and error pages."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlencode

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from mailmoat_platform import redisclient
from mailmoat_records.quarantine import QuarantineUnavailable

from . import api, blockpages, notifypages, oidcpages, operations, pages
from .core import Console, CsrfRefused, Forbidden, NotFound, SignInRequired, local_path

log = logging.getLogger(__name__)

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'none'; style-src 'self'; img-src 'self'; font-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
"""No script at all (inline or from anywhere), nothing loaded from elsewhere, never framed."""
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
NO_STORE = "no-store"
"""Pages and API answers hold mail data: never cached (the stylesheet may be)."""


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path == "/api"


async def _page_error(request: Request, status: int, message: str) -> Response:
    if _wants_json(request):
        return JSONResponse({"detail": message}, status_code=status)
    return await pages.render(request, "error.html", status, status=status, message=message)


def create_app(console: Console) -> FastAPI:
    app = FastAPI(title="mailmoat console", version="1", openapi_url="/api/openapi.json", docs_url=None,
                  redoc_url=None,
                  description="Message trace, quarantine, accounts and the audit log of the mailmoat gateway. "
                  "Sign in with POST /api/session; send the returned csrf_token as X-CSRF-Token with every change.")
    app.state.console = console
    app.include_router(api.router)
    app.include_router(pages.router)
    app.include_router(operations.api_router)
    app.include_router(operations.page_router)
    app.include_router(notifypages.router)
    app.include_router(blockpages.api_router)
    app.include_router(blockpages.page_router)
    app.include_router(oidcpages.router)
    app.state.oidc = oidcpages.client_from_env()  # None: no OpenID Connect sign-in
    app.mount("/static", StaticFiles(directory=str(Path(__file__).with_name("static"))), name="static")
    if "*" not in console.config.allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(console.config.allowed_hosts))

    @app.middleware("http")
    async def security_headers(request: Request, call_next) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.url.path.startswith("/static/"):
            response.headers["Cache-Control"] = "public, max-age=3600"
        else:
            response.headers["Cache-Control"] = NO_STORE
            response.headers["Pragma"] = "no-cache"
        if console.config.secure_cookies:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    @app.exception_handler(SignInRequired)
    async def sign_in_required(request: Request, exc: SignInRequired) -> Response:
        if _wants_json(request):
            return JSONResponse({"detail": "sign in first"}, status_code=401)
        back = local_path(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        if request.method != "GET" or back in (None, "/", "/trace"):  # the sign-in's own landing page
            return RedirectResponse("/signin", status_code=303)
        return RedirectResponse("/signin?" + urlencode({"next": back}), status_code=303)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        return await _page_error(request, 403, "Your account may not do this.")

    @app.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, exc: CsrfRefused) -> Response:
        return await _page_error(request, 403, "Refused: the request did not carry this session's CSRF token.")

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> Response:
        return await _page_error(request, 404, "Not found.")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if _wants_json(request):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        message = "Not found." if exc.status_code == 404 else str(exc.detail)
        return await pages.render(request, "error.html", exc.status_code, status=exc.status_code, message=message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        if _wants_json(request):
            return JSONResponse({"detail": jsonable_errors(exc)}, status_code=422)
        return await pages.render(request, "error.html", 422, status=422, message="The request was not valid.")

    @app.exception_handler(psycopg.DataError)
    @app.exception_handler(UnicodeEncodeError)
    async def unstorable(request: Request, exc: Exception) -> Response:
        """Text PostgreSQL cannot take (a NUL, a lone surrogate): the request is wrong, not the server."""
        return await _page_error(request, 400, "The request holds characters that cannot be looked up.")

    @app.exception_handler(QuarantineUnavailable)
    async def quarantine_unavailable(request: Request, exc: QuarantineUnavailable) -> Response:
        """The quarantine's database or the message bus a release goes through does not answer: nothing
        was released (a claim whose publish failed is undone)."""
        log.warning("console: the quarantine is unavailable: %s", exc)
        if _wants_json(request):
            return JSONResponse({"detail": "the quarantine is temporarily unavailable; nothing was changed"},
                                status_code=503, headers={"Retry-After": "5"})
        return Response("The quarantine is unavailable (database or message bus); nothing was changed. Try again "
                        "shortly.\n", status_code=503, media_type="text/plain", headers={"Retry-After": "5"})

    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(redisclient.ConnectionError)
    @app.exception_handler(redisclient.TimeoutError)
    async def unavailable(request: Request, exc: Exception) -> Response:
        log.warning("console: a backend is unavailable: %s: %s", type(exc).__name__, exc)
        if _wants_json(request):
            return JSONResponse({"detail": "temporarily unavailable"}, status_code=503, headers={"Retry-After": "5"})
        return Response("The console's database is unavailable; try again shortly.\n", status_code=503,
                        media_type="text/plain", headers={"Retry-After": "5"})

    return app


def jsonable_errors(exc: RequestValidationError) -> list[dict]:
    return [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()]
