"""OpenID Connect sign-in, pure parts: settings, claims to role and mailboxes, the ID token's checks."""

from __future__ import annotations

import time

import pytest
from joserfc.jwk import KeySet

from mailmoat_console.oidc import OidcClient, OidcConfig, OidcRefused, Pending, identity_from_claims, parse_roles
from mailmoat_console.rights import Role
from tests.support.oidcprovider import Behaviour, OidcProvider

CONFIG = OidcConfig(issuer="https://idp.example", client_id="console", client_secret="s", name="IdP",
                    roles={"mail-admins": Role.admin, "helpdesk": Role.helpdesk, "staff": Role.user})


def test_settings_from_the_environment(tmp_path):
    assert OidcConfig.from_env({}) is None
    secret = tmp_path / "secret"
    secret.write_text("from a file\n")
    config = OidcConfig.from_env({"MAILMOAT_CONSOLE_OIDC_ISSUER": "https://login.example.com/realms/x",
                                  "MAILMOAT_CONSOLE_OIDC_CLIENT_ID": "console",
                                  "MAILMOAT_CONSOLE_OIDC_CLIENT_SECRET_FILE": str(secret),
                                  "MAILMOAT_CONSOLE_OIDC_ROLES": "mail-admins=admin, helpdesk=helpdesk"})
    assert config is not None and config.client_secret == "from a file" and config.name == "login.example.com"
    assert config.groups_claim == "groups" and config.roles == {"mail-admins": Role.admin, "helpdesk": Role.helpdesk}
    with pytest.raises(ValueError, match="CLIENT_ID"):
        OidcConfig.from_env({"MAILMOAT_CONSOLE_OIDC_ISSUER": "https://idp.example"})


@pytest.mark.parametrize("text", ["admins", "admins=root", "=admin"])
def test_a_bad_role_mapping_is_refused(text):
    with pytest.raises(ValueError, match="MAILMOAT_CONSOLE_OIDC_ROLES"):
        parse_roles(text)


def test_cn_style_group_names_keep_their_equals_signs():
    assert parse_roles("cn=mail-admins=admin") == {"cn=mail-admins": Role.admin}


def test_the_highest_mapped_group_wins_and_the_verified_email_is_the_mailbox():
    who = identity_from_claims({"sub": "u1", "groups": ["staff", "mail-admins", "other"], "email": "A@Example.org",
                                "email_verified": True}, CONFIG)
    assert (who.role, who.addresses, who.account_name) == (Role.admin, ("a@example.org",), "oidc:u1")
    assert identity_from_claims({"sub": "u2", "groups": "helpdesk"}, CONFIG).role == Role.helpdesk


def test_no_mapped_group_makes_an_end_user_of_a_verified_email_only():
    who = identity_from_claims({"sub": "u3", "email": "b@example.org", "email_verified": True}, CONFIG)
    assert (who.role, who.addresses) == (Role.user, ("b@example.org",))
    with pytest.raises(OidcRefused, match="no group"):
        identity_from_claims({"sub": "u4", "email": "b@example.org", "email_verified": False}, CONFIG)
    with pytest.raises(OidcRefused, match="no group"):
        identity_from_claims({"sub": "u5", "groups": ["unmapped"]}, CONFIG)
    unverified = identity_from_claims({"sub": "u6", "groups": ["staff"], "email": "c@example.org"}, CONFIG)
    assert unverified.addresses == ()


@pytest.mark.parametrize("sub", [None, "", "has space", "x" * 191, 42])
def test_an_unusable_subject_is_refused(sub):
    with pytest.raises(OidcRefused, match="subject"):
        identity_from_claims({"sub": sub, "groups": ["mail-admins"]}, CONFIG)


def test_a_groups_claim_by_another_name():
    config = OidcConfig("https://idp.example", "console", "s", "IdP", groups_claim="roles", roles={"ops": Role.admin})
    assert identity_from_claims({"sub": "u", "roles": ["ops"]}, config).role == Role.admin


@pytest.fixture
def signed():
    """An OidcClient whose provider's document and keys are already known, and the provider making tokens."""
    provider = OidcProvider()
    provider.issuer = "https://idp.example"
    client = OidcClient(OidcConfig(provider.issuer, provider.client_id, provider.client_secret, "IdP"))
    client._discovery = {"issuer": provider.issuer}
    client._fetched = time.time()
    client._keys = KeySet([provider.key])

    async def no_refetch(refresh: bool = False) -> KeySet:
        return client._keys
    client.keys = no_refetch  # type: ignore[method-assign]
    return client, provider


async def test_a_good_id_token_verifies(signed):
    client, provider = signed
    provider.behaviour = Behaviour(claims={"sub": "u1"})
    claims = await client.verify(provider.id_token("n1"), "n1")
    assert claims["sub"] == "u1" and claims["nonce"] == "n1"


@pytest.mark.parametrize(("knob", "why"), [("tamper", "BadSignature"), ("foreign_key", "BadSignature"),
                                           ("expired", "ExpiredToken"), ("wrong_nonce", "nonce")])
async def test_a_bad_id_token_is_refused(signed, knob, why):
    client, provider = signed
    provider.behaviour = Behaviour(claims={"sub": "u1"}, **{knob: True})
    with pytest.raises(OidcRefused, match=why):
        await client.verify(provider.id_token("n1"), "n1")


async def test_another_audience_or_issuer_is_refused(signed):
    client, provider = signed
    provider.behaviour = Behaviour(claims={"sub": "u1", "aud": "another-client"})
    with pytest.raises(OidcRefused, match="aud"):
        await client.verify(provider.id_token("n1"), "n1")
    provider.behaviour = Behaviour(claims={"sub": "u1", "iss": "https://evil.example"})
    with pytest.raises(OidcRefused, match="iss"):
        await client.verify(provider.id_token("n1"), "n1")


async def test_the_authorization_url_carries_pkce_state_and_nonce(signed):
    client, _ = signed
    client._discovery["authorization_endpoint"] = "https://idp.example/auth"
    pending = Pending.new()
    url = await client.authorization_url(pending, "https://console.example/signin/oidc/callback")
    assert f"state={pending.state}" in url and f"nonce={pending.nonce}" in url
    assert "code_challenge_method=S256" in url and pending.verifier not in url


async def test_the_sign_in_page_offers_the_provider_only_when_configured(monkeypatch):
    from tests.unit.test_console_app import client, console

    for name in ("ISSUER", "CLIENT_ID", "CLIENT_SECRET", "CLIENT_SECRET_FILE"):
        monkeypatch.delenv(f"MAILMOAT_CONSOLE_OIDC_{name}", raising=False)
    async with client(console(None)[0]) as http:
        page = await http.get("/signin")
        assert page.status_code == 200 and "Sign in with" not in page.text
        assert (await http.get("/signin/oidc")).status_code == 404
        assert (await http.get("/signin/oidc/callback?code=x&state=y")).status_code == 404
    monkeypatch.setenv("MAILMOAT_CONSOLE_OIDC_ISSUER", "https://login.example.com")
    monkeypatch.setenv("MAILMOAT_CONSOLE_OIDC_CLIENT_ID", "console")
    monkeypatch.setenv("MAILMOAT_CONSOLE_OIDC_CLIENT_SECRET", "s")
    monkeypatch.setenv("MAILMOAT_CONSOLE_OIDC_NAME", "Example <SSO>")
    async with client(console(None)[0]) as http:
        page = await http.get("/signin")
        assert 'href="/signin/oidc"' in page.text and "Sign in with Example &lt;SSO&gt;" in page.text
        assert "<script" not in page.text
