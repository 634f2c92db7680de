"""OpenID Connect sign-in in a real browser (Playwright driving Debian's chromium): `mailmoat run console`
configured for a minimal provider on loopback (tests/support/oidcprovider.py); the button on the sign-in page,
the provider's redirect back, the console's own session; an ID token with the wrong nonce refused."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.support.browser import CHROMIUM, SCREENSHOTS
from tests.support.console import fresh_database, running_console
from tests.support.oidcprovider import Behaviour, OidcProvider, provider_in_thread

pytestmark = pytest.mark.e2e
playwright_sync = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (/usr/bin/chromium): apt-get install chromium "
                "(scripts/setup.sh --test)", allow_module_level=True)


@pytest.fixture(scope="module")
def provider() -> Iterator[OidcProvider]:
    with provider_in_thread() as idp:
        yield idp


@pytest.fixture(scope="module")
def console(database_url: str, provider: OidcProvider) -> Iterator[str]:
    env = {"MAILMOAT_CONSOLE_OIDC_ISSUER": provider.issuer, "MAILMOAT_CONSOLE_OIDC_CLIENT_ID": provider.client_id,
           "MAILMOAT_CONSOLE_OIDC_CLIENT_SECRET": provider.client_secret, "MAILMOAT_CONSOLE_OIDC_NAME": "Test IdP",
           "MAILMOAT_CONSOLE_OIDC_ROLES": "mail-admins=admin,helpdesk=helpdesk", "MAILMOAT_CONSOLE_DIGEST_CHECK": "0"}
    with fresh_database(database_url, "console_oidc") as url, running_console(url, env) as (console_url, _):
        yield console_url


def test_sign_in_with_the_provider(console: str, provider: OidcProvider, browser) -> None:
    sub = f"ann-{uuid.uuid4().hex[:6]}"
    provider.behaviour = Behaviour(claims={"sub": sub, "email": "ann@example.org", "email_verified": True,
                                           "groups": ["helpdesk"]})
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{console}/signin")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "console-signin-oidc.png"), full_page=True)
    page.get_by_role("link", name="Sign in with Test IdP").click()
    page.wait_for_url(f"{console}/trace*", timeout=15_000)
    assert f"oidc:{sub}" in page.content()
    me = page.request.get(f"{console}/api/me").json()
    assert (me["name"], me["role"]) == (f"oidc:{sub}", "helpdesk")
    context.close()


def test_a_wrong_nonce_is_refused_in_the_browser(console: str, provider: OidcProvider, browser) -> None:
    provider.behaviour = Behaviour(claims={"sub": f"eve-{uuid.uuid4().hex[:6]}", "groups": ["mail-admins"]},
                                   wrong_nonce=True)
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{console}/signin")
    with page.expect_response(lambda r: "/signin/oidc/callback" in r.url) as answer:
        page.get_by_role("link", name="Sign in with Test IdP").click()
    assert answer.value.status == 403
    assert "Sign-in with Test IdP refused" in page.content()
    page.goto(f"{console}/trace")
    assert page.url.startswith(f"{console}/signin")
    context.close()
