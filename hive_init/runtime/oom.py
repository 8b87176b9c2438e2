"""Who the kernel's OOM killer takes first, and telling an OOM kill from a plain SIGKILL.

Scores: each program's `oom_score_adj` (-1000 never .. 1000 first; kind = "postgres" defaults to
DEFAULT_SCORES below, others to 0), written by the init to /proc/PID/oom_score_adj right after
the spawn, and inherited by whatever the program forks later. It is written by the init, not by
the exec wrapper before exec: Popen returns only once the exec has succeeded, the write follows
in the same step of the event loop (no await in between), and a program must load its
interpreter or libraries before it can fork anything, so no child can be forked with the old
score in practice; the wrapper would cost a Python start on every spawn.

Lowering a score below 0 needs CAP_SYS_RESOURCE, which root lacks in Docker by default (and
here): the kernel answers EACCES. Then every score is raised instead: the range from the
lowest configured score to 1000 is mapped onto 0..1000 (the most protected program lands at
0, the normal score 0 somewhere above it), so the order between programs holds strictly (a
plain shift would clamp several at 1000); said once in the log. PostgreSQL's backends are
reset at their fork to the normal score (0, or 0 mapped the same way) through
PG_OOM_ADJUST_FILE / PG_OOM_ADJUST_VALUE, as PostgreSQL documents, so a runaway backend is
killed while the postmaster (and with it every other session) survives.

Attribution: a main process that died of SIGKILL we did not send was killed by the OOM killer
when the cgroup's oom_kill count (v2 memory.events, v1 memory.oom_control) or the kernel's
(/proc/vmstat, host-wide) moved since it was spawned.
"""

import errno
from dataclasses import dataclass

import anyio

from hive_init import log, procfs
from hive_init.config.model import ProgramSpec
from hive_init.runtime import resources

DEFAULT_SCORES = {"postgres": -900}  # the postmaster: after everything else, short of never (-1000)
SIGKILL_EXIT = -9


@dataclass
class Plan:
    lowest: int = 0  # when lowering is not permitted: the configured score that is mapped to 0
    lowering_permitted: bool = True

    def effective(self, score: int) -> int:
        if self.lowering_permitted or self.lowest >= 0:
            return clamp(score)
        return round((clamp(score) - self.lowest) * 1000 / (1000 - self.lowest))


_plan = Plan()
_warned = False


def score_of(spec: ProgramSpec) -> int:
    return spec.oom_score_adj if spec.oom_score_adj is not None else DEFAULT_SCORES.get(spec.kind, 0)


def clamp(value: int) -> int:
    return max(-1000, min(1000, value))


def lowering_permitted() -> bool:
    """Whether this process may lower a score below its own (what its children start from):
    try one step down on our own score, and undo it (raising is always permitted)."""
    own = procfs.read_oom_score_adj()
    if own is None or own <= -1000:
        return own is not None
    try:
        procfs.write_oom_score_adj("self", own - 1)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            return False
        raise
    procfs.write_oom_score_adj("self", own)
    return True


def configure(specs: "list[ProgramSpec]") -> Plan:
    """At start and at every reload: the shift that keeps the configured order."""
    global _plan, _warned
    lowest = min((score_of(s) for s in specs), default=0)
    plan = Plan()
    if lowest < 0:
        try:
            permitted = lowering_permitted()
        except OSError:
            permitted = False
        if not permitted:
            plan = Plan(lowest=lowest, lowering_permitted=False)
            if not _warned:
                _warned = True
                log.get_logger().warning(
                    f"cannot lower oom_score_adj (no CAP_SYS_RESOURCE): scores from {lowest} to 1000 are raised "
                    "onto 0 to 1000 instead, so the OOM killer's order holds",
                    scores=",".join(f"{s.name}={plan.effective(score_of(s))}" for s in specs),
                    normal=plan.effective(0))
    _plan = plan
    return plan


def effective(spec: ProgramSpec) -> int:
    return _plan.effective(score_of(spec))


def normal_score() -> int:
    """What an unprotected process gets: 0, raised with the others when lowering is refused."""
    return _plan.effective(0)


def postgres_environment() -> dict[str, str]:
    """The postmaster's environment: each backend writes PG_OOM_ADJUST_VALUE to its own score
    right after it is forked (PostgreSQL's fork_process), so only the postmaster is protected."""
    return {"PG_OOM_ADJUST_FILE": "/proc/self/oom_score_adj", "PG_OOM_ADJUST_VALUE": str(normal_score())}


def after_spawn(program: "resources.Watched", pid: int) -> tuple[int | None, int | None]:
    """Right after the spawn, on the event loop on purpose (no await between exec and the
    write): the score, and the OOM counts to compare with at the exit. Both are writes and reads
    of the kernel's own pseudo-files (tens of microseconds), never of a file anyone controls."""
    score = effective(program.spec)
    if score != procfs.read_oom_score_adj(pid):
        try:
            procfs.write_oom_score_adj(pid, score)
        except OSError as e:
            if e.errno not in (errno.ESRCH, errno.ENOENT):  # gone already: its exit tells
                program.log.warning(f"cannot set oom_score_adj to {score}: {e.strerror}")
    return procfs.oom_kill_counts(procfs.own_cgroup())


async def exit_reason(program: "resources.Watched", code: int, counts_at_spawn: tuple[int | None, int | None] | None) -> str | None:
    """"killed by the OOM killer" for a SIGKILL exit that the OOM counts explain, else None."""
    if code != SIGKILL_EXIT or counts_at_spawn is None:
        return None
    now = await anyio.to_thread.run_sync(procfs.oom_kill_counts, procfs.own_cgroup())
    if not procfs.counts_moved(counts_at_spawn, now):
        return None
    i = 0 if procfs.counts_moved(counts_at_spawn[:1], now[:1]) else 1
    which = ("the container's memory cgroup", "the kernel")[i]
    resources.state_of(program).oom_kills += 1
    return f"killed by the OOM killer (SIGKILL; {which}'s oom_kill count went {counts_at_spawn[i]} to {now[i]})"
