"""The packages as users install them: the sdist and the wheel are built, the wheel goes into
fresh virtual environments (plain, ``[collector]``, ``[all]``), and the commands run there.

The plain install is the volunteer's light agent: no pyarrow, no asyncpg, no trustme; its
agent commands work against a real collector, and every command that needs an extra exits
2 naming the extra. ``[collector]`` runs the demo end to end (once: it takes ~80 s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail_in_ci

pytestmark = [pytest.mark.packaging, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("pyarrow", "asyncpg", "trustme", "prometheus_client")


def _run(cmd: list[str], *, timeout: float = 600, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload, no-any-return]


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel, built as a release would build them."""
    out = tmp_path_factory.mktemp("dist")
    # Without isolation: the build backend is the one scripts/setup installed, not one an
    # isolated build would fetch from an index.
    build = _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)])
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    # The license is an SPDX string: no setuptools deprecation warnings on the way.
    assert "deprecated" not in (build.stdout + build.stderr).lower()
    return out


def _wheel(dist: Path) -> Path:
    (wheel,) = dist.glob("filterwatch-*.whl")
    return wheel


@pytest.fixture(scope="session")
def venvs(tmp_path_factory: pytest.TempPathFactory, dist: Path) -> Iterator[dict[str, Path]]:
    """Fresh virtual environments with the wheel installed: plain, [collector], [all]."""
    # Dependencies come from the wheels scripts/setup saved, never from an index: a test
    # sends no packet off the machine.
    wheelhouse = Path(sys.prefix) / "wheelhouse"
    if not (wheelhouse / ".complete").exists():
        skip_or_fail_in_ci(f"no {wheelhouse}: run FILTERWATCH_SETUP_TESTS=1 scripts/setup")
    offline = ["--no-index", "--find-links", str(wheelhouse)]
    made: dict[str, Path] = {}
    for extra in ("plain", "collector", "all"):
        venv = tmp_path_factory.mktemp(f"venv-{extra}")
        # No pip inside (ensurepip costs seconds a venv): this interpreter's pip installs
        # into it, which is the same install.
        made_venv = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
        assert made_venv.returncode == 0, made_venv.stderr
        spec = str(_wheel(dist)) + ("" if extra == "plain" else f"[{extra}]")
        target = ["--python", str(venv / "bin" / "python")]
        install = _run([sys.executable, "-m", "pip", *target, "install", "-q", *offline, spec])
        assert install.returncode == 0, install.stderr[-3000:]
        assert "deprecat" not in install.stderr.lower(), install.stderr
        made[extra] = venv
    yield made


def _has(venv: Path, module: str) -> bool:
    probe = _run(
        [
            str(venv / "bin" / "python"),
            "-c",
            f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)",
        ]
    )
    return probe.returncode == 0


def _fw(
    venv: Path, *args: str, home: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``filterwatch ARGS`` from the venv's console script, run outside the source tree."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "data"), XDG_CONFIG_HOME=str(home / "cfg"))
    return _run([str(venv / "bin" / "filterwatch"), *args], cwd=home, env=env, timeout=timeout)


def test_sdist_and_wheel_carry_the_package_data(dist: Path) -> None:
    """Both archives hold the code and the data files (migrations, scenarios, fingerprints)."""
    (sdist,) = dist.glob("filterwatch-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
    assert any(n.endswith("/pyproject.toml") for n in names)
    assert any(n.endswith("collector/store/migrations/0001_initial.sql") for n in names)
    wheel = zipfile.ZipFile(_wheel(dist)).namelist()
    for needed in (
        "collector/store/migrations/0001_initial.sql",
        "lab/scenarios/iran-2013.yaml",
        "shared/data/fingerprints.csv",
        "filterwatch/cli.py",
    ):
        assert needed in wheel
    metadata = zipfile.ZipFile(_wheel(dist)).read("filterwatch-0.1.0.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert "Provides-Extra: collector" in metadata
    assert "Provides-Extra: postgres" in metadata


def test_plain_install_is_the_light_agent(venvs: dict[str, Path], tmp_path: Path) -> None:
    """`pip install filterwatch` brings none of the collector's dependencies."""
    plain = venvs["plain"]
    assert [m for m in HEAVY if _has(plain, m)] == []
    assert _has(plain, "msgspec") and _has(plain, "aiohttp")
    assert _has(venvs["collector"], "pyarrow") and _has(venvs["collector"], "trustme")
    assert not _has(venvs["collector"], "asyncpg")
    assert all(_has(venvs["all"], m) for m in HEAVY)


@pytest.mark.parametrize(
    ("args", "who"),
    [
        (["collector", "serve"], "the collector"),
        (["collector", "leaks"], "the collector"),
        (["collector", "enroll-code"], "the collector"),
        (["compare", "x.parquet"], "compare"),
        (["demo"], "the demo"),
        (["lab", "run", "x.yaml"], "the lab"),
    ],
)
def test_plain_install_names_the_missing_extra(
    venvs: dict[str, Path], tmp_path: Path, args: list[str], who: str
) -> None:
    """A command that needs [collector] exits 2 with the pip line, never a traceback."""
    done = _fw(venvs["plain"], *args, home=tmp_path)
    assert done.returncode == 2
    assert f"{who} needs: pip install 'filterwatch[collector]'" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_collector_install_names_the_postgres_extra(venvs: dict[str, Path], tmp_path: Path) -> None:
    """A PostgreSQL configuration without [postgres] exits 2 naming the extra."""
    config = tmp_path / "collector.yaml"
    config.write_text("database: {postgres_dsn: 'postgresql://127.0.0.1:1/none'}\n")
    done = _fw(
        venvs["collector"], "collector", "enroll-code", "--config", str(config), home=tmp_path
    )
    assert done.returncode == 2
    assert "pip install 'filterwatch[postgres]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_plain_agent_enrolls_probes_and_reports(venvs: dict[str, Path], tmp_path: Path) -> None:
    """The light agent's commands work against a real collector (from [collector])."""
    coll = venvs["collector"]
    cdir = tmp_path / "collector"
    cdir.mkdir()
    code = _fw(coll, "collector", "enroll-code", "--uses", "1", home=cdir)
    assert code.returncode == 0, code.stderr
    server = subprocess.Popen(
        [str(coll / "bin" / "filterwatch"), "collector", "serve", "--port", "0"],
        cwd=cdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert "listening on http://127.0.0.1:" in line
        url = line.rsplit(" ", 1)[-1].strip()
        home = tmp_path / "volunteer"
        home.mkdir()
        plain = venvs["plain"]
        enrolled = _fw(
            plain, "agent", "enroll", "--collector", url, "--code", code.stdout.strip(), home=home
        )
        assert enrolled.returncode == 0, enrolled.stderr
        assert "enrolled as agent" in enrolled.stdout
        status = _fw(plain, "agent", "status", "--json", home=home)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["enrolled"] is True
        probe = _fw(plain, "agent", "probe", url + "/healthz", "--json", home=home)
        assert probe.returncode == 0, probe.stderr
        measured = json.loads(probe.stdout)
        assert measured["http"]["status"] == 200
        unit = _fw(plain, "agent", "install-service", "--dry-run", home=home)
        assert unit.returncode == 0, unit.stderr
        assert "ExecStart=" in unit.stdout
    finally:
        server.terminate()
        server.wait(30)
        if server.stdout is not None:
            server.stdout.close()


def test_collector_install_runs_the_demo(venvs: dict[str, Path], tmp_path: Path) -> None:
    """`filterwatch demo` in a fresh [collector] venv finds Shatel's leak, nothing false."""
    from lab.netns import check_prerequisites

    problems = check_prerequisites()
    if problems:
        skip_or_fail_in_ci("the lab cannot run here: " + "; ".join(problems))
    done = _fw(venvs["collector"], "demo", "--json", home=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["missed"] == 0 and result["false_leaks"] == 0
    assert result["found"] == result["expected"] >= 1
