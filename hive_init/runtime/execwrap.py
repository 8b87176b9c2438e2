"""The exec wrapper: a tiny program that hive-init runs between fork and the real exec, for
the programs that need something done in the child itself (only those: it costs a Python start
per spawn). Standard library only, run as `python -I -S execwrap.py OPTIONS -- COMMAND...`.

It runs as root until it switches to the program's user, so nothing of the program's environment
may steer it: spawned with an empty environment, it reads none of what the dynamic loader and
libc honour (LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT, GLIBC_TUNABLES, LOCPATH, GCONV_PATH, ...: a
root exec is not AT_SECURE, so ld.so would follow them), and -I -S make its interpreter ignore
PYTHON* variables, the script's directory, the user's and the site's packages. The program's
environment comes on a descriptor and is given to the final exec only, where it takes effect as
the program's user.

Options (leading, `--name=value`, before `--`; each does one thing, in this order):
  --env-fd=FD         the program's environment: a memory file of NAME=value entries, each
                      ended by NUL (what environment_fd writes), read from offset 0 and closed
                      before anything else; without it, the wrapper's own environment
  --listen=FD:NAME    (repeated) the held sockets: moved to descriptors 3, 4, ... in the order
                      given, with LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID (this process's own
                      pid, which the exec keeps) set as sd_listen_fds(3) reads them
  --user=UID --group=GID --groups=G1,G2,...
                      switch to this user after the descriptors are in place (the wrapper starts
                      as root so that its interpreter and this file need not be readable by the
                      program's user)

Errors are one line on stderr and the exit status a shell gives: 126 cannot execute, 127 not
found (the numbers of hive_init.exits; not imported: this file imports nothing of hive-init).
"""

from __future__ import annotations  # annotations stay text: `typing` is not imported per spawn

import fcntl
import os
import signal
import sys

TYPING = False  # true for mypy only (pyproject: always_true)
if TYPING:
    from collections.abc import Mapping, Sequence
    from typing import Any

LISTEN_FDS_START = 3
NOT_FOUND = 127
CANNOT_EXECUTE = 126


def main(argv: list[str]) -> int:
    try:
        options, command = parse(argv)
    except ValueError as e:
        return fail(f"usage: {e}", CANNOT_EXECUTE)
    try:
        env = read_environment(options["env_fd"]) if options["env_fd"] is not None else dict(os.environb)
    except OSError as e:
        return fail(f"cannot read the program's environment: {e.strerror}", CANNOT_EXECUTE)
    if options["listen"]:
        env.update(pass_listen_fds(options["listen"]))
    if options["user"] is not None:
        try:
            switch_user(options["user"], options["group"], options["groups"])
        except OSError as e:
            return fail(f"cannot switch to user {options['user']}: {e.strerror}", CANNOT_EXECUTE)
    # Python ignores SIGPIPE and SIGXFSZ at start-up and ignored signals survive exec: the
    # program gets the defaults, as a direct spawn gives them (Popen's restore_signals)
    for name in ("SIGPIPE", "SIGXFSZ"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    try:
        os.execvpe(command[0], command, env)  # PATH looked up in the program's environment
    except FileNotFoundError:
        return fail(f"cannot execute {command[0]!r}: no such file or directory", NOT_FOUND)
    except PermissionError:
        return fail(f"cannot execute {command[0]!r}: permission denied", CANNOT_EXECUTE)
    except OSError as e:
        return fail(f"cannot execute {command[0]!r}: {e.strerror}", CANNOT_EXECUTE)
    return CANNOT_EXECUTE  # not reached: exec does not return


def parse(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    options: dict[str, Any] = {"env_fd": None, "listen": [], "user": None, "group": None, "groups": []}
    i = 0
    while i < len(argv) and argv[i] != "--":
        option, sep, value = argv[i].partition("=")
        if not sep:
            raise ValueError(f"{option} needs a value (--option=VALUE)")
        if option == "--env-fd":
            options["env_fd"] = int(value)
        elif option == "--listen":
            fd, _, name = value.partition(":")
            options["listen"].append((int(fd), name))
        elif option == "--user":
            options["user"] = int(value)
        elif option == "--group":
            options["group"] = int(value)
        elif option == "--groups":
            options["groups"] = [int(g) for g in value.split(",") if g]
        else:
            raise ValueError(f"unknown option {option}")
        i += 1
    command = argv[i + 1:]
    if not command:
        raise ValueError("no command after --")
    return options, command


def read_environment(fd: int) -> dict[bytes, bytes]:
    """The entries environment_fd wrote. pread from 0: the init's write moved the offset that
    this descriptor shares with the init's copy."""
    chunks = []
    offset = 0
    while True:
        chunk = os.pread(fd, 1 << 16, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    os.close(fd)  # before the listening sockets move to 3, 4, ...: it may sit there
    env = {}
    for entry in b"".join(chunks).split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if sep and name:
            env[name] = value
    return env


def pass_listen_fds(listen: list[tuple[int, str]]) -> dict[bytes, bytes]:
    """Descriptors given as FD:NAME end up at 3, 4, ... A passed descriptor may sit where
    another must go (a 4 that goes to 3 while 3 goes to 4): all are first copied above the
    whole range, then put in place, so none is overwritten before it was moved. Returns the
    variables that tell the program so."""
    top = LISTEN_FDS_START + len(listen)
    copies = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, top) for fd, _ in listen]
    for fd, _ in listen:
        os.close(fd)
    for index, copy in enumerate(copies):
        os.dup2(copy, LISTEN_FDS_START + index, inheritable=True)  # kept across exec
        os.close(copy)
    return {b"LISTEN_FDS": str(len(listen)).encode(),
            b"LISTEN_PID": str(os.getpid()).encode(),  # exec keeps the pid: the program's own
            b"LISTEN_FDNAMES": ":".join(name for _, name in listen).encode()}


def switch_user(uid: int, gid: int | None, groups: list[int]) -> None:
    # supplementary groups and group first: after setuid there is no right left to change them
    os.setgroups(groups)
    if gid is not None:
        os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid or (gid is not None and os.getegid() != gid):
        raise OSError(1, "the switch did not take effect")


# what the wrapper's own process is given (spawn passes the program's on --env-fd)
WRAPPER_ENVIRONMENT: dict[str, str] = {}


def wrap(argv: Sequence[str], listen: Sequence[tuple[int, str]], run_as: Any = None,  # run_as: config.model.RunAs
         env_fd: int | None = None) -> list[str]:
    """The command line that runs `argv` through this wrapper (called by spawn, in the init)."""
    options = [f"--env-fd={env_fd}"] if env_fd is not None else []
    options += [f"--listen={fd}:{name}" for fd, name in listen]
    if run_as is not None:
        options += [f"--user={run_as.uid}", f"--group={run_as.gid}", "--groups=" + ",".join(map(str, run_as.groups))]
    return [sys.executable, "-I", "-S", os.path.abspath(__file__), *options, "--", *argv]


def environment_fd(env: Mapping[str, str]) -> int:
    """The program's environment in a memory file for --env-fd (called by spawn, in the init:
    a memfd never blocks, whatever its size). Close-on-exec: spawn passes it to this child only."""
    entries = []
    for name, value in env.items():  # refused as Popen refuses them
        key, text = os.fsencode(name), os.fsencode(value)
        if b"\0" in key or b"\0" in text:
            raise ValueError("embedded null byte")
        if b"=" in key:
            raise ValueError(f"illegal environment variable name {name!r}")
        entries.append(key + b"=" + text + b"\0")
    data = memoryview(b"".join(entries))
    fd = os.memfd_create("hive-init-environment", os.MFD_CLOEXEC)
    try:
        while data:
            data = data[os.write(fd, data):]
    except BaseException:
        os.close(fd)
        raise
    return fd


def fail(message: str, code: int) -> int:
    try:
        os.write(2, f"hive-init: {message}\n".encode(errors="replace"))
    except OSError:
        pass
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
