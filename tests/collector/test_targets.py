"""Target lists from YAML and Citizen-Lab-style CSV."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.targets import load_targets
from shared.errors import ConfigError

CSV_HEADER = "url,category_code,category_description,date_added,source,notes\n"


def test_yaml_mapping_gives_global_then_country(tmp_path: Path) -> None:
    """Global targets come first, then the country's, each URL once."""
    path = tmp_path / "t.yaml"
    path.write_text(
        "global: [https://a.example/, {url: https://b.example/, category_code: GRP}]\n"
        "ir: [https://b.example/, https://c.example/]\n"
    )
    targets = load_targets(path)
    assert [t.url for t in targets.for_country("IR")] == [
        "https://a.example/",
        "https://b.example/",
        "https://c.example/",
    ]
    assert [t.category_code for t in targets.for_country("DE")] == ["MISC", "GRP"]


def test_yaml_list_and_csv_file_apply_everywhere(tmp_path: Path) -> None:
    """A plain list or a CSV file is the same list for every country."""
    listed = tmp_path / "l.yaml"
    listed.write_text("- https://a.example/\n")
    assert [t.url for t in load_targets(listed).for_country("IR")] == ["https://a.example/"]
    csv = tmp_path / "global.csv"
    csv.write_text(CSV_HEADER + "http://www.bbc.com/persian,NEWS,News Media,2014-04-15,x,\n")
    got = load_targets(csv).for_country(None)
    assert [(t.url, t.category_code) for t in got] == [("http://www.bbc.com/persian", "NEWS")]


def test_csv_directory_like_test_lists(tmp_path: Path) -> None:
    """A directory holds global.csv and per-country files named by country code."""
    (tmp_path / "global.csv").write_text(CSV_HEADER + "https://g.example/,GRP,,,,\n")
    (tmp_path / "ir.csv").write_text(CSV_HEADER + "https://ir.example/,NEWS,,,,\n")
    targets = load_targets(tmp_path)
    assert [t.url for t in targets.for_country("IR")] == [
        "https://g.example/",
        "https://ir.example/",
    ]
    assert [t.url for t in targets.for_country("DE")] == ["https://g.example/"]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("global: [ftp://x.example/]\n", "global[0]"),
        ("IRAN: [https://x.example/]\n", "IRAN"),
        ("global: [{url: https://x.example/, colour: red}]\n", "global[0].colour"),
    ],
)
def test_bad_yaml_names_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    """A mistake in the target list names the file and the entry."""
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_targets(path)
    assert info.value.path == str(path) and info.value.key == key
