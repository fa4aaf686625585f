"""The verdict as a pure function of the facts, the control's facts and the fingerprints."""

from __future__ import annotations

from typing import Any

import pytest

from shared.blockpages import Fingerprints, default_fingerprints, parse_fingerprints
from shared.errors import ConfigError
from shared.schema import Blocking, ControlFacts, HttpFacts, NetworkFacts
from shared.verdict import assess, compare_http, dns_bogon

NET: NetworkFacts = {"asn": 58224, "cc": "IR", "network_name": "TCI"}
NET_AE: NetworkFacts = {"asn": 5384, "cc": "AE", "network_name": "Etisalat"}
FP = default_fingerprints()


def judge(*args: Any, **kwargs: Any) -> tuple[Blocking, str | None, str | None]:
    """``(blocking, failure, blockpage)`` of ``assess``: what most of these tests check."""
    a = assess(*args, **kwargs)
    return a.blocking, a.failure, a.blockpage


def http(**changes: Any) -> HttpFacts:
    facts: HttpFacts = {
        "url": "https://site.example/",
        "status": 200,
        "body_length": 10_000,
        "body_sha256": "a" * 64,
        "title": "Example News Front Page",
        "headers": {"server": "nginx", "content-type": "text/html", "x-site-build": "42"},
        "redirects": 0,
        "failure": None,
        "body_truncated": False,
    }
    facts.update(changes)  # type: ignore[typeddict-item]
    return facts


def facts(
    answers: list[str] | None = None,
    *,
    dns_failure: str | None = None,
    tcp_failures: list[str | None] | None = None,
    tls: dict[str, Any] | None = None,
    page: HttpFacts | None = None,
    failure: str | None = None,
) -> ControlFacts:
    answers = ["93.184.216.34"] if answers is None else answers
    tcp_failures = [None] * len(answers) if tcp_failures is None else tcp_failures
    out: ControlFacts = {
        "dns": {
            "resolver": "system",
            "query": "site.example",
            "answers": answers,
            "rcode": "NOERROR" if answers else "NXDOMAIN",
            "late_answers": [],
            "failure": dns_failure,
        },
        "tcp": [
            {"address": a, "port": 443, "failure": f}
            for a, f in zip(answers, tcp_failures, strict=True)
        ],
        "tls": tls,  # type: ignore[typeddict-item]
        "http": page,
        "failure": failure,
    }
    return out


CONTROL = facts(page=http(), tls={"failure": None, "cert_verified": True})


def test_no_network_identity_is_inconclusive() -> None:
    """A measurement whose network is unknown cannot be attributed: inconclusive."""
    assert judge(facts(page=http()), CONTROL, None, FP)[0] is Blocking.INCONCLUSIVE


def test_no_control_is_inconclusive() -> None:
    """Without a control there is nothing to compare with: inconclusive."""
    assert judge(facts(page=http()), None, NET, FP)[0] is Blocking.INCONCLUSIVE


def test_own_network_down_is_inconclusive_not_censorship() -> None:
    """When every connect fails with network_unreachable the agent is offline: inconclusive."""
    mine = facts(tcp_failures=["network_unreachable"], failure="network_unreachable")
    assert judge(mine, CONTROL, NET, FP) == (Blocking.INCONCLUSIVE, "network_unreachable", None)


def test_unreachable_resolver_is_inconclusive() -> None:
    """A resolver this machine cannot reach says nothing about the site: inconclusive."""
    mine = facts([], dns_failure="host_unreachable", failure="host_unreachable")
    assert judge(mine, CONTROL, NET, FP)[0] is Blocking.INCONCLUSIVE


def test_failure_on_both_sides_is_site_down() -> None:
    """When the control fails too the site is down, not censored."""
    mine = facts(tcp_failures=["connection_refused"], failure="connection_refused")
    theirs = facts(tcp_failures=["connection_refused"], failure="connection_refused")
    assert judge(mine, theirs, NET, FP) == (Blocking.SITE_DOWN, "connection_refused", None)


def test_blockpage_is_recognised_even_when_the_control_failed() -> None:
    """A known blockpage is censorship whatever the control got."""
    theirs = facts(tcp_failures=["generic_timeout_error"], failure="generic_timeout_error")
    body = b'<iframe src="http://10.10.34.34?type=Invalid Site"></iframe>'
    verdict = judge(facts(page=http()), theirs, NET, FP, headers=[], body=body)
    assert verdict == (Blocking.BLOCKPAGE, None, "ir_body_1")


def test_a_page_only_the_agent_got_is_inconclusive() -> None:
    """If the control failed but the agent fetched an ordinary page, nothing can be said."""
    theirs = facts(tcp_failures=["generic_timeout_error"], failure="generic_timeout_error")
    assert judge(facts(page=http()), theirs, NET, FP)[0] is Blocking.INCONCLUSIVE


def test_blockpage_comes_before_dns_inconsistency() -> None:
    """A blockpage served from a non-public address the control did not get is blockpage."""
    mine = facts(["10.0.0.7"], page=http(status=403))
    body = b'<html>window.open("http://peyvandha.ir/b/1")</html>'
    assert judge(mine, CONTROL, NET, FP, headers=[], body=body)[0:3:2] == (
        Blocking.BLOCKPAGE,
        "ir_body_2",
    )


def test_false_positive_fingerprint_wins_over_a_blockpage_match() -> None:
    """A response matching an fp-scope fingerprint is never called a blockpage."""
    prints = parse_fingerprints(
        "name,scope,location_found,pattern_type,pattern,expected_countries,source,exp_url,notes\n"
        "bp,nat,body,contains,Access denied,,test,,\n"
        "cdn,fp,header.server,full,FriendlyCDN,,test,,\n"
    )
    mine = facts(page=http(status=403, body_length=200, body_sha256="d" * 64, title="Denied"))
    headers = [("Server", "FriendlyCDN")]
    blocking, _, blockpage = judge(
        mine, CONTROL, NET, prints, headers=headers, body=b"Access denied"
    )
    assert blockpage is None and blocking is Blocking.HTTP_DIFF
    blocking, _, blockpage = judge(mine, CONTROL, NET, prints, headers=[], body=b"Access denied")
    assert (blocking, blockpage) == (Blocking.BLOCKPAGE, "bp")


def test_header_fingerprints_match_recorded_headers_without_the_body() -> None:
    """Judging stored facts again still finds a header blockpage from the recorded headers."""
    mine = facts(page=http(headers={"server": "Protected by WireFilter 8"}))
    assert judge(mine, CONTROL, NET_AE, FP)[::2] == (Blocking.BLOCKPAGE, "ae_header_1")


def test_a_fingerprint_of_other_countries_is_noted_not_counted() -> None:
    """WireFilter (expected in AE and SA) seen from Iran is not called a blockpage there:
    the comparison with the control decides, and the match is named as another country's."""
    mine = facts(page=http(headers={"server": "Protected by WireFilter 8"}))
    verdict = assess(mine, CONTROL, NET, FP)
    assert (verdict.blocking, verdict.blockpage) == (Blocking.OK, None)
    assert (verdict.elsewhere, verdict.elsewhere_in) == ("ae_header_1", "http")


def test_a_vague_word_counts_only_on_a_page_unlike_the_control() -> None:
    """OONI's vbw fingerprints ("Access Denied") say blockpage only when the page also
    differs from the control's; on a page like the control's the site said it itself."""
    prints = parse_fingerprints(
        "name,scope,location_found,pattern_type,pattern,expected_countries,source,exp_url,notes\n"
        "cp.f_gen_access_denied,vbw,body,contains,Access Denied,,test,,\n"
    )
    like_control = facts(page=http())
    assert judge(like_control, CONTROL, NET, prints, headers=[], body=b"Access Denied")[0] is (
        Blocking.OK
    )
    unlike = facts(page=http(status=403, body_length=20, body_sha256="e" * 64, title="Nope"))
    assert judge(unlike, CONTROL, NET, prints, headers=[], body=b"Access Denied")[::2] == (
        Blocking.BLOCKPAGE,
        "cp.f_gen_access_denied",
    )


def test_regexp_fingerprints_are_searched_in_linear_time() -> None:
    """A regexp fingerprint matches; a pattern that backtracks exponentially in Python's re
    still answers at once on a long input (RE2), and one RE2 refuses names its line."""
    prints = parse_fingerprints(
        "name,scope,location_found,pattern_type,pattern,expected_countries,source,exp_url,notes\n"
        "rx,nat,body,regexp,blocked by order no\\. [0-9]+,,test,,\n"
        "evil,nat,body,regexp,(a+)+$,,test,,\n"
    )
    assert prints.match_response([], b"<p>blocked by order no. 42</p>") is not None
    assert prints.match_response([], b"a" * 100_000 + b"!") is None
    with pytest.raises(ConfigError, match=r"line 2: pattern"):
        parse_fingerprints(
            "name,scope,location_found,pattern_type,pattern\nbad,nat,body,regexp,(a)\\1\n"
        )


def test_known_injection_address_is_dns_with_its_fingerprint() -> None:
    """An answer of 10.10.34.36 is dns blocking, and the fingerprint is named."""
    mine = facts(["10.10.34.36"])
    mine["tcp"] = []  # the probe never connects to a known injection address
    assert judge(mine, CONTROL, NET, FP) == (Blocking.DNS, None, "ir_dns_3")


def test_private_answer_shared_with_the_control_is_consistent() -> None:
    """Labs and tests live on private addresses: the same private answer as the control is
    consistent, not a bogon."""
    mine = facts(["127.0.0.1"], page=http(), tls={"failure": None, "cert_verified": True})
    theirs = facts(["127.0.0.1"], page=http(), tls={"failure": None, "cert_verified": True})
    assert judge(mine, theirs, NET, FP)[0] is Blocking.OK
    assert dns_bogon(mine["dns"], theirs, FP) is False


def test_private_answer_the_control_did_not_get_is_dns() -> None:
    """A private answer the control does not share is a bogon: dns blocking."""
    mine = facts(["192.168.0.66"], page=http())
    assert judge(mine, CONTROL, NET, FP)[0] is Blocking.DNS
    assert dns_bogon(mine["dns"], CONTROL, FP) is True


def test_nxdomain_where_the_control_resolves_is_dns() -> None:
    """NXDOMAIN for a name the control resolves is dns blocking with its failure."""
    mine = facts([], dns_failure="dns_nxdomain_error", failure="dns_nxdomain_error")
    assert judge(mine, CONTROL, NET, FP) == (Blocking.DNS, "dns_nxdomain_error", None)


def test_other_public_addresses_proved_by_a_verified_certificate_are_ok() -> None:
    """CDNs answer differently per place: a verified certificate proves the address."""
    mine = facts(["151.101.1.1"], page=http(), tls={"failure": None, "cert_verified": True})
    assert judge(mine, CONTROL, NET, FP)[0] is Blocking.OK


def test_other_public_addresses_proved_by_nothing_are_dns() -> None:
    """Different public addresses and a failed handshake: the answer is not trusted."""
    mine = facts(["151.101.1.1"], tls={"failure": "connection_reset", "innocuous_failure": None})
    assert judge(mine, CONTROL, NET, FP)[0] is Blocking.DNS


def test_all_connects_failing_is_tcp_ip() -> None:
    """Every connect failing where the control's succeeded is tcp_ip with the failure."""
    mine = facts(tcp_failures=["generic_timeout_error"], failure="generic_timeout_error")
    assert judge(mine, CONTROL, NET, FP) == (Blocking.TCP_IP, "generic_timeout_error", None)


def test_certificate_substitution_is_tls() -> None:
    """A certificate from an unknown authority where the control's verifies is tls."""
    mine = facts(tls={"failure": "ssl_unknown_authority", "cert_verified": False})
    mine["failure"] = "ssl_unknown_authority"
    assert judge(mine, CONTROL, NET, FP) == (Blocking.TLS, "ssl_unknown_authority", None)


def test_failed_request_is_http_failure() -> None:
    """A request that fails where the control's succeeded is http_failure with its failure."""
    mine = facts(page=http(status=None, failure="connection_reset"), failure="connection_reset")
    assert judge(mine, CONTROL, NET, FP) == (Blocking.HTTP_FAILURE, "connection_reset", None)


def test_status_mismatch_is_http_diff() -> None:
    """Another status code than the control's is http_diff."""
    mine = facts(page=http(status=403, body_sha256="b" * 64))
    assert judge(mine, CONTROL, NET, FP)[0] is Blocking.HTTP_DIFF


def test_dynamic_page_of_similar_length_is_ok() -> None:
    """A page that changed a little (length ratio above 0.7) agrees with the control."""
    mine = facts(page=http(body_length=8_000, body_sha256="c" * 64, title="Other", headers={}))
    assert judge(mine, CONTROL, NET, FP)[0] is Blocking.OK


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("Example News Front Page", True),
        ("Blocked News Front Page", False),  # first long word differs: "Blocked" vs "Example"
        ("A B C", None),  # no word of five letters or more: undecided
    ],
)
def test_title_comparison_follows_ooni(title: str, expected: bool | None) -> None:
    """Titles are compared by their first word of five or more letters, at its position."""
    assert compare_http(http(title=title), http()).title_match is expected


def test_control_server_error_leaves_status_undecided() -> None:
    """When the control got a 5xx the status code is not compared."""
    assert compare_http(http(status=200), http(status=503)).status_match is None


def test_framing_headers_alone_do_not_make_headers_match() -> None:
    """Content-Length in both responses proves nothing about the server."""
    ours = http(headers={"content-length": "10", "x-filter": "on"})
    theirs = http(headers={"content-length": "99", "x-site-build": "42"})
    assert compare_http(ours, theirs).headers_match is False


def test_fingerprint_file_errors_name_the_line_and_column() -> None:
    """A bad pattern_type is a ConfigError naming the line and the column."""
    text = (
        "name,scope,location_found,pattern_type,pattern,expected_countries,source,exp_url,notes\n"
        "x,nat,body,glob,a*,,,,\n"
    )
    with pytest.raises(ConfigError, match=r"line 2: pattern_type"):
        parse_fingerprints(text, "prints.csv")


def test_ooni_fingerprint_files_load_with_their_extra_columns() -> None:
    """OONI's own CSV (with other_names and confidence_no_fp) loads as is."""
    text = (
        "name,scope,other_names,location_found,pattern_type,pattern,confidence_no_fp,"
        "expected_countries,source,exp_url,notes\n"
        'ooni.ir_4,nat,cl.dns_nat_ir_inject_1,dns,full,10.10.34.34,5,IR,ooni,,"note, quoted"\n'
    )
    prints = parse_fingerprints(text)
    found = prints.match_dns("10.10.34.34")
    assert found is not None and found.name == "ooni.ir_4" and found.expected_countries == ("IR",)


def test_shipped_fingerprints_cite_their_sources() -> None:
    """Every shipped fingerprint says where it comes from."""
    assert len(FP) >= 8
    assert all(f.source for f in FP.entries)
    assert isinstance(FP, Fingerprints)
