"""End users' credentials: the salted password hashes of the order service's customers.

The gateway logs users in through `POST /credentials/check` (an internal route, so only
with the stack's service credential); the hash never leaves this service. An unknown
user costs the same bcrypt check as a known one with a wrong password, so timing tells
nothing about who exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import bcrypt

from paxkit.db import Database
from paxkit.errors import InvalidCredentials, InvalidInput
from paxkit.validation import validate_positive_int

MAX_PASSWORD_BYTES = 72  # what bcrypt reads of a password; a longer one is refused
# Checked against when the user is unknown (cost 4, as the development seed's hashes).
_DECOY_HASH = b"$2b$04$58Gz.iDxlsXYElyWa7n3BeE9jbGQSH0iTjHTAY5IBHrvRlUp9BoFa"


@dataclass(frozen=True)
class Login:
    user_id: int
    password: str


def parse_login(body: dict[str, Any]) -> Login:
    user_id = validate_positive_int(body.get("user_id"), "user_id")
    password = body.get("password")
    if not isinstance(password, str) or not password:
        raise InvalidInput("password", "password must be a non-empty string")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise InvalidInput("password", f"password must be at most {MAX_PASSWORD_BYTES} bytes")
    return Login(user_id, password)


def hash_password(password: str, rounds: int = 12) -> str:
    """A salted bcrypt hash, for setting a password."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


class Credentials:
    def __init__(self, db: Database) -> None:
        self.db = db

    def check(self, login: Login) -> int:
        """The user's id when the password matches; InvalidCredentials otherwise."""
        row = self.db.fetch_one(
            "SELECT password_hash FROM customers WHERE user_id = :user_id", user_id=login.user_id
        )
        stored = row["password_hash"] if row is not None else None
        hashed = stored.encode() if isinstance(stored, str) else _DECOY_HASH
        try:
            ok = bcrypt.checkpw(login.password.encode(), hashed) and stored is not None
        except ValueError:  # a malformed stored hash matches nothing
            ok = False
        if not ok:
            raise InvalidCredentials("Unknown user or wrong password.")
        return login.user_id
