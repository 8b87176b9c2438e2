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
