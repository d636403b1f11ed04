"""The wheel and the sdist: built by `python -m build` from the repository's files, checked by `twine check
--strict`, and holding what an installation needs (the units, the worker templates, the LICENSE).

The build runs on a copy of the repository's files in a temporary directory, so it leaves nothing (build/,
dist/, *.egg-info) in the checkout; `--no-isolation` uses the dev extra's setuptools instead of downloading one.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from marea import package_version
from marea.systemd import DROP_INS, UNITS

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("dist")
    src = tmp / "src"
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split("\0")  # fmt: skip
    for rel in filter(None, files):
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    out = tmp / "out"
    res = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    wheels, sdists = list(out.glob("*.whl")), list(out.glob("*.tar.gz"))
    assert len(wheels) == len(sdists) == 1, list(out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


def test_twine_check_passes(dists: dict[str, Path]) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(dists["wheel"]), str(dists["sdist"])],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("PASSED") == 2, res.stdout


def test_wheel_holds_units_templates_and_license(dists: dict[str, Path]) -> None:
    names = set(zipfile.ZipFile(dists["wheel"]).namelist())
    for unit in [*UNITS, *DROP_INS]:
        assert f"marea/systemd/{unit}" in names
    assert "marea/batch/templates/slurm-worker.sh" in names
    assert "marea/py.typed" in names
    version = package_version()
    license_file = f"marea-{version}.dist-info/licenses/LICENSE"
    assert license_file in names
    text = zipfile.ZipFile(dists["wheel"]).read(license_file).decode()
    assert "Apache License" in text and "END OF TERMS AND CONDITIONS" in text
    metadata = zipfile.ZipFile(dists["wheel"]).read(f"marea-{version}.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata
    for extra in ("sim", "openstack", "ec2", "htcondor", "postgres"):
        assert f"Provides-Extra: {extra}" in metadata


def test_sdist_holds_license_and_sources(dists: dict[str, Path]) -> None:
    with tarfile.open(dists["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"LICENSE", "README.md", "pyproject.toml", "src/marea/systemd/marea.service", "src/marea/cli.py"} <= names
