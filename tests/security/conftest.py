"""The attacks of issue #18, each run as the unprivileged user who would make it, against the
real init (as PID 1 of a new PID namespace where that matters). Every test asserts the attack
fails; each was checked to succeed against the code before the fix.

Users: `hiapp<suffix>` (what `app` is in the images: it owns the log directory and runs the
API) and `himal<suffix>` (`mallory`, any other local user), made for the run and removed after.
PostgreSQL runs as `postgres`, as in the images."""

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, postgres_user, starter  # noqa: F401  (postgres_user: a fixture)

pytestmark = pytest.mark.skipif(not ROOT, reason="the attacks need root (users, PID namespaces)")


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """`argv` as this user (no supplementary groups), with a minimal environment."""
        return subprocess.run(list(argv), user=self.uid, group=self.gid, extra_groups=[],
                              env={"PATH": "/usr/bin:/bin", "HOME": "/"}, capture_output=True, text=True,
                              **{"timeout": 60, **kwargs})

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(list(argv), user=self.uid, group=self.gid, extra_groups=[],
                                env={"PATH": "/usr/bin:/bin", "HOME": "/"}, start_new_session=True, **kwargs)


def _make_user(name: str) -> User:
    subprocess.run(["useradd", "--system", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True)
    entry = pwd.getpwnam(name)
    return User(name, entry.pw_uid, entry.pw_gid)


@pytest.fixture(scope="session")
def attackers() -> Iterator[tuple[User, User]]:
    """(app, mallory), removed at the end of the run."""
    if not ROOT:
        pytest.skip("needs root")
    suffix = secrets.token_hex(3)
    made: list[User] = []
    try:
        for role in ("hiapp", "himal"):
            made.append(_make_user(f"{role}{suffix}"))
        yield made[0], made[1]
    finally:
        for user in made:
            subprocess.run(["userdel", user.name], capture_output=True)


@pytest.fixture
def app(attackers: tuple[User, User]) -> User:
    return attackers[0]


@pytest.fixture
def mallory(attackers: tuple[User, User]) -> User:
    return attackers[1]


@pytest.fixture
def postgres(postgres_user: str) -> User:  # noqa: F811
    entry = pwd.getpwnam(postgres_user)
    return User(entry.pw_name, entry.pw_uid, entry.pw_gid)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A 0755 directory under /tmp (pytest's tmp_path is 0700: the switched users could not
    reach it)."""
    path = Path(tempfile.mkdtemp(prefix="hive-sec-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_init(tmp_path: Path) -> Iterator[Any]:
    yield from starter(tmp_path)


def victim_file(directory: Path, text: str = "root's own file\n") -> Path:
    """A root-owned 0600 file in a root-owned 0700 directory: what an attack wants to reach."""
    directory.mkdir(mode=0o700)
    path = directory / "victim"
    path.write_text(text)
    path.chmod(0o600)
    return path


def snapshot(path: Path) -> tuple[bytes, int, int, int]:
    st = path.stat()
    return path.read_bytes(), st.st_uid, st.st_gid, st.st_mode


def wait_until(predicate: Any, timeout: float = 30.0, what: str = "") -> Any:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def chown_tree(path: Path, user: User) -> None:
    os.chown(path, user.uid, user.gid)
