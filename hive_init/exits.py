"""Exit statuses of hive-init, documented in the README; one place so they never drift."""

OK = 0
CRITICAL_FAILED = 1  # a critical program went FATAL (or exited for good): the container should restart
USAGE = 2  # bad command line (argparse's own status)
UNREACHABLE = 2  # status/control: the init could not be reached
NOT_FOUND = 3  # control: no such program
SOFTWARE = 70  # EX_SOFTWARE: a bug in hive-init; the message says where
CANNOT_EXECUTE = 126  # single-command mode: the command exists but cannot be executed
NOT_FOUND_COMMAND = 127  # single-command mode: the command does not exist
CONVERT_INCOMPLETE = 4  # convert: written, but some settings have no equivalent (each reported)
NO_INPUT = 66  # EX_NOINPUT: convert's source file cannot be read
CONFIG = 78  # EX_CONFIG: the configuration is invalid; the one-line message names file, program, field
CANNOT_LISTEN = 73  # EX_CANTCREAT: the control socket or the HTTP port cannot be had; nothing was spawned


def describe_internal_error(error: BaseException) -> str:
    """One line for a bug: the innermost exception (task groups wrap it in groups) and the
    file:line where it was raised. HIVE_INIT_DEBUG=1 adds the whole traceback on stderr."""
    import os
    import sys
    import traceback

    if os.environ.get("HIVE_INIT_DEBUG") == "1":
        traceback.print_exception(error, file=sys.stderr)
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"internal error: {type(error).__name__}: {error}{where}"
