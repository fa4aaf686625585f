"""Loading lab scenarios: the design.md section 7 format, strictly."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lab.scenario import BUILTIN_DIR, builtin_scenario_path, load_scenario, scenario_from_mapping
from shared.errors import ConfigError

DESIGN_EXAMPLE = """
name: iran-2013
country: IR
round_seconds: 5
rounds: 12
blockpage_ip: 10.10.34.34
sites:
  - url: https://www.facebook.com/
  - url: https://twitter.com/
  - url: http://www.bbc.com/persian
  - url: https://en.wikipedia.org/
isps:
  - name: TCI
    asn: 58224
    agents: 3
    censor:
      dns_inject: [facebook.com, twitter.com]
      sni_reset: [facebook.com, twitter.com, bbc.com]
      http_blockpage: [bbc.com]
      ip_block: []
  - name: Shatel
    asn: 31549
    agents: 2
    censor: {dns_inject: [facebook.com, twitter.com], sni_reset: [facebook.com, twitter.com],
             http_blockpage: [bbc.com]}
    glitches:
      - {from_round: 4, to_round: 8, lift: [facebook.com, twitter.com]}
    vpn_agents: 0
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(text)
    return path


def test_design_example_loads(tmp_path: Path) -> None:
    """The example scenario of design.md section 7 loads as written."""
    scenario = load_scenario(write(tmp_path, DESIGN_EXAMPLE))
    assert scenario.name == "iran-2013"
    assert [isp.name for isp in scenario.isps] == ["TCI", "Shatel"]
    assert scenario.isps[1].glitches[0].lift == ("facebook.com", "twitter.com")
    assert scenario.sites[2].host == "www.bbc.com" and not scenario.sites[2].https


def test_every_shipped_scenario_loads() -> None:
    """Every scenario shipped in lab/scenarios loads, the built-in one included."""
    paths = sorted(BUILTIN_DIR.glob("*.yaml"))
    assert builtin_scenario_path() in paths
    for path in paths:
        assert load_scenario(path).name == path.stem


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    """A misspelt key is refused with its path and the file's name."""
    path = write(tmp_path, DESIGN_EXAMPLE.replace("vpn_agents: 0", "vpn_agent: 0"))
    with pytest.raises(ConfigError) as err:
        load_scenario(path)
    assert str(path) in str(err.value)
    assert "isps[1].vpn_agent" in str(err.value)


@pytest.mark.parametrize(
    ("written", "instead", "named"),
    [
        # A value of the wrong type names its key.
        pytest.param(
            "rounds: 12", 'rounds: "twelve"', "rounds: expected a whole number", id="type"
        ),
        # A glitch that ends after the last round names the glitch's key.
        pytest.param(
            "to_round: 8", "to_round: 13", r"isps\[1\]\.glitches\[0\]\.to_round", id="late-glitch"
        ),
        # A glitch that ends before it starts is refused where it is written.
        pytest.param(
            "to_round: 8",
            "to_round: 2",
            r"isps\[1\]\.glitches\[0\]\.to_round: must not be before from_round",
            id="backwards-glitch",
        ),
        # Two ISPs with one AS number cannot be told apart by the collector.
        pytest.param("asn: 31549", "asn: 58224", r"isps\[1\]\.asn", id="duplicate-asn"),
        # A glitch may only lift methods the lab knows.
        pytest.param(
            "lift: [facebook.com, twitter.com]}",
            "lift: [facebook.com], methods: [dpi]}",
            r"methods\[0\]: expected one of",
            id="unknown-method",
        ),
        # A site down in a round the run does not have is a mistake, named by key.
        pytest.param(
            "- url: https://twitter.com/",
            "- {url: https://twitter.com/, down: [0]}",
            r"sites\[1\]\.down\[0\]",
            id="down-outside-run",
        ),
        # The blockpage address cannot collide with the lab's own address plan.
        pytest.param("10.10.34.34", "100.64.0.1", "blockpage_ip", id="blockpage-in-lab-ranges"),
        # Only http:// and https:// sites can be hosted in the lab.
        pytest.param("https://twitter.com/", "ftp://twitter.com/", r"sites\[1\]", id="not-web"),
    ],
)
def test_a_mistake_is_refused_naming_its_key(
    tmp_path: Path, written: str, instead: str, named: str
) -> None:
    """The design example with one mistake written into it is refused; the error names the
    key where it is."""
    assert written in DESIGN_EXAMPLE  # the case really changes the example
    with pytest.raises(ConfigError, match=named):
        load_scenario(write(tmp_path, DESIGN_EXAMPLE.replace(written, instead)))


def test_missing_file_is_named(tmp_path: Path) -> None:
    """A scenario file that does not exist is named in the error."""
    with pytest.raises(ConfigError, match="no such file"):
        load_scenario(tmp_path / "nope.yaml")


ROLLING = """
name: rolling
country: KZ
round_seconds: 4
rounds: 10
sites: [{url: "https://www.facebook.com/"}, {url: "http://www.bbc.com/"}]
isps:
  - name: Kcell
    asn: 29355
    agents: 3
    censor:
      ip_block: [facebook.com]
      sni_reset: [facebook.com, bbc.com]
      rates: {ip_block: 0.7}
    blocks_from_round: {bbc.com: 8}
"""


def test_rates_and_blocks_from_round_load() -> None:
    """The issue 6 keys of design.md section 7 load: a rate per method (1 unless given) and
    the round a block reaches this ISP."""
    scenario = scenario_from_mapping(yaml.safe_load(ROLLING))
    kcell = scenario.isps[0]
    assert kcell.censor.rates.of("ip_block") == 0.7
    assert kcell.censor.rates.of("sni_reset") == 1.0
    assert kcell.blocks_from_round == {"bbc.com": 8}


@pytest.mark.parametrize(
    ("old", "new", "key", "problem"),
    [
        *(
            ("{ip_block: 0.7}", f"{{ip_block: {rate}}}", "isps[0].censor.rates.ip_block", "(0, 1]")
            for rate in ("1.5", "0", "-0.2", ".nan")  # outside (0, 1], whichever side
        ),
        ("{ip_block: 0.7}", "{ip_block: high}", "isps[0].censor.rates.ip_block", "a number"),
        ("{ip_block: 0.7}", "{tcp_rst: 0.5}", "isps[0].censor.rates.tcp_rst", "unknown key"),
        ("{ip_block: 0.7}", "[0.7]", "isps[0].censor.rates", "expected a mapping"),
        *(
            (
                "{bbc.com: 8}",
                f"{{bbc.com: {n}}}",
                "isps[0].blocks_from_round.bbc.com",
                "not in 1..10",
            )
            for n in ("11", "0")  # past the last round, before the first
        ),
        ("{bbc.com: 8}", "{bbc.com: x}", "isps[0].blocks_from_round.bbc.com", "whole number"),
        ("{bbc.com: 8}", "{BBC: 8}", "isps[0].blocks_from_round.BBC", "domain name"),
        (
            "{bbc.com: 8}",
            "{twitter.com: 8}",
            "isps[0].blocks_from_round.twitter.com",
            "does not list twitter.com",
        ),
        ("blocks_from_round:", "blocks_from_rounds:", "isps[0].blocks_from_rounds", "unknown key"),
    ],
)
def test_bad_rates_and_rounds_name_file_and_key(
    tmp_path: Path, old: str, new: str, key: str, problem: str
) -> None:
    """A rate outside (0, 1], an unknown method, a round out of range or a domain the censor
    does not list is refused, naming the file and the exact key."""
    path = write(tmp_path, ROLLING.replace(old, new))
    with pytest.raises(ConfigError) as err:
        load_scenario(path)
    assert str(err.value).startswith(f"{path}: {key}: "), str(err.value)
    assert problem in str(err.value)


def test_blocks_from_round_may_name_a_subdomain_or_a_parent() -> None:
    """A rolling block may name a subdomain of a listed domain, or a parent of one."""
    text = ROLLING.replace("{bbc.com: 8}", "{www.bbc.com: 8, facebook.com: 3}").replace(
        "ip_block: [facebook.com]", "ip_block: [www.facebook.com]"
    )
    scenario = scenario_from_mapping(yaml.safe_load(text))
    assert scenario.isps[0].blocks_from_round == {"www.bbc.com": 8, "facebook.com": 3}


def test_more_sites_than_the_address_plan_holds_is_refused_by_the_loader() -> None:
    """The plan's limit (200 sites) is a scenario error naming `sites`, not a crash later."""
    doc = yaml.safe_load(DESIGN_EXAMPLE)
    doc["sites"] = [{"url": f"https://site{i}.example.org/"} for i in range(201)]
    with pytest.raises(ConfigError) as err:
        scenario_from_mapping(doc, "s.yaml")
    assert str(err.value) == "s.yaml: sites: the lab hosts at most 200 sites"
