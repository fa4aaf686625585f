"""``filterwatch agent probe URL [--json]``: measure one URL now and say what happened.

The measurement is the daemon's: the same probes, the control from the collector and the
network identity from ``whoami`` when this agent is enrolled. Without credentials the URL
is still measured, and the verdict is inconclusive for lack of a control.

Exit code: 0 when the URL was measured and not found blocked, 1 when the verdict says it
is not accessible, 2 for bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from agent.collector_api import CollectorClient
from agent.config import AgentConfig, load_agent_setup
from agent.control_client import request_control
from agent.identity import Clock, NetworkIdentity
from agent.state import Credentials, NotEnrolledError, StateError, load_credentials
from shared.blockpages import Fingerprints, load_fingerprint_set
from shared.probes.web import ProbeOptions, measure, parse_target
from shared.schema import (
    Blocking,
    ControlFacts,
    Failure,
    Measurement,
    NetworkFacts,
    measurement_fields,
)
from shared.verdict import assess, dns_answers

FAILURE_WORDS: Final = {
    Failure.CONNECTION_REFUSED: "the connection was refused",
    Failure.CONNECTION_RESET: "the connection was reset",
    Failure.GENERIC_TIMEOUT_ERROR: "no answer came in time",
    Failure.EOF_ERROR: "the other side closed the connection",
    Failure.DNS_NXDOMAIN_ERROR: "the resolver said the name does not exist",
    Failure.DNS_SERVFAIL_ERROR: "the resolver failed to answer (SERVFAIL)",
    Failure.DNS_NO_ANSWER: "the resolver gave no address",
    Failure.SSL_INVALID_HOSTNAME: "the certificate is for another name",
    Failure.SSL_UNKNOWN_AUTHORITY: "the certificate is signed by an unknown authority",
    Failure.SSL_FAILED_HANDSHAKE: "the TLS handshake failed",
    Failure.HOST_UNREACHABLE: "the host is unreachable",
    Failure.NETWORK_UNREACHABLE: "the network is unreachable from this machine",
    Failure.UNKNOWN_FAILURE: "it failed in an unexpected way",
}
VERDICT_WORDS: Final = {
    Blocking.OK: "accessible",
    Blocking.DNS: "blocked by DNS",
    Blocking.TCP_IP: "blocked by address (TCP/IP)",
    Blocking.TLS: "blocked at the TLS handshake",
    Blocking.HTTP_FAILURE: "blocked: the request fails",
    Blocking.HTTP_DIFF: "probably blocked: the page differs from the control's",
    Blocking.BLOCKPAGE: "blocked: a blockpage was served",
    Blocking.SITE_DOWN: "the site is down (for the control too): not censorship",
    Blocking.INCONCLUSIVE: "inconclusive",
}


@dataclass(frozen=True, slots=True)
class ProbeContext:
    """What the probe knows besides the facts: why a control or a network is missing."""

    control_problem: str | None = None
    network_problem: str | None = None


def _failure_words(failure: str | None) -> str:
    if failure is None:
        return "ok"
    try:
        return f"{failure} ({FAILURE_WORDS[Failure(failure)]})"
    except ValueError:
        return failure


def _control_line(control: ControlFacts | None, context: ProbeContext) -> str:
    if control is None:
        return f"no control: {context.control_problem or 'the collector gave none'}"
    http = control.get("http")
    if control.get("failure") or not http or http.get("status") is None:
        return f"the collector could not fetch it either: {_failure_words(control.get('failure'))}"
    answers = ", ".join(dns_answers(control.get("dns"))) or "none needed"
    return (
        f"the collector fetched it: status {http.get('status')}, "
        f"{http.get('body_length')} bytes, addresses {answers}"
    )


def _dns_lines(m: Measurement) -> list[str]:
    dns = m.dns
    if dns is None:
        return ["DNS      none: the URL names an address"]
    answers = dns.get("answers") or []
    ttls = dns.get("ttls") or []
    shown = ", ".join(
        f"{a} (TTL {t})" for a, t in zip(answers, ttls + [0] * len(answers), strict=False)
    )
    lines = [f"DNS      asked the {dns.get('resolver')} resolver for {dns.get('query')}"]
    if dns.get("failure"):
        lines.append(f"         {_failure_words(dns.get('failure'))}")
    else:
        lines.append(f"         answer: {shown}")
    if "system_answers" in dns:
        system = ", ".join(dns.get("system_answers") or []) or "nothing"
        failure = dns.get("system_failure")
        lines.append(
            f"         the system resolver said: {system}"
            + (f" ({_failure_words(failure)})" if failure else "")
        )
    if dns.get("late_answers"):
        lines.append(
            "         a second, late answer to the same question arrived: "
            f"{', '.join(dns.get('late_answers') or [])} - the mark of an injected first answer"
        )
    if dns.get("bogon"):
        lines.append(
            "         an answer is a known injection address, or a private one the control "
            "did not get"
        )
    return lines


def _tcp_lines(m: Measurement) -> list[str]:
    tried = {t.get("address") for t in m.tcp}
    skipped = [a for a in dns_answers(m.dns) if a not in tried]
    lines = []
    for t in m.tcp:
        outcome = (
            f"connected in {t.get('t_ms')} ms"
            if not t.get("failure")
            else _failure_words(t.get("failure"))
        )
        lines.append(f"TCP      {t.get('address')}:{t.get('port')}: {outcome}")
    for address in skipped:
        lines.append(f"TCP      {address}: not contacted (a known censorship address)")
    if not lines:
        lines.append("TCP      no address to connect to")
    return lines


def _tls_lines(m: Measurement) -> list[str]:
    tls = m.tls
    if tls is None:
        return []
    if not tls.get("failure"):
        return [
            f"TLS      handshake with SNI {tls.get('sni')}: {tls.get('version')}, certificate "
            f"verified, leaf SHA-256 {str(tls.get('leaf_sha256'))[:16]}..."
        ]
    lines = [f"TLS      handshake with SNI {tls.get('sni')}: {_failure_words(tls.get('failure'))}"]
    if tls.get("leaf_sha256"):
        lines.append(
            f"         the certificate's leaf SHA-256 is {str(tls.get('leaf_sha256'))[:16]}..."
        )
    if tls.get("innocuous_sni"):
        other = tls.get("innocuous_failure")
        lines.append(
            f"         with the innocuous name {tls.get('innocuous_sni')}: "
            + (
                "it succeeded, so the filter reads the name (SNI filtering)"
                if other is None
                else f"{_failure_words(other)}, so the address itself is blocked"
            )
        )
    return lines


def _http_lines(m: Measurement) -> list[str]:
    http = m.http
    if http is None:
        if m.tls is not None and m.tls.get("failure"):
            return ["HTTP     not attempted: there is no TLS connection to send it over"]
        return ["HTTP     not attempted: no address could be connected to"] if m.tcp else []
    if http.get("failure"):
        return [f"HTTP     GET failed: {_failure_words(http.get('failure'))}"]
    hops = http.get("redirects") or 0
    title = http.get("title")
    truncated = " (cut at the size cap)" if http.get("body_truncated") else ""
    return [
        f"HTTP     GET -> {http.get('status')}, {http.get('body_length')} bytes{truncated}"
        + (f", title {title!r}" if title else "")
        + (f", after {hops} redirect{'s' if hops != 1 else ''}" if hops else "")
    ]


def explain(
    m: Measurement, fingerprints: Fingerprints, context: ProbeContext = ProbeContext()
) -> list[str]:
    """The measurement in plain words, step by step, ending with the verdict and why."""
    if m.network is None:
        where = f"an unknown network ({context.network_problem or 'the collector did not say'})"
    else:
        net = m.network
        where = f"AS{net['asn']} {net['network_name']} ({net['cc']})".replace("  ", " ")
    lines = [f"Measured {m.url} from {where}"]
    lines += _dns_lines(m)
    lines += _tcp_lines(m)
    lines += _tls_lines(m)
    lines += _http_lines(m)
    lines.append(f"Control  {_control_line(m.control, context)}")
    facts: ControlFacts = {
        "dns": m.dns,
        "tcp": m.tcp,
        "tls": m.tls,
        "http": m.http,
        "failure": m.failure,
    }
    again = assess(facts, m.control, m.network, fingerprints)
    if again.blocking is m.blocking:
        why = again.reason
    elif m.blocking is Blocking.BLOCKPAGE:
        why = f"the page matches the known blockpage fingerprint {m.blockpage}"
    else:
        why = VERDICT_WORDS[m.blocking]
    if m.blocking is Blocking.INCONCLUSIVE and m.control is None and context.control_problem:
        why = f"{why} ({context.control_problem})"
    accessible = {True: "accessible", False: "NOT accessible", None: "accessibility unknown"}
    lines.append(
        f"Verdict  {m.blocking.value} - {VERDICT_WORDS[m.blocking]} [{accessible[m.accessible]}]"
    )
    lines.append(f"         because {why}")
    if m.blockpage and m.blocking is not Blocking.BLOCKPAGE:
        lines.append(f"         fingerprint matched: {m.blockpage}")
    if again.elsewhere:
        lines.append(
            f"         fingerprint {again.elsewhere} matched, but it is a blockpage of other"
            " countries, not counted here"
        )
    return lines


def _options(config: AgentConfig | None) -> ProbeOptions:
    if config is None:
        return ProbeOptions()
    p = config.probes
    return ProbeOptions(
        timeout_s=p.timeout_s,
        resolver=p.resolver,
        system_resolver=p.system_resolver,
        ca_file=p.ca_file,
    )


async def _probe(
    url: str, config: AgentConfig | None, creds: Credentials | None, not_enrolled: str | None
) -> tuple[Measurement, ProbeContext, Fingerprints]:
    options = _options(config)
    paths = list(config.probes.fingerprints) if config else []
    fingerprints = await asyncio.to_thread(load_fingerprint_set, paths)
    network: NetworkFacts | None = None
    control: ControlFacts | None = None
    clock_age: float | None = None
    context = ProbeContext(control_problem=not_enrolled, network_problem=not_enrolled)
    if creds is not None:
        collector_url = config.collector_url if config else creds.collector_url
        upload = config.upload if config else None
        clock = Clock()
        async with await CollectorClient.open(collector_url, creds.token, upload) as collector:
            identity = NetworkIdentity(collector, clock)
            async with asyncio.TaskGroup() as tg:
                network_task = tg.create_task(identity.refresh())
                control_task = tg.create_task(
                    request_control(collector, url, options.timeout_s + 5.0)
                )
            network = network_task.result()
            answer = control_task.result()
            control = answer.facts
            clock_age = clock.age_s()
            context = ProbeContext(
                control_problem=(
                    f"the collector gave no control: {answer.problem}" if answer.problem else None
                ),
                network_problem=identity.last_error,
            )
    m = await measure(
        url,
        options,
        network=network,
        control=control,
        clock_age_s=clock_age,
        fingerprints=fingerprints,
    )
    return m, context, fingerprints


def _print(lines: Iterable[str]) -> None:
    for line in lines:
        print(line)


def run_probe(args: argparse.Namespace) -> int:
    """The ``agent probe`` command; see the module docstring for the exit codes."""
    url: str = args.url
    try:
        parse_target(url)
    except ValueError as exc:
        print(f"filterwatch: {url!r}: {exc}", file=sys.stderr)
        return 2
    setup = load_agent_setup(getattr(args, "config", None), getattr(args, "state_dir", None))
    config = setup.config
    creds: Credentials | None = None
    not_enrolled: str | None = None
    try:
        creds = load_credentials(setup.state_dir)
    except NotEnrolledError:
        not_enrolled = (
            "this agent is not enrolled (filterwatch agent enroll), so there is no control"
        )
    except StateError as exc:
        not_enrolled = f"the agent's credentials cannot be read: {exc}"
    # Log events made while measuring (a control refused, ...) go to stderr: stdout is the
    # answer, and with --json it must stay one JSON document.
    with contextlib.redirect_stdout(sys.stderr):
        m, context, fingerprints = asyncio.run(_probe(url, config, creds, not_enrolled))
    if getattr(args, "json", False):
        print(json.dumps(_jsonable(measurement_fields(m)), indent=2, sort_keys=True))
    else:
        _print(explain(m, fingerprints, context))
    return 1 if m.accessible is False else 0


def _jsonable(value: Any) -> Any:
    # Facts are plain data; enums (the verdict) print as their values.
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value.value if isinstance(value, Blocking | Failure) else value
