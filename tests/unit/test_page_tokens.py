"""Page tokens are signed, bound to their scope, and no input makes decoding fail otherwise."""

from __future__ import annotations

import base64
import json
import random

import pytest

from shared.errors import InvalidArgument
from shared.listing import (
    PageTokenKeys,
    decode_page_token,
    encode_page_token,
    page_scope,
    use_page_token_keys,
)
from shared.settings import ServiceSettings

KEYS = PageTokenKeys.from_setting("a-page-token-secret-of-this-deployment")
SCOPE = page_scope("configs", "tenant-a", 'name = "x"')


def refusal(token: str, scope: str = SCOPE, keys: PageTokenKeys = KEYS) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(token, scope, keys=keys)
    [violation] = caught.value.violations
    assert violation.field == "page_token"
    return caught.value


def test_a_token_round_trips_under_the_same_keys() -> None:
    token = encode_page_token(["cfg-9", 12], SCOPE, KEYS)
    assert decode_page_token(token, SCOPE, keys=KEYS) == ["cfg-9", 12]
    assert decode_page_token("", SCOPE, keys=KEYS) == []


def test_a_token_signed_with_another_key_is_refused() -> None:
    other = PageTokenKeys.from_setting("some-other-deployments-secret")
    token = encode_page_token(["cfg-9"], SCOPE, other)
    assert refusal(token).reason == "INVALID_PAGE_TOKEN"


def test_an_altered_position_is_refused() -> None:
    token = encode_page_token(["cfg-1"], SCOPE, KEYS)
    payload, mac = token.split(".")
    forged = json.dumps({"a": [[1]], "s": SCOPE}, separators=(",", ":")).encode()
    encoded = base64.urlsafe_b64encode(forged).decode().rstrip("=")
    assert refusal(f"{encoded}.{mac}").reason == "INVALID_PAGE_TOKEN"
    # The unsigned form tokens used to have is refused as well.
    assert refusal(encoded).reason == "INVALID_PAGE_TOKEN"
    assert payload != encoded


def test_a_token_of_another_tenant_or_filter_is_a_mismatch() -> None:
    token = encode_page_token(["cfg-1"], SCOPE, KEYS)
    for scope in (
        page_scope("configs", "tenant-b", 'name = "x"'),
        page_scope("configs", "tenant-a", ""),
    ):
        assert refusal(token, scope).reason == "PAGE_TOKEN_MISMATCH"


def test_keys_rotate_new_first_old_still_verifying() -> None:
    old = PageTokenKeys.from_setting("the-old-secret-0123456789")
    rotating = PageTokenKeys.from_setting("the-new-secret-0123456789,the-old-secret-0123456789")
    issued_before = encode_page_token(["a"], SCOPE, old)
    assert decode_page_token(issued_before, SCOPE, keys=rotating) == ["a"]
    issued_after = encode_page_token(["b"], SCOPE, rotating)
    assert refusal(issued_after, keys=old).reason == "INVALID_PAGE_TOKEN"


def test_short_secrets_are_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        PageTokenKeys.from_setting("short")
    with pytest.raises(ValueError, match="at least 16"):
        ServiceSettings(page_token_key="short")


def test_the_default_key_is_derived_from_the_database_every_replica_shares() -> None:
    one = ServiceSettings(database_url="postgresql+psycopg://u:p@db/tandem").page_token_keys()
    two = ServiceSettings(database_url="postgresql+psycopg://u:p@db/tandem").page_token_keys()
    other = ServiceSettings(database_url="postgresql+psycopg://u:p@db/other").page_token_keys()
    token = encode_page_token(["x"], SCOPE, one)
    assert decode_page_token(token, SCOPE, keys=two) == ["x"]
    assert refusal(token, keys=other).reason == "INVALID_PAGE_TOKEN"
    configured = ServiceSettings(page_token_key="configured-secret-0123456789").page_token_keys()
    assert configured == PageTokenKeys.from_setting("configured-secret-0123456789")


def test_the_calls_keys_are_used_when_none_are_given() -> None:
    use_page_token_keys(KEYS)
    token = encode_page_token(["x"], SCOPE)
    assert decode_page_token(token, SCOPE, keys=KEYS) == ["x"]
    assert decode_page_token(token, SCOPE) == ["x"]


def test_no_input_makes_decoding_fail_other_than_invalid_argument() -> None:
    valid = encode_page_token(["cfg", 3], SCOPE, KEYS)
    shuffle = random.Random(13)
    candidates = [
        ".",
        "..",
        "a.b",
        "\x00",
        "é.é",
        "=" * 10,
        "a" * 5000,
        valid + "x",
        valid.replace(".", ""),
        valid[:-1],
        "." + valid,
    ]
    alphabet = "ABCxyz019-_.=+/\x00é"
    for _ in range(500):
        candidates.append("".join(shuffle.choice(alphabet) for _ in range(shuffle.randint(1, 80))))
    for _ in range(200):
        chars = list(valid)
        chars[shuffle.randrange(len(chars))] = shuffle.choice(alphabet)
        candidates.append("".join(chars))
    for token in candidates:
        if token == valid:
            continue
        with pytest.raises(InvalidArgument):
            decode_page_token(token, SCOPE, keys=KEYS)


def test_a_position_of_the_wrong_shape_is_refused_even_when_signed() -> None:
    token = encode_page_token(["not-a-number"], SCOPE, KEYS)
    with pytest.raises(InvalidArgument):
        decode_page_token(token, SCOPE, keys=KEYS, shape=(int,))
    with pytest.raises(InvalidArgument):
        decode_page_token(token, SCOPE, keys=KEYS, shape=(str, str))
    assert decode_page_token(token, SCOPE, keys=KEYS, shape=(str,)) == ["not-a-number"]
