"""Credentials: enrollment codes, agent tokens and analyst tokens.

All three are random with at least 100 bits of entropy, so a plain SHA-256 is the right
hash to store (a slow password hash protects guessable secrets; these are not guessable).
The store is searched by the hash of what the caller sent: an attacker who times that
lookup learns about a hash he cannot steer, not about a stored secret. Where plaintext
tokens are compared (analyst tokens from the configuration), ``hmac.compare_digest``
keeps the comparison constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from typing import Final

_CODE_ALPHABET: Final = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I: codes are typed
_CODE_GROUPS: Final = 5
_CODE_GROUP_LEN: Final = 5  # 25 symbols of 5 bits: 125 bits

AGENT_TOKEN_PREFIX: Final = "fwt_"
ANALYST_TOKEN_PREFIX: Final = "fwa_"


def hash_secret(secret: str) -> str:
    """The hex SHA-256 of a high-entropy secret, as stored."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_enroll_code() -> str:
    """A code a volunteer can type, like ``K7QX2-M9PRT-...``."""
    groups = (
        "".join(secrets.choice(_CODE_ALPHABET) for _ in range(_CODE_GROUP_LEN))
        for _ in range(_CODE_GROUPS)
    )
    return "-".join(groups)


def normalize_enroll_code(code: str) -> str:
    """The canonical form of a typed code: upper case, no dashes or spaces."""
    return "".join(ch for ch in code.upper() if ch not in "- \t")


def hash_enroll_code(code: str) -> str:
    return hash_secret(normalize_enroll_code(code))


def new_agent_id() -> str:
    return "ag-" + secrets.token_hex(8)


def new_agent_token() -> str:
    return AGENT_TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_analyst_token() -> str:
    return ANALYST_TOKEN_PREFIX + secrets.token_urlsafe(32)


def matches_any(candidate: str, tokens: Iterable[str]) -> bool:
    """Whether ``candidate`` equals one of ``tokens``, compared in constant time each."""
    cand = candidate.encode("utf-8")
    found = False
    for token in tokens:
        # No early exit: the time taken does not depend on which token matched.
        found |= hmac.compare_digest(cand, token.encode("utf-8"))
    return found


def bearer_token(header: str | None) -> str | None:
    """The token in an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 256:
        return None
    return token
