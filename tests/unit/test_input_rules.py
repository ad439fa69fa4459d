"""What the edge refuses before anything touches a database: integers that are not ASCII
digits, identifiers with a trailing newline or NUL, nesting past MAX_DEPTH, unstorable
strings, malformed notify_url hosts. Pure; tests/e2e/test_hostile_input.py sends the same
input to the running stack."""

from __future__ import annotations

import json
from typing import Any

import pytest

from paxkit.errors import InvalidInput
from paxkit.notify import host_allowed
from paxkit.requests_json import MAX_DEPTH, may_be_unfit, unfit
from paxkit.validation import (
    GTID_PATTERN,
    ID_PATTERN,
    SKU_PATTERN,
    validate_limit,
    validate_user_id,
)
from services.order.domain import parse_order_request

# Digits str.isdigit() accepts besides 0-9: superscript two, circled one, Arabic-Indic three,
# fullwidth seven; and ASCII digits with a trailing newline or a NUL.
NOT_ASCII_INTEGERS = ["²", "①", "٣", "\uff17", "1\n", "1\x00", "", " 1", "+1", "1.0"]


@pytest.mark.parametrize("raw", NOT_ASCII_INTEGERS)
def test_integers_from_paths_and_queries_are_ascii_digits_only(raw):
    with pytest.raises(InvalidInput) as user:
        validate_user_id(raw)
    assert user.value.extra["field"] == "user_id"
    with pytest.raises(InvalidInput) as limit:
        validate_limit(raw, 10, 100)
    assert limit.value.extra["field"] == "limit"


def test_ascii_integers_are_taken():
    assert validate_user_id("0042") == 42
    assert validate_limit("100", 10, 100) == 100
    assert validate_limit(None, 10, 100) == 10
    with pytest.raises(InvalidInput):
        validate_limit("101", 10, 100)


@pytest.mark.parametrize("pattern", [SKU_PATTERN, ID_PATTERN, GTID_PATTERN])
@pytest.mark.parametrize("value", ["SKU-0001\n", "SKU\x00", "SKU-①", "SKU-²"])
def test_identifier_patterns_are_ascii_to_the_very_end(pattern, value):
    assert pattern.match(value) is None


def nested(depth: int) -> Any:
    """`depth` containers inside each other, objects and lists in turn."""
    value: Any = 1
    for level in range(depth):
        value = [value] if level % 2 else {"a": value}
    return value


def test_nesting_is_bounded():
    assert unfit(nested(MAX_DEPTH)) is None
    assert unfit(nested(MAX_DEPTH + 1)) == f"The body nests deeper than {MAX_DEPTH} levels."


@pytest.mark.parametrize(
    "body",
    [
        {"user_id": "\ud800"},
        {"items": [{"sku": "SKU-\udfff"}]},
        {"\ud83d": 1},
        {"items": [{"sku\x00": 1}]},
        {"notify_url": "http://127.0.0.1/\x00"},
    ],
)
def test_unstorable_strings_and_field_names_are_refused(body):
    assert unfit(body) is not None


@pytest.mark.parametrize(
    "raw",
    [
        b'{"user_id": 7, "items": [{"sku": "SKU-0003", "qty": 2}], "mode": "tcc"}',
        b'{"note": "[[[[{{{{ brackets in a string are counted, harmlessly"}',
        b'{"a": "\\\\u0000 is an escaped backslash, then plain text"}',
    ],
)
def test_plain_ascii_bodies_skip_the_walk_only_when_fit(raw):
    assert unfit(json.loads(raw)) is None
    assert may_be_unfit(raw) is (raw.count(b"[") + raw.count(b"{") > MAX_DEPTH or b"\\u" in raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": "\\u0000"}',
        b'{"\\ud800": 1}',
        '{"a": "caf\u00e9 is not ASCII"}'.encode(),
        b'{"a": "\xed\xa0\x80"}',
        '{"a": 1}'.encode("utf-16"),
        b'{"a": ' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1),
    ],
)
def test_bodies_that_may_be_unfit_are_walked(raw):
    assert may_be_unfit(raw)


def test_paired_surrogates_are_plain_characters():
    body = json.loads('{"note": "\\ud83d\\ude00"}')
    assert body == {"note": "😀"}
    assert unfit(body) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1/x",
        "http://[::1",
        "http://[127.0.0.1]/x",
        "http://127.0.0.1:99999/",
        "http://127.0.0.1:abc/",
        "http://127.0.0.1:²/",
        "http://127.0.0.1/\n",
        "http://127.0.0.1/a b",
    ],
)
def test_malformed_notify_urls_name_the_field(url):
    body = {"user_id": 7, "items": [{"sku": "SKU-0001", "qty": 1}], "notify_url": url}
    with pytest.raises(InvalidInput) as err:
        parse_order_request(body)
    assert err.value.extra["field"] == "notify_url"


def test_a_stored_url_with_a_malformed_host_is_not_allowed():
    assert host_allowed("http://[::1/x", ("::1",)) is False
