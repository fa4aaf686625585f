"""Realistic measurements for the ingest benchmark: every step's facts filled in, about
800 bytes each in msgpack, a mix of verdicts like a censored country produces."""

from __future__ import annotations

import random
import uuid
from typing import Any

from shared.codec import encode
from shared.schema import (
    SCHEMA_VERSION,
    decode_measurement,
    encode_batch,
    encode_measurement,
    new_measurement_id,
)

_SITES = [
    ("https://www.facebook.com/", "www.facebook.com", "157.240.1.35"),
    ("https://twitter.com/", "twitter.com", "104.244.42.1"),
    ("http://www.bbc.com/persian", "www.bbc.com", "151.101.0.81"),
    ("https://en.wikipedia.org/", "en.wikipedia.org", "185.15.58.224"),
    ("https://www.youtube.com/", "www.youtube.com", "142.250.185.78"),
    ("https://telegram.org/", "telegram.org", "149.154.167.99"),
]
_NETWORKS = [
    {"asn": 58224, "cc": "IR", "network_name": "TCI"},
    {"asn": 31549, "cc": "IR", "network_name": "Shatel"},
    {"asn": 44244, "cc": "IR", "network_name": "Irancell"},
]


def _control(domain: str, address: str, url: str) -> dict[str, Any]:
    return {
        "dns": {"answers": [address], "rcode": "NOERROR"},
        "http": {"status": 200, "body_length": 48213, "title": "Welcome"},
        "failure": None,
    }


def measurement(rng: random.Random, measured_at: float) -> dict[str, Any]:
    """One measurement as an agent sends it."""
    url, domain, address = rng.choice(_SITES)
    network = rng.choice(_NETWORKS)
    blocked = rng.random() < 0.7
    dns_answers = ["10.10.34.34"] if blocked and rng.random() < 0.5 else [address]
    tls_failure = "connection_reset" if blocked else None
    http: dict[str, Any] = {
        "url": url,
        "status": None if blocked else 200,
        "body_length": None if blocked else 48000 + rng.randrange(2000),
        "title": None if blocked else "Welcome",
        "headers": {} if blocked else {"server": "nginx", "content-type": "text/html"},
        "redirects": 0,
        "failure": "connection_reset" if blocked else None,
    }
    return {
        "id": new_measurement_id(measured_at, rng),
        "measured_at": measured_at,
        "url": url,
        "domain": domain,
        "blocking": "tls" if blocked else "ok",
        "accessible": not blocked,
        "network": network,
        "failure": tls_failure,
        "clock_age_s": 12.5,
        "dns": {
            "resolver": "system",
            "query": domain,
            "answers": dns_answers,
            "rcode": "NOERROR",
            "ttls": [300],
            "system_answers": dns_answers,
            "bogon": dns_answers == ["10.10.34.34"],
            "failure": None,
        },
        "tcp": [{"address": address, "port": 443, "failure": None, "t_ms": 42.1}],
        "tls": {
            "address": address,
            "sni": domain,
            "failure": tls_failure,
            "version": None if blocked else "TLSv1.3",
            "cert_verified": not blocked,
            "innocuous_sni": "example.com" if blocked else None,
            "t_ms": 88.0,
        },
        "http": http,
        "control": _control(domain, address, url),
        "timings": {"dns": 12.0, "tcp": 42.1, "tls": 88.0, "http": 140.2},
        "agent_version": "0.1.0",
    }


def batch_doc(rng: random.Random, agent_id: str, size: int, start: float) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "agent_id": agent_id,
        "batch_id": uuid.UUID(int=rng.getrandbits(128)).hex,
        "results": [measurement(rng, start + i) for i in range(size)],
    }


def encoded_batches(
    agent_id: str, count: int, size: int, seed: int = 1, *, as_agent: bool = True
) -> list[bytes]:
    """``count`` msgpack batches of ``size`` measurements with distinct ids.

    ``as_agent``: each record as our agent spools and uploads it (``encode_measurement``,
    the batch around it by ``encode_batch``), the bytes a fleet of our agents sends.
    Otherwise as another tool might encode the same documents: the dict's own key order,
    fields at their defaults left out; the collector then compares each record with the
    measurement's fields it holds (``shared.schema.decode_record``)."""
    rng = random.Random(seed)
    batches = []
    for n in range(count):
        doc = batch_doc(rng, agent_id, size, 1.7e9 + n * size)
        if as_agent:
            records = [encode_measurement(decode_measurement(encode(r))) for r in doc["results"]]
            batches.append(encode_batch(agent_id, doc["batch_id"], records))
        else:
            batches.append(encode(doc))
    return batches
