"""hive-init: a small, event-driven init and supervisor for all-in-one containers."""

import sys as _sys

__version__ = "0.1.0"
TYPING = False  # true for mypy only (pyproject: always_true): `typing` is not imported at start

# The signal mask hive-init was started with (None until `run` blocks): the child of
# single-command mode gets it back, so our own blocking never leaks to it.
caller_mask: "set[int] | None" = None


def block_signals() -> None:
    """Every signal blocked, the caller's mask kept. `_signal` is the C module: built in, so
    this costs no import and runs before any other line of hive-init."""
    global caller_mask
    if TYPING:  # the same functions, typed by typeshed's `signal` (there are no stubs for _signal)
        import signal as _signal
    else:
        import _signal

    if caller_mask is None:
        caller_mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, _signal.valid_signals())


# `hive-init run ...` (the console script imports this module first; `python -m hive_init` too):
# until the init's signal handling is in place, nothing sent must be lost (PID 1 would drop it)
# or kill us with its default action (every signal but KILL/STOP, faults sent by kill(2) too).
# Only for the hive-init command itself (its console script, `python -m hive_init`: argv[0] is
# "-m" while the module is imported), not for every program that imports the package.
if _sys.argv[:1] and _sys.argv[0].rsplit("/", 1)[-1] in ("hive-init", "-m") and (
        _sys.argv[1:2] == ["run"] or (_sys.argv[1:2] in (["-s"], ["--socket"]) and _sys.argv[3:4] == ["run"])):
    block_signals()
