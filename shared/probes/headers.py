"""Which response headers are common, which are worth keeping, which are never kept."""

from __future__ import annotations

from typing import Final

# OONI's list of headers most servers send: a match on these says little about whether
# two responses came from the same server, a match on any other header says a lot.
COMMON_SERVER_HEADERS: Final = frozenset(
    {
        "date",
        "content-type",
        "server",
        "cache-control",
        "vary",
        "set-cookie",
        "location",
        "expires",
        "x-powered-by",
        "content-encoding",
        "last-modified",
        "accept-ranges",
        "pragma",
        "x-frame-options",
        "etag",
        "x-content-type-options",
        "age",
        "via",
        "p3p",
        "x-xss-protection",
        "content-language",
        "cf-ray",
        "strict-transport-security",
        "link",
        "x-varnish",
    }
)
# Common headers that still tell a middlebox or blockpage apart.
HEADERS_OF_NOTE: Final = frozenset(
    {"server", "location", "content-type", "via", "x-powered-by", "content-length"}
)
# Headers that exist to carry the client's address or secrets: never recorded.
NEVER_RECORDED: Final = frozenset(
    {
        "set-cookie",
        "cookie",
        "authorization",
        "x-forwarded-for",
        "x-real-ip",
        "x-client-ip",
        "x-originating-ip",
        "forwarded",
        "true-client-ip",
        "cf-connecting-ip",
        "x-cluster-client-ip",
    }
)
