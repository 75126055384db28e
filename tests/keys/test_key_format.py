"""Key format: what a key looks like, and what is refused offline."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from keyservice.security import (
    BASE62,
    RANDOM_LENGTH,
    Environment,
    KeyFormatError,
    generate_key,
    hash_key,
    key_hint,
    parse_key,
)


def test_key_shape_and_entropy() -> None:
    key = generate_key("ks", Environment.test)
    prefix, environment, body = key.split("_")
    assert (prefix, environment) == ("ks", "test")
    assert len(body) == RANDOM_LENGTH + 6
    assert set(body) <= set(BASE62)
    assert RANDOM_LENGTH * math.log2(62) >= 160
    assert parse_key(key, "ks").hash == hash_key(key)
    assert len({generate_key("ks", Environment.live) for _ in range(1000)}) == 1000


def test_hint_shows_prefix_environment_and_last_four() -> None:
    key = generate_key("ks", Environment.live)
    assert key_hint(key) == f"ks_live_…{key[-4:]}"


def _swap(key: str, index: int) -> str:
    replacement = "A" if key[index] != "A" else "B"
    return key[:index] + replacement + key[index + 1 :]


def test_every_single_character_typo_fails_the_checksum() -> None:
    key = generate_key("ks", Environment.live)
    for index in range(len("ks_live_"), len(key)):
        with pytest.raises(KeyFormatError):
            parse_key(_swap(key, index), "ks")


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda k: "xx" + k[2:], "unknown prefix"),
        (lambda k: k.replace("_live_", "_prod_"), "unknown environment"),
        (lambda k: k[:-1], "wrong length"),
        (lambda k: k + "a", "wrong length"),
        (lambda k: k[:10] + "-" + k[11:], "invalid character"),
        (lambda k: k[:-6] + "000000", "bad checksum"),
        (lambda k: k.replace("_", "-"), "expected prefix_environment_secret"),
        (lambda k: k * 3, "too long"),
        (lambda k: " " + k, "surrounding whitespace"),
        (lambda k: k + "\n", "surrounding whitespace"),
        (lambda k: f'"{k}"', "wrapped in quotes"),
        (lambda k: f"'{k}'", "wrapped in quotes"),
        (lambda k: f"\u201c{k}\u201d", "wrapped in quotes"),
        (lambda k: f'"{k}', "starts or ends with a quote"),
        (lambda k: f"{k}`", "starts or ends with a quote"),
        (lambda k: " " * 100 + k, "surrounding whitespace"),
        (lambda k: "Bearer " + k, "contains whitespace"),
    ],
)
def test_malformed_keys_are_refused_with_a_reason(
    mutate: Callable[[str], str], reason: str
) -> None:
    key = generate_key("ks", Environment.live)
    with pytest.raises(KeyFormatError, match=reason) as error:
        parse_key(mutate(key), "ks")
    assert key[8:-6] not in str(error.value)
