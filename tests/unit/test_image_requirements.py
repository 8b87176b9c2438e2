"""The images install images/base/requirements.txt with --require-hashes: it must be exactly what
uv.lock pins, so that the image runs the versions the tests ran."""

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXPORT = ["uv", "export", "--frozen", "--no-dev", "--extra", "postgres", "--no-emit-project", "-q"]


def body(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("#")]  # the header names the command


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not installed (.ci/run installs it)")
def test_the_image_requirements_are_uv_lock_exported():
    exported = subprocess.run(EXPORT, cwd=REPO, capture_output=True, text=True, timeout=60, check=True).stdout
    committed = (REPO / "images/base/requirements.txt").read_text()
    assert body(committed) == body(exported), (
        "images/base/requirements.txt is out of date with uv.lock: run\n  " + " ".join(EXPORT)
        + " -o images/base/requirements.txt")


def test_every_pin_has_a_hash():
    text = (REPO / "images/base/requirements.txt").read_text()
    pins = [line for line in text.splitlines() if line and not line.startswith((" ", "#"))]
    assert pins and all("==" in pin and pin.rstrip().endswith("\\") for pin in pins), pins
