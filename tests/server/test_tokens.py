"""Tokens: minted from an API key, scoped to apps, expiring, refused when tampered with."""

from __future__ import annotations

import base64
import json

import pytest

from server.cli import main
from server.tokens import (
    CLOCK_SKEW_S,
    TokenError,
    TokenVerifier,
    key_id,
    mint_token,
)

KEY = "test-api-key"
NOW = 1_700_000_000.0


def verifier(*keys: str, max_ttl_s: float = 3600.0) -> TokenVerifier:
    return TokenVerifier(keys or (KEY,), max_ttl_s)


def claims_of(token: str) -> dict[str, object]:
    part = token.split(".")[1]
    loaded: dict[str, object] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return loaded


def forge(header: object, claims: object, signature: bytes = b"sig") -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return ".".join(
        [b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), b64(signature)]
    )


def test_a_minted_token_is_an_hs256_jwt_naming_its_apps_and_key():
    token = mint_token(KEY, ["fal-ai/fast-lcm-diffusion", "/other/"], ttl_s=120, now=NOW)

    grant = verifier().verify(token, NOW + 119)
    assert grant.apps == ("fal-ai/fast-lcm-diffusion", "other")
    assert (grant.issued_at, grant.expires_at) == (NOW, NOW + 120)
    assert grant.key_id == key_id(KEY) and KEY not in token
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "HS256", "kid": key_id(KEY), "typ": "JWT"}


def test_a_token_expires():
    token = mint_token(KEY, ["*"], ttl_s=120, now=NOW)
    with pytest.raises(TokenError, match="expired 1 s ago") as refused:
        verifier().verify(token, NOW + 121)
    assert refused.value.status == 401


def test_any_of_the_servers_keys_verifies_its_own_tokens_only():
    tokens = [mint_token(key, ["*"], now=NOW) for key in ("one", "two")]
    both = verifier("one", "two")
    assert [both.verify(token, NOW).key_id for token in tokens] == [key_id("one"), key_id("two")]
    with pytest.raises(TokenError, match="wrong or revoked API key"):
        verifier("one").verify(tokens[1], NOW)


def test_a_tampered_token_does_not_verify():
    header, claims, signature = mint_token(KEY, ["sketch"], now=NOW).split(".")
    wider = forge(
        {"alg": "HS256", "kid": key_id(KEY), "typ": "JWT"},
        {**claims_of(f"x.{claims}"), "apps": ["*"]},
    )
    with pytest.raises(TokenError, match="signature"):
        verifier().verify(f"{wider.rsplit('.', 1)[0]}.{signature}", NOW)


@pytest.mark.parametrize(
    ("token", "mention"),
    [
        ("x" * 5000, "over 4096"),
        ("a.b", "three dot-separated parts"),
        ("!!.!!.!!", "does not decode"),
        (forge({"alg": "none", "kid": "k"}, {}), "must be an HS256 JWT"),
        (forge(["alg"], {}), "must be an HS256 JWT"),
        (forge({"alg": "HS256"}, {}), "no key id"),
        (forge({"alg": "HS256", "kid": "k"}, ["apps"]), "no key id"),
        (forge({"alg": "HS256", "kid": "k"}, {"apps": [], "iat": 1, "exp": 2}), "no 'apps'"),
        (forge({"alg": "HS256", "kid": "k"}, {"apps": [1], "iat": 1, "exp": 2}), "no 'apps'"),
        (forge({"alg": "HS256", "kid": "k"}, {"apps": ["a"], "iat": 1.5, "exp": 2}), "integer"),
        (forge({"alg": "HS256", "kid": "k"}, {"apps": ["a"], "iat": True, "exp": 2}), "integer"),
    ],
)
def test_a_malformed_token_is_refused_with_words(token, mention):
    with pytest.raises(TokenError) as refused:
        verifier().verify(token, NOW)
    assert mention in str(refused.value)


def test_a_token_from_the_future_or_living_too_long_is_refused():
    early = mint_token(KEY, ["*"], now=NOW + CLOCK_SKEW_S + 10)
    with pytest.raises(TokenError, match="issued in the future"):
        verifier().verify(early, NOW)
    assert verifier().verify(mint_token(KEY, ["*"], now=NOW + 30), NOW)  # within the skew

    long_lived = mint_token(KEY, ["*"], ttl_s=7200, now=NOW)
    with pytest.raises(TokenError, match="at most 3600 s"):
        verifier().verify(long_lived, NOW)


@pytest.mark.parametrize(
    ("key", "apps", "ttl_s", "mention"),
    [
        ("", ["a"], 10, "API key is needed"),
        (KEY, [], 10, "at least one app"),
        (KEY, [" / "], 10, "cannot be empty"),
        (KEY, ["a"], 0, "must be positive"),
    ],
)
def test_minting_refuses_what_could_never_be_used(key, apps, ttl_s, mention):
    with pytest.raises(ValueError, match=mention):
        mint_token(key, apps, ttl_s)


def test_api_keys_are_recognised_and_nothing_else():
    keys = verifier("one", "two")
    assert keys.is_api_key("two") and not keys.is_api_key("three")
    assert not TokenVerifier([], 60) and keys


def test_livegen_token_prints_a_token_from_the_environments_key(monkeypatch, capsys):
    monkeypatch.setenv("LIVEGEN_API_KEY", KEY)
    assert (
        main(["token", "--app", "fal-ai/fast-lcm-diffusion", "--app", "sketch", "--ttl-s", "60"])
        == 0
    )
    token = capsys.readouterr().out.strip()

    grant = verifier().verify(token, float(claims_of(token)["iat"]))  # type: ignore[arg-type]
    assert grant.apps == ("fal-ai/fast-lcm-diffusion", "sketch")
    assert grant.expires_at - grant.issued_at == 60


def test_livegen_token_without_a_key_or_with_a_bad_lifetime_says_why(monkeypatch, capsys):
    monkeypatch.delenv("LIVEGEN_API_KEY", raising=False)
    assert main(["token", "--app", "sketch"]) == 2
    assert "set LIVEGEN_API_KEY" in capsys.readouterr().err
    assert main(["token", "--app", "sketch", "--api-key", KEY, "--ttl-s", "-1"]) == 2
    assert "must be positive" in capsys.readouterr().err
