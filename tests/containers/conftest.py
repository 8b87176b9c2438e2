"""Shared by the hive-containers tests: running the command, podman set up as the image test sets it
up (tests/images/podman.py), the images tagged by the hash of what goes into them, and fixtures
captured from real engine output (HIVE_CAPTURE_FIXTURES=1 rewrites them)."""

import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
CAPTURE = bool(os.environ.get("HIVE_CAPTURE_FIXTURES"))

# what the images are built from (Dockerfile.base COPYs images/base/requirements.txt, pyproject.toml,
# README.md, .gitignore, hive_init and hive_containers; the service images add images/app and their
# configs). README.md and .gitignore are only package metadata: left out, so that editing the docs
# does not cost a rebuild.
BASE_INPUTS = ("Dockerfile.base", "pyproject.toml", "hive_init", "hive_containers", "images/base")
SERVICE_INPUTS = {
    "genie": ("images/genie", "images/app", "configs/genie.toml", "configs/postgresql.conf", "configs/pg_hba.conf"),
    "agent": ("images/agent", "images/app", "configs/agent.toml", "configs/postgresql.conf", "configs/pg_hba.conf"),
}
TEST_TAG_PREFIX = "test-"


def tree_hash(paths, seed: str = "") -> str:
    digest = hashlib.sha256(seed.encode())
    for rel in paths:
        root = REPO / rel
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            if "__pycache__" in f.parts or f.suffix == ".pyc" or ".egg-info" in str(f):
                continue
            digest.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def image_tags(service: str) -> dict[str, str]:
    """HIVE_BASE_IMAGE / HIVE_<SERVICE>_IMAGE for the compose files: tags that change when the
    sources change, so that an image is reused only while it is what the sources would build."""
    base = tree_hash(BASE_INPUTS)
    return {"HIVE_BASE_IMAGE": f"localhost/hive-init-base:{TEST_TAG_PREFIX}{base}",
            f"HIVE_{service.upper()}_IMAGE": f"localhost/hive-{service}:{TEST_TAG_PREFIX}"
                                             f"{tree_hash(SERVICE_INPUTS[service], base)}"}


@dataclass
class Run:
    code: int
    out: str
    err: str
    seconds: float

    def __str__(self) -> str:
        return f"exit {self.code} after {self.seconds:.1f}s\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


def hive_containers(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> Run:
    """The real command line, in a subprocess (as an operator runs it)."""
    import time

    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "hive_containers.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)
    return Run(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)


def capture(name: str, text: str, secrets: tuple[str, ...] = ()) -> None:
    """Keep a real engine output as a fixture (only with HIVE_CAPTURE_FIXTURES=1); the test's
    passwords are masked."""
    if not CAPTURE:
        return
    for secret in secrets:
        text = text.replace(secret, "REDACTED")
    if name.endswith(".json"):
        text = json.dumps(json.loads(text), indent=2) + "\n"
    (FIXTURES / name).write_text(text)


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


@pytest.fixture(scope="module")
def podman():
    from tests.images.podman import Podman, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    return Podman()


def prune_test_images(podman, keep: set[str]) -> None:
    """Images these tests tagged from older sources: removed, the current ones kept for the next run."""
    listing = podman("images", "--format", "{{.Repository}}:{{.Tag}}", check=False).stdout.split()
    stale = [ref for ref in listing if re.match(rf"^localhost/hive-(init-base|genie|agent):{TEST_TAG_PREFIX}", ref)
             and ref not in keep]
    if stale:
        podman("rmi", *stale, check=False)
