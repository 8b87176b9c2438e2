"""Single-command mode (`hive-init run -- CMD ...`), as tini and dumb-init do it: one child in a
process group of its own, every catchable signal forwarded to it, every zombie reaped, and the
child's exit status returned (128+N when signal N killed it)."""

import os
import signal
from collections.abc import Mapping, Sequence

from hive_init import log
from hive_init.runtime.pid1 import CATCHABLE, SignalQueue, become_subreaper, reaper
from hive_init.runtime.spawn import SpawnError, spawn

# signals that only concern the init itself
_OWN = (signal.SIGCHLD,)


async def run_single(argv: Sequence[str], rewrite: Mapping[int, int] | None = None, group: bool = True) -> int:
    become_subreaper()
    rewrite = rewrite or {}
    with SignalQueue(CATCHABLE) as signals:
        try:
            child = spawn(argv, capture=False, new_session=False, inherit_stdio=True, kill_group=False)
        except SpawnError as e:
            log.fatal(str(e))
            return e.code
        _give_terminal(child.pid)
        async for signum in signals:
            if signum == signal.SIGCHLD:
                reaper.reap()
                if child.code is not None:
                    break
                continue
            target = rewrite.get(signum, signum)
            if target == 0:
                continue  # rewritten to nothing: dropped
            try:
                if group:
                    os.killpg(child.pid, target)
                else:
                    os.kill(child.pid, target)
            except ProcessLookupError:
                pass
    assert child.code is not None
    return child.code if child.code >= 0 else 128 - child.code


def _give_terminal(pgid: int) -> None:
    """An interactive child (a shell) needs to be the terminal's foreground group, as with tini."""
    try:
        if os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp():
            handler = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
            try:
                os.tcsetpgrp(0, pgid)
            finally:
                signal.signal(signal.SIGTTOU, handler)
    except OSError:
        pass


