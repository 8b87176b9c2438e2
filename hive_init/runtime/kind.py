"""How a kind of program is prepared, started, probed and stopped. Plain `command` programs use
`Kind` as it is; `kind = "postgres"` overrides the steps it knows better (hive_init.postgres)."""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from hive_init.config.model import Probe, ProgramSpec, RunAs
from hive_init.runtime.spawn import Child, child_environment

if TYPE_CHECKING:
    from hive_init.health.probes import ProbeResult


class PrepareError(Exception):
    """The program cannot be started now (str() is the one-line reason); handled like a crash."""


@dataclass(frozen=True)
class Launch:
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str | None
    run_as: RunAs | None


class Kind:
    def __init__(self, spec: ProgramSpec):
        self.spec = spec

    async def prepare(self) -> Launch:
        """Before every start: what to run. May take time (PostgreSQL's first boot)."""
        spec = self.spec
        return Launch(spec.command, child_environment(spec.environment, spec.run_as, spec.environment_passthrough), spec.directory, spec.run_as)

    async def started(self, child: Child) -> None:
        """Returns once the spawned child counts as started (STARTING → RUNNING)."""

    def stop_plan(self) -> list[tuple[int, float]]:
        """Signals to send in turn, each with how long to wait for the exit; SIGKILL comes after."""
        return [(self.spec.stop_signal, self.spec.stop_timeout)]

    async def probe(self, probe: Probe) -> "ProbeResult":
        raise NotImplementedError(f"no {probe.kind} probe for kind {self.spec.kind!r}")

    async def exited(self, code: int) -> None:
        """After the child exited and was reaped (cleanup before a restart)."""


def kind_for(spec: ProgramSpec) -> Kind:
    if spec.kind == "postgres":
        from hive_init.postgres.kind import PostgresKind

        return PostgresKind(spec)
    return Kind(spec)

