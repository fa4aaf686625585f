"""OONI web_connectivity measurements made to order, in OONI's own layout."""

from __future__ import annotations

from typing import Any


def measurement(
    *,
    url: str = "https://www.facebook.com/",
    cc: str = "IR",
    asn: str = "AS197207",
    network: str = "Mobile Communication Company of Iran PLC",
    report_id: str = "20220815T190043Z_webconnectivity_IR_197207_n1_cCbffjGasS4tFgb2",
    start: str = "2022-08-15 19:01:30",
    answers: tuple[str, ...] = ("157.240.1.35",),
    control_addrs: tuple[str, ...] = ("157.240.1.35",),
    blocking: Any = False,
    accessible: bool | None = True,
    status: int | None = 200,
    body: str | None = "<html><title>Facebook</title></html>",
    http_failure: str | None = None,
    tcp_failure: str | None = None,
    tls_failure: str | None = None,
    control_status: int = 200,
    test_version: str = "0.4.1",
) -> dict[str, Any]:
    """A measurement as OONI's API returns it (``raw_measurement``)."""
    tk: dict[str, Any] = {
        "queries": [
            {
                "hostname": url.split("/")[2],
                "query_type": "A",
                "engine": "system",
                "failure": None,
                "answers": [{"answer_type": "A", "ipv4": a, "ttl": None} for a in answers],
            }
        ],
        "tcp_connect": [
            {
                "ip": a,
                "port": 443,
                "status": {"success": tcp_failure is None, "failure": tcp_failure, "blocked": None},
            }
            for a in answers
        ],
        "requests": [
            {
                "request": {"url": url, "method": "GET", "headers": {}},
                "failure": http_failure,
                "response": {
                    "code": status or 0,
                    "body": body,
                    "headers": {"Content-Type": "text/html"} if status else {},
                },
            }
        ],
        "control": {
            "dns": {"addrs": list(control_addrs), "failure": None},
            "tcp_connect": {f"{a}:443": {"status": True, "failure": None} for a in control_addrs},
            "http_request": {
                "status_code": control_status,
                "body_length": 1000,
                "title": "Facebook",
                "headers": {"Content-Type": "text/html"},
                "failure": None if control_status > 0 else "unknown_error",
            },
        },
        "control_failure": None,
        "http_experiment_failure": http_failure,
        "dns_experiment_failure": None,
        "blocking": blocking,
        "accessible": accessible,
    }
    if tls_failure is not None:
        tk["tls_handshakes"] = [
            {
                "address": f"{answers[0]}:443",
                "server_name": url.split("/")[2],
                "failure": tls_failure,
            }
        ]
    return {
        "data_format_version": "0.2.0",
        "input": url,
        "measurement_start_time": start,
        "test_start_time": start,
        "probe_asn": asn,
        "probe_cc": cc,
        "probe_network_name": network,
        "report_id": report_id,
        "software_name": "ooniprobe-android",
        "software_version": "3.7.0",
        "test_name": "web_connectivity",
        "test_version": test_version,
        "test_keys": tk,
    }
