"""Short-lived signed bearer tokens (JWT, HS256) naming one subject.

The signer holds the HMAC key from configuration; a token carries its subject (`sub`), when
it was issued (`iat`), when it expires (`exp`), its issuer and audience, and a random id
(`jti`). Verifying checks the signature, the algorithm (only HS256: a token that names
another, `none` included, is invalid), the issuer, the audience and the expiry, with no
leeway beyond `leeway_s`. An expired token is told apart from an invalid one, so a client
knows to log in again rather than that it sent garbage.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field

import jwt

from paxkit.errors import TokenExpired, TokenInvalid

ALGORITHM = "HS256"
DEFAULT_TTL_S = 900.0
REQUIRED_CLAIMS = ("sub", "exp", "iat", "iss", "aud")


Claims = tuple[str, float]  # what a token says: its subject, and when it expires


@dataclass(frozen=True)
class Issued:
    """A freshly signed token: its subject, when it expires and how long it lived."""

    token: str
    claims: Claims
    ttl_s: float

    @property
    def subject(self) -> str:
        return self.claims[0]

    @property
    def expires_at(self) -> float:
        return self.claims[1]


@dataclass(frozen=True)
class TokenSigner:
    """Issues and verifies the tokens of one issuer and audience under one HMAC key (which
    no repr shows)."""

    key: str = field(repr=False)
    ttl_s: float = DEFAULT_TTL_S
    _: KW_ONLY
    issuer: str
    audience: str
    leeway_s: float = 0.0
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("a token signer needs a non-empty key")
        if self.ttl_s <= 0:
            raise ValueError(f"token lifetime must be positive, not {self.ttl_s}")

    def issue(self, subject: str) -> Issued:
        now = int(self.clock())
        expires_at = now + self.ttl_s
        claims = {
            "sub": subject,
            "iat": now,
            "exp": int(expires_at),
            "iss": self.issuer,
            "aud": self.audience,
            "jti": secrets.token_hex(8),
        }
        token = jwt.encode(claims, self.key, algorithm=ALGORITHM)
        return Issued(token, (subject, float(int(expires_at))), self.ttl_s)

    def verify(self, token: str) -> Claims:
        """The token's subject and expiry; TokenExpired or TokenInvalid (never the token in
        a message)."""
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError as err:
            raise TokenExpired("The token has expired; log in again.") from err
        except jwt.PyJWTError as err:
            raise TokenInvalid(f"The bearer token is not valid ({type(err).__name__}).") from err
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise TokenInvalid("The bearer token names no subject.")
        if claims["exp"] <= self.clock() - self.leeway_s:  # PyJWT reads its own clock
            raise TokenExpired("The token has expired; log in again.")
        return subject, float(claims["exp"])


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None when there is none."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
