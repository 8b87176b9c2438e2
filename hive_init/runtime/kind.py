"""How a kind of program is prepared, started, probed and stopped. Plain `command` programs use
`Kind` as it is; other kinds override the steps they know better and register themselves
(`kind = "postgres"`: hive_init.postgres.register(), called by the CLI)."""

from collections.abc import Callable
from dataclasses import dataclass

from hive_init.config.model import Probe, ProgramSpec, RunAs
from hive_init.runtime.spawn import Child, child_environment


@dataclass(frozen=True)
class ProbeResult:
    """What one probe run observed (health/probes.py runs them; a kind may have its own probe)."""

    ok: bool
    latency: float
    message: str
    at: float  # unix time


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
        return Launch(spec.command, child_environment(spec.environment, spec.run_as), spec.directory, spec.run_as)

    async def started(self, child: Child) -> None:
        """Returns once the spawned child counts as started (STARTING → RUNNING)."""

    def stop_plan(self) -> list[tuple[int, float]]:
        """Signals to send in turn, each with how long to wait for the exit; SIGKILL comes after."""
        return [(self.spec.stop_signal, self.spec.stop_timeout)]

    async def probe(self, probe: Probe) -> ProbeResult:
        raise NotImplementedError(f"no {probe.kind} probe for kind {self.spec.kind!r}")

    async def exited(self, code: int) -> None:
        """After the child exited and was reaped (cleanup before a restart)."""


# kind name -> how to make its Kind for a spec; filled by register_kind (command is Kind itself)
_KINDS: dict[str, Callable[[ProgramSpec], Kind]] = {}


def register_kind(name: str, factory: Callable[[ProgramSpec], Kind]) -> None:
    """Make `kind = name` programs run as `factory(spec)` builds them. The factory may import
    its module only when called, so that an init without such a program never loads it."""
    _KINDS[name] = factory


def kind_for(spec: ProgramSpec) -> Kind:
    if spec.kind == "command":
        return Kind(spec)
    factory = _KINDS.get(spec.kind)
    if factory is None:  # the config accepted a kind the runtime does not know: a wiring bug
        raise LookupError(f"kind {spec.kind!r} is not registered with the runtime (hive_init.runtime.kind.register_kind)")
    return factory(spec)

