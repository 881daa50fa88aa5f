"""What a fresh clone promises: no paths of another machine, true dependencies, the sample
data, and ``./dev test`` provisioning (or naming) what the tests need."""

from __future__ import annotations

import ast
import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import polars as pl
import pytest

import scfeeds

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# An absolute path into a home, a build folder, or an interpreter's library (virtualenv or
# standard library). Deployment paths such as /var/run/secrets are the product's own.
_MACHINE_PATH = re.compile(
    r"(?<![\w.~])/(?:work|root|home|Users)/[\w.-]"
    r"|/[^\s'\"<>()]*/(?:site-packages|lib/python3\.\d+)/"
)


def _tracked_files() -> list[Path]:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout: the tracked files cannot be listed")
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, text=True
    ).stdout
    return [ROOT / name for name in out.split("\0") if name]


def test_no_absolute_machine_paths_in_tracked_files() -> None:
    offenders = []
    for path in _tracked_files():
        if path.name == "uv.lock" or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:4096]:
            continue  # binary (xlsx, parquet)
        for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            if _MACHINE_PATH.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not offenders, "\n".join(offenders)


def test_the_path_pattern_catches_what_it_must() -> None:
    # assembled from pieces, so that this file does not hold the paths it looks for
    home, lib, packages = "/" + "root", "lib/" + "python3.11", "site-" + "packages"
    assert _MACHINE_PATH.search(f"title='{home}/.pyenv/versions/3.11.7/{lib}/re.py'")
    assert _MACHINE_PATH.search(f"title='/opt/x/.venv/{lib}/{packages}/aiohttp/a.py'")
    assert _MACHINE_PATH.search("default " + "/" + "work/shared/x12-corpus")
    assert not _MACHINE_PATH.search("title='aiohttp/streams.py'")
    assert not _MACHINE_PATH.search("value: /var/run/secrets/scfeeds/tokens.json")
    assert not _MACHINE_PATH.search("../shared/x12-corpus")


def test_no_build_process_notes_in_the_product() -> None:
    assert not (ROOT / "docs" / "HELPERS.md").exists()


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _declared() -> set[str]:
    """Distributions declared in pyproject (dependencies and extras), plus what the extras
    of a declared requirement (``dask[distributed]``) bring."""
    project = PYPROJECT["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    names = {_name(r) for r in requirements}
    for r in requirements:
        for extra in re.findall(r"\[([^\]]+)\]", r):
            for dep in md.requires(_name(r)) or []:
                if any(f'extra == "{e.strip()}"' in dep for e in extra.split(",")):
                    names.add(_name(dep))
    return names


def test_every_third_party_import_of_the_package_is_declared() -> None:
    modules = set()
    for path in (ROOT / "scfeeds").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    third_party = {m for m in modules if m not in sys.stdlib_module_names and m != "scfeeds"}
    assert {"numpy", "polars", "aiohttp"} <= third_party
    dists = md.packages_distributions()
    declared = _declared()
    undeclared = {
        m: dists.get(m)
        for m in sorted(third_party)
        if not {_name(d) for d in dists.get(m, [m])} & declared
    }
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
    # numpy is used directly by the match engine and synth: a runtime dependency
    assert "numpy" in {_name(r) for r in PYPROJECT["project"]["dependencies"]}


def _release(version: str) -> tuple[int, ...]:
    match = re.match(r"\d+(?:\.\d+)*", version)
    assert match, version
    return tuple(int(part) for part in match.group(0).split("."))


def test_lower_bounds_are_the_locked_versions() -> None:
    """The lock is what is tested, so every lower bound names the locked release (to the
    precision the bound is written in), not an older one nobody ran."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    locked: dict[str, list[str]] = {}
    for package in lock["package"]:
        locked.setdefault(_name(package["name"]), []).append(package["version"])
    project = PYPROJECT["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    stale = []
    for requirement in requirements:
        bound = re.search(r">=\s*([0-9][0-9a-z.]*)", requirement)
        assert bound, f"{requirement}: no lower bound"
        want = _release(bound.group(1))
        oldest = min(_release(v) for v in locked[_name(requirement)])
        if oldest[: len(want)] != want:
            stale.append(f"{requirement} (locked {'.'.join(map(str, oldest))})")
    assert not stale, "lower bounds below the tested versions: " + ", ".join(stale)


def test_bytecode_is_compiled_at_sync() -> None:
    assert PYPROJECT["tool"]["uv"]["compile-bytecode"] is True
    assert "compileall" in (ROOT / "dev").read_text()  # the editable project itself


# -- data/ -------------------------------------------------------------------------------


def test_sample_data_is_small_complete_and_readable() -> None:
    data = ROOT / "data"
    files = [p for p in data.rglob("*") if p.is_file() and "worlds" not in p.parts]
    assert (data / "README.md").is_file()
    assert sum(p.stat().st_size for p in files) < 400_000
    catalog = pl.read_parquet(data / "catalog.parquet")
    for row in catalog.iter_rows(named=True):  # the catalog and the files agree
        assert (data / row["path"]).stat().st_size == row["bytes"], row["path"]
    kinds = set(catalog.select("table", "format").iter_rows())
    assert {("po_lines", "x12"), ("asn_lines", "x12"), ("invoice_lines", "x12")} <= kinds
    assert {("po_lines", "csv"), ("invoice_lines", "xlsx"), ("receipts", "csv")} <= kinds
    assert {("po_lines", "xml"), ("asn_lines", "xml"), ("invoice_lines", "xml")} <= kinds
    readme = (data / "README.md").read_text()
    for name in ("850", "856", "810", "csv", "xlsx", "cXML", "receipts", "truth.parquet"):
        assert name in readme

    x12 = scfeeds.read_x12(sorted(str(data / p) for p in catalog.filter(format="x12")["path"]))
    assert x12.errors.height == 0
    assert x12.po_lines.height > 0
    assert x12.asn_lines.height > 0
    assert x12.invoice_lines.height > 0
    for fmt, reader in (("xml", scfeeds.scan_xml), ("csv", scfeeds.scan_export)):
        for row in catalog.filter(format=fmt).head(3).iter_rows(named=True):
            frame = reader(data / row["path"], table=row["table"]).collect()
            assert frame.height == row["records"], row["path"]


def test_generated_worlds_under_data_are_ignored_by_git() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    probe = "data/worlds/big/catalog.parquet"
    out = subprocess.run(["git", "check-ignore", "-q", probe], cwd=ROOT, check=False)
    assert out.returncode == 0
    out = subprocess.run(["git", "check-ignore", "-q", "data/truth.parquet"], cwd=ROOT, check=False)
    assert out.returncode == 1  # the samples themselves are committed


# -- ./dev provisioning ------------------------------------------------------------------


def _fake_bin(
    tmp_path: Path,
    *,
    uid: int,
    apt: bool,
    redis: bool,
    apt_status: int = 0,
    compiler: bool = True,
) -> Path:
    """A PATH with the few tools ``dev`` uses, a fake ``id`` and optional fakes of
    ``apt-get`` (which only logs its arguments) and ``redis-server``; with ``compiler``, a
    ``cc`` and a ``python3`` whose headers are there (without, neither)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "cut", "tr", "sed", "cat"):
        real = shutil.which(tool)
        assert real, tool
        (bin_dir / tool).symlink_to(real)
    scripts = {"id": f'#!/bin/sh\n[ "$1" = -u ] && echo {uid}\n'}
    if apt:
        scripts["apt-get"] = f'#!/bin/sh\necho "$@" >> "{tmp_path}/apt.log"\nexit {apt_status}\n'
    if redis:
        scripts["redis-server"] = "#!/bin/sh\nexit 0\n"
    # dev asks python3 where its headers are (an exit status of 1: not there)
    scripts["python3"] = f"#!/bin/sh\nexit {0 if compiler else 1}\n"
    if compiler:
        scripts["cc"] = "#!/bin/sh\nexit 0\n"
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def _dev(
    tmp_path: Path, bin_dir: Path, *args: str, chromium: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a copy of ``dev`` (so that nothing it might do touches the checkout)."""
    script = tmp_path / "checkout" / "dev"
    script.parent.mkdir(exist_ok=True)
    shutil.copy(ROOT / "dev", script)
    env = {
        "PATH": str(bin_dir),
        "HOME": str(tmp_path),
        "SCFEEDS_CHROMIUM": str(chromium or tmp_path / "no-chromium"),
        "SCFEEDS_FONTS_DIR": str(tmp_path),
    }
    bash = shutil.which("bash")
    assert bash
    return subprocess.run(
        [bash, str(script), *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_dev_doctor_names_each_missing_piece_and_what_to_run(tmp_path: Path) -> None:
    out = _dev(tmp_path, _fake_bin(tmp_path, uid=1000, apt=False, redis=False), "doctor")
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2, out.stderr
    assert lines[0].startswith("dev: missing redis-server (")
    assert "install redis-server with the system's package manager" in lines[0]
    assert lines[1].startswith("dev: missing chromium (")
    assert "chromium fonts-liberation" in lines[1]


def test_dev_doctor_names_the_compiler_and_headers_the_x12_kernel_needs(tmp_path: Path) -> None:
    bin_dir = _fake_bin(tmp_path, uid=1000, apt=False, redis=True, compiler=False)
    chromium = tmp_path / "chromium"
    chromium.write_text("#!/bin/sh\n")
    chromium.chmod(0o755)
    out = _dev(tmp_path, bin_dir, "doctor", chromium=chromium)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2, out.stderr
    assert lines[0].startswith("dev: missing gcc (the X12 reader's C kernel")
    assert lines[1].startswith("dev: missing python3-dev (")
    assert "apt-get install python3-dev" in lines[1]


def test_dev_doctor_is_satisfied_when_everything_is_there(tmp_path: Path) -> None:
    chromium = tmp_path / "chromium"
    chromium.write_text("#!/bin/sh\n")
    chromium.chmod(0o755)
    bin_dir = _fake_bin(tmp_path, uid=1000, apt=True, redis=True)
    out = _dev(tmp_path, bin_dir, "doctor", chromium=chromium)
    assert out.returncode == 0, out.stderr
    assert "everything the tests need is installed" in out.stdout
    assert out.stderr == ""
    assert not (tmp_path / "apt.log").exists()  # doctor never installs


def test_dev_test_without_root_fails_with_what_to_run_and_installs_nothing(
    tmp_path: Path,
) -> None:
    out = _dev(tmp_path, _fake_bin(tmp_path, uid=1000, apt=True, redis=False), "test")
    assert out.returncode == 1
    assert "run: sudo apt-get install redis-server" in out.stderr
    assert "run: sudo apt-get install chromium fonts-liberation" in out.stderr
    assert "every test needs the pieces above" in out.stderr
    assert not (tmp_path / "apt.log").exists()
    assert not (tmp_path / "checkout" / ".uv").exists()  # stopped before bootstrapping


@pytest.mark.parametrize("apt_status", [0, 100], ids=["apt-ok", "apt-fails"])
def test_dev_test_as_root_installs_from_apt_once_then_checks_again(
    tmp_path: Path, apt_status: int
) -> None:
    bin_dir = _fake_bin(tmp_path, uid=0, apt=True, redis=True, apt_status=apt_status)
    out = _dev(tmp_path, bin_dir, "test")
    calls = (tmp_path / "apt.log").read_text().splitlines()
    assert len(calls) == 2, calls
    assert "update -qq" in calls[0]
    assert calls[1].endswith("install -y -qq --no-install-recommends chromium fonts-liberation")
    # the fake apt-get installed nothing (or failed): the check after it says so, and the
    # run stops
    assert out.returncode == 1
    assert "missing chromium" in out.stderr
    assert "missing redis-server" not in out.stderr  # present, not reported


def test_dev_test_of_a_chosen_subset_only_notes_what_is_missing(tmp_path: Path) -> None:
    bin_dir = _fake_bin(tmp_path, uid=0, apt=True, redis=False)
    out = _dev(tmp_path, bin_dir, "test", "tests/test_exports.py")
    assert "dev: note: missing redis-server" in out.stderr
    assert not (tmp_path / "apt.log").exists()
    # it went on to bootstrap (which cannot work here: no python3 on this PATH)
    assert "every test needs" not in out.stderr


def test_dev_and_the_tests_look_for_the_same_pieces() -> None:
    dev = (ROOT / "dev").read_text()
    browser = (ROOT / "tests" / "browser" / "lab.py").read_text()
    service = (ROOT / "tests" / "service_support.py").read_text()
    assert "SCFEEDS_CHROMIUM:-/usr/bin/chromium" in dev
    assert 'os.environ.get("SCFEEDS_CHROMIUM") or "/usr/bin/chromium"' in browser
    assert "command -v redis-server" in dev
    assert 'shutil.which("redis-server")' in service
    assert "./dev test" in (ROOT / ".ci" / "run").read_text()
    assert os.access(ROOT / "dev", os.X_OK)
