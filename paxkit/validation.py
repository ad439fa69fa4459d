"""Field validators shared by every edge that accepts identifiers from clients.

Patterns are ASCII and anchored at the very end (`$` would also accept a trailing
newline); integers from paths and query strings are ASCII digits only (`str.isdigit` and
`int` also take superscripts, circled numbers and the digits of other scripts).
"""

from __future__ import annotations

import re
from typing import Any

from paxkit.errors import InvalidInput

SKU_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
MAX_INT = 2**31 - 1
GTID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,120}\Z")
ASCII_DIGITS = re.compile(r"^[0-9]{1,10}\Z")


def validate_sku(value: Any, field: str) -> str:
    if not isinstance(value, str) or not SKU_PATTERN.match(value):
        raise InvalidInput(field, "must be a SKU such as 'SKU-0001'")
    return value


def validate_positive_int(value: Any, field: str, maximum: int = MAX_INT) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise InvalidInput(field, f"must be an integer from 1 to {maximum}")
    return value


def parse_int_arg(raw: str, field: str, maximum: int) -> int:
    """An integer from 1 to `maximum` written in a path segment or a query argument."""
    if not ASCII_DIGITS.match(raw) or not 1 <= int(raw) <= maximum:
        raise InvalidInput(field, f"{field} must be an integer from 1 to {maximum}")
    return int(raw)


def validate_user_id(raw: str) -> int:
    """A user id from a URL path segment."""
    return parse_int_arg(raw, "user_id", MAX_INT)


def validate_limit(raw: str | None, default: int, maximum: int) -> int:
    """The `limit` query argument of a list route."""
    return default if raw is None else parse_int_arg(raw, "limit", maximum)


def validate_gtid(value: Any) -> str:
    """A global transaction id: also used inside prepared-transaction ids, so kept plain."""
    if not isinstance(value, str) or not GTID_PATTERN.match(value):
        raise InvalidInput("gtid", "gtid must be 1-120 characters of [A-Za-z0-9_.-]")
    return value
