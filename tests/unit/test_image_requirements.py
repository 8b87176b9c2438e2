"""The images install these requirement files with --require-hashes --no-deps: they must be exactly
what uv.lock pins, so that the images run the versions the tests ran."""

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXPORT = ["uv", "export", "--frozen", "--no-emit-project", "-q"]
FILES = {
    # Dockerfile.base: the runtime dependencies and PostgreSQL
    "images/base/requirements.txt": ["--no-dev", "--extra", "postgres"],
    # images/genie, images/agent: what the service app adds (the `app` dependency group)
    "images/app/requirements.txt": ["--only-group", "app"],
}


def body(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("#")]  # the header names the command


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not installed (.ci/run installs it)")
@pytest.mark.parametrize("path", FILES)
def test_the_image_requirements_are_uv_lock_exported(path):
    command = [*EXPORT, *FILES[path]]
    exported = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60, check=True).stdout
    assert body((REPO / path).read_text()) == body(exported), (
        f"{path} is out of date with uv.lock: run\n  {' '.join(command)} -o {path}")


@pytest.mark.parametrize("path", FILES)
def test_every_pin_has_a_hash(path):
    pins = [line for line in (REPO / path).read_text().splitlines() if line and not line.startswith((" ", "#"))]
    assert pins and all("==" in pin and pin.rstrip().endswith("\\") for pin in pins), pins
