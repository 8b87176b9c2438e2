"""Programs of an init that died without stopping them (SIGKILLed while not PID 1, or the OOM
killer) are stopped by the next init on the same control socket, before it spawns anything.

Why not a parent-death signal: PR_SET_PDEATHSIG has to be set in the child between fork and exec
(after its setuid, which clears it), so either with `preexec_fn` (not safe once the init has worker
threads, and it takes subprocess off its fast spawn path) or with the exec wrapper (a Python start
per spawn: the crash->restart latency would get worse); and it would hit the postmaster with a
signal at an arbitrary moment. A record costs nothing per spawn: the running programs' PIDs and
start times, rewritten when that set changes, in a directory only the init's user can write.
A process is stopped only if its PID *and* its start time match (a PID reused since is left
alone), with the program's own stop signal (PostgreSQL: a fast shutdown, no crash recovery),
then SIGKILL after its stop_timeout. Where the init is PID 1, its death ends the namespace and
everything in it: nothing is left over.
"""

import json
import os
import signal
import time
from typing import TYPE_CHECKING, Any

from hive_init import TYPING, log, procfs

if TYPING:  # typeshed's hashlib.sha256 (no stubs for the C modules)
    from hashlib import sha256
else:
    # The interpreter's own SHA-256 (3.11: _sha256, 3.12+: _sha2), the same digest as hashlib's:
    # hashlib initialises OpenSSL's digests, 0.6 MiB kept for the init's whole life for one name.
    try:
        from _sha2 import sha256
    except ImportError:
        try:
            from _sha256 import sha256
        except ImportError:  # a build without them
            from hashlib import sha256

if TYPE_CHECKING:
    from hive_init.runtime.program import Program

RECORD_LIMIT = 1024 * 1024


def record_path(control_socket: str) -> str:
    """One record per control socket: the socket is what makes an init this init."""
    from hive_init.paths import default_socket_path
    from hive_init.securefs import private_directory

    directory = "/run/hive-init" if os.geteuid() == 0 else os.path.dirname(default_socket_path())
    private_directory(directory)  # raises OSError (UnsafePath) when it cannot be ours alone
    digest = sha256(os.path.abspath(control_socket).encode()).hexdigest()[:16]
    return os.path.join(directory, f"programs-{digest}.json")


def stop_leftovers(path: str) -> None:
    """Before the first spawn: stop what the record names and is still the same process."""
    from hive_init.config.expand import read_regular_file

    try:
        entries = json.loads(read_regular_file(path, RECORD_LIMIT))
    except FileNotFoundError:
        return
    except (OSError, ValueError) as e:
        log.get_logger().warning(f"ignoring the record of a previous init's programs ({path}): {e}")
        return
    import psutil

    left = []
    for entry in entries if isinstance(entries, list) else []:
        try:
            stat = procfs.read_stat(int(entry["pid"]))
            if stat is None or stat.start_ticks != int(entry["start_ticks"]):
                continue  # gone, or the PID was reused: not ours
            process = psutil.Process(stat.pid)  # the same process: psutil checks its start time too
            log.get_logger().warning("stopping a program left running by a previous init", target=str(entry["name"]),
                                     pid=process.pid)
            os.killpg(process.pid, int(entry["signal"]))
            left.append((process, time.monotonic() + float(entry["timeout"])))
        except (KeyError, TypeError, ValueError, ProcessLookupError, PermissionError, psutil.Error):
            continue
    for process, deadline in left:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except psutil.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
            except (OSError, psutil.Error):
                pass
        except psutil.Error:
            pass
    _remove(path)


class Recorder:
    """Keeps the record in step with the running programs."""

    def __init__(self, path: str):
        self.path = path
        self.written: frozenset[tuple[str, int]] = frozenset()

    def update(self, programs: "dict[str, Program]") -> None:
        running = frozenset((p.name, p.pid) for p in programs.values() if p.pid is not None)
        if running == self.written:
            return
        entries: list[dict[str, Any]] = []
        for name, pid in sorted(running):
            # its start time (clock ticks after boot) from procfs, not psutil (0.7 MiB kept)
            stat = procfs.read_stat(pid)
            if stat is None:
                continue
            spec = programs[name].spec
            entries.append({"name": name, "pid": pid, "start_ticks": stat.start_ticks,
                            "signal": int(spec.stop_signal), "timeout": spec.stop_timeout})
        temporary = self.path + ".new"
        try:
            # our own 0700 directory: nobody else can have put a link here
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(entries, f)
            os.replace(temporary, self.path)
            self.written = running
        except OSError as e:
            log.get_logger().warning(f"cannot record the running programs in {self.path}: {e.strerror}")

    def close(self) -> None:
        """A clean exit: every program is stopped, nothing to record."""
        _remove(self.path)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
