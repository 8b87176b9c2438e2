"""Helpers for the PostgreSQL tests: the one reaper driven by SIGCHLD (as the supervisor's signal
task drives it), a scratch directory PostgreSQL's user can reach, free ports, and configs."""

import os
import shutil
import signal
import tempfile
import textwrap
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import pytest

from hive_init.config import loads
from hive_init.config.model import ProgramSpec
from hive_init.runtime.pid1 import become_subreaper, reaper
from tests.helpers import free_port  # noqa: F401  (re-exported for the tests that import it from here)

T = TypeVar("T")
ROOT = os.geteuid() == 0


async def _reaper_task(*, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
    with anyio.open_signal_receiver(signal.SIGCHLD) as signals:
        task_status.started()
        reaper.reap()
        async for _ in signals:
            reaper.reap()


def run_with_reaper(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """`fn(*args)` in a fresh event loop next to the one reaper: outside a supervisor, nothing
    else would ever wait for the children that run_command/spawn start."""

    async def main() -> T:
        outcome: list[Any] = []
        async with anyio.create_task_group() as tg:
            await tg.start(_reaper_task)
            try:
                outcome.append(await fn(*args))
            except Exception as e:  # raised below, outside the task group (which would wrap it)
                outcome.append(e)
            finally:
                tg.cancel_scope.cancel()
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    become_subreaper()  # backends of a killed postmaster come to us, as they would to PID 1
    return anyio.run(main)



@pytest.fixture(scope="session")
def scratch_root(postgres_user: str | None) -> Any:
    """Under /tmp with 0755 parents (pytest's own tmp_path is 0700: the postgres user could not
    reach a data directory there)."""
    path = tempfile.mkdtemp(prefix="hive-pg-tests-", dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def scratch(scratch_root: str, request: pytest.FixtureRequest) -> str:
    name = request.node.name.replace("[", "-").replace("]", "")[:40]
    path = tempfile.mkdtemp(prefix=name + "-", dir=scratch_root)
    os.chmod(path, 0o755)
    return path


def spec_from(toml: str, env: dict[str, str] | None = None) -> ProgramSpec:
    config = loads(textwrap.dedent(toml), "test.toml", env if env is not None else dict(os.environ))
    return config.programs["postgres"]


def base_toml(scratch: str, port: int, extra: str = "", data_dir: str | None = None) -> str:
    """A [programs.postgres] table with everything in `scratch` (init_dir too, so the host's
    /docker-entrypoint-initdb.d never counts)."""
    return textwrap.dedent(f"""\
        [programs.postgres]
        kind = "postgres"
        data_dir = "{data_dir or os.path.join(scratch, 'data')}"
        socket_dir = "{os.path.join(scratch, 'sock')}"
        init_dir = "{os.path.join(scratch, 'initdb.d')}"
        port = {port}
        listen_addresses = "127.0.0.1"
        """) + textwrap.dedent(extra)
