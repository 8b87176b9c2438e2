"""Single-command mode (`hive-init run -- CMD ...`), as tini and dumb-init do it, and as lean.

One child in a process group of its own, every signal that can be caught forwarded to it (its
whole group, or the child alone with --child-only), every zombie reaped, and the child's exit
status returned (128+N when signal N killed it).

The shape is tini's: every signal is blocked from the first line hive-init runs (hive_init/
__init__.py) to the end and collected synchronously by sigwaitinfo in one loop; the child is
forked and execs from `os`; one waitpid loop; os._exit when the child is gone. Nothing else is
imported (no asyncio, anyio, argparse, config): this module stays resident for the container's
whole life, so its cost is the interpreter's and little more.

Why blocked and never handled: a signal that is blocked is queued even for PID 1 (which the
kernel gives no default actions), so nothing sent during the start is lost; and a fault of our
own (a real SIGSEGV) cannot be blocked, the kernel kills us with it as it should, so whatever
sigwaitinfo returns was *sent* (kill(2), SI_USER) and is forwarded like any other signal.

Terminal and job control: the child gets its own process group and, when hive-init holds the
terminal's foreground, the terminal too, in the child before it execs (nothing can stop it at
start with SIGTTIN/SIGTTOU). When the child stops for job control (Ctrl-Z), hive-init stops
itself so that the shell sees the job stop; SIGCONT (`fg`) gives the terminal back to the child
and continues it.
"""

# The C module, not `signal`: that one imports enum (and with it functools, collections, ...), a
# few milliseconds of every start and ~0.7 MiB for the container's life, for names we rarely need.
import os

from hive_init.prctl import PR_SET_CHILD_SUBREAPER, PR_SET_PDEATHSIG
from hive_init.prctl import prctl as call_prctl

TYPING = False  # true for mypy only (pyproject: always_true): `typing` itself is not imported here
if TYPING:  # the same functions and constants, typed by typeshed's `signal` (no stubs for _signal)
    import signal
else:
    import _signal as signal

USAGE = 2  # hive_init.exits.USAGE (not imported: one module less for the container's life)
CANNOT_EXECUTE = 126  # hive_init.exits.CANNOT_EXECUTE
NOT_FOUND_COMMAND = 127  # hive_init.exits.NOT_FOUND_COMMAND

ALL = frozenset(signal.valid_signals())  # 1-31 and the real-time signals Python can name (glibc keeps 32, 33)
NEVER_FORWARDED = {signal.SIGCHLD, signal.SIGKILL, signal.SIGSTOP}  # our own / cannot be caught
JOB_STOPS = {signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU}
GROUP_GRACE = 2.0  # seconds the rest of the child's group has between TERM and KILL
KILL_WAIT = 1.0  # seconds for what was KILLed to be reaped before we exit anyway


class Plan:
    """What the command line asked for."""

    def __init__(self, argv: list[str], rewrite: dict[int, int], group: bool, success: set[int],
                 parent_death: int, verbose: bool):
        self.argv = argv
        self.rewrite = rewrite  # FROM -> TO; TO 0: dropped
        self.group = group
        self.success = success  # exit statuses reported as 0 (tini -e)
        self.parent_death = parent_death  # signal we get when our parent dies (tini -p); 0: none
        self.verbose = verbose


# ---- the command line (argparse is not imported: see the module's docstring) ------------------

_WITH_VALUE = {"-r": "rewrite", "--rewrite": "rewrite", "-e": "success", "--success-exit": "success",
               "-p": "parent_death", "--parent-death-signal": "parent_death"}
_FLAGS = {"--child-only": "child_only", "-v": "verbose", "--verbose": "verbose"}


def parse(tokens: list[str]) -> "Plan | int | None":
    """`run`'s arguments: a Plan, an exit status (a usage error, said on stderr), or None when
    this is not single-command mode (config mode, --help, an unknown option): argparse's turn."""
    values: dict[str, list[str]] = {"rewrite": [], "success": [], "parent_death": []}
    flags: set[str] = set()
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "--":
            argv = tokens[i + 1:]
            if not argv:
                return usage("run: a command is missing after --")
            break
        if not token.startswith("-") or token == "-":
            argv = tokens[i:]  # `run CMD ARGS`, as argparse's REMAINDER took it
            break
        name, eq, inline = token.partition("=") if token.startswith("--") else (token[:2], "", token[2:])
        if name in _FLAGS and not inline:
            flags.add(_FLAGS[name])
        elif name in _WITH_VALUE:
            if inline:
                values[_WITH_VALUE[name]].append(inline)
            elif i + 1 < len(tokens):
                i += 1
                values[_WITH_VALUE[name]].append(tokens[i])
            else:
                return usage(f"run: {name} needs a value")
        else:
            return None  # -c CONFIG, -h, or something argparse will explain
        i += 1
    else:
        return None  # no command: config mode (argparse says what single-mode options need)
    return plan(argv, values["rewrite"], "child_only" not in flags, values["success"], values["parent_death"],
                "verbose" in flags)


def plan(argv: list[str], rewrites: list[str], group: bool, success: list[str], parent_death: list[str],
         verbose: bool) -> "Plan | int":
    """The options checked and turned into numbers; a usage error's exit status if one is wrong."""
    table: dict[int, int] = {}
    for item in rewrites:
        source, sep, target = item.partition(":")
        try:
            if not sep:
                raise ValueError("expected FROM:TO")
            table[signal_number(source)] = 0 if target.strip() == "0" else signal_number(target)
        except ValueError as e:
            return usage(f"--rewrite {item}: {e}")
    codes: set[int] = set()
    for item in success:
        if not (item.strip().isdigit() and 0 <= int(item) <= 255):
            return usage(f"--success-exit {item}: expected an exit status from 0 to 255")
        codes.add(int(item))
    death = 0
    for item in parent_death:
        try:
            death = signal_number(item)
        except ValueError as e:
            return usage(f"--parent-death-signal {item}: {e}")
    return Plan(argv, table, group, codes, death, verbose)


def signal_number(text: str) -> int:
    """TERM, SIGTERM, 15, RTMIN+3: the same names hive_init.config.fields.parse_signal takes, and
    the real-time ones, without importing the config machinery."""
    name = text.strip().upper()
    if name.isascii() and name.isdigit():
        if int(name) in ALL:
            return int(name)
        raise ValueError(f"{name} is not a signal number")
    name = name if name.startswith("SIG") else "SIG" + name
    base, plus, offset = name.partition("+")
    if base in ("SIGRTMIN", "SIGRTMAX") and (not plus or offset.isdigit()):
        number = int(getattr(signal, base)) + (int(offset) if plus else 0)
        if number in ALL and signal.SIGRTMIN <= number <= signal.SIGRTMAX:
            return number
    elif not plus and not name.startswith("SIG_") and isinstance(getattr(signal, name, None), int):
        return int(getattr(signal, name))
    raise ValueError(f"expected a signal name like \"TERM\" or \"SIGINT\" (got {text!r})")


def usage(message: str) -> int:
    say(message)
    return USAGE


def say(message: str) -> None:
    """One line on stderr, written at once (no buffer to flush before os._exit)."""
    try:
        os.write(2, f"hive-init: {message}\n".encode(errors="replace"))
    except OSError:  # no stderr (closed, a full pipe): nothing else can be done
        pass


def signal_name(signum: int) -> str:
    import signal as named  # only for --verbose

    try:
        return named.Signals(signum).name
    except ValueError:
        return f"SIGRTMIN+{signum - signal.SIGRTMIN}"


# ---- the run ---------------------------------------------------------------------------------

def run(p: Plan) -> int:
    """Never returns once the child is running: os._exit with its status."""
    caller_mask = block_signals()
    caller_ignores_chld = signal.getsignal(signal.SIGCHLD) == signal.SIG_IGN
    if caller_ignores_chld:
        # with SIGCHLD ignored the kernel reaps our children itself and waitpid sees none
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    become_subreaper()
    if p.parent_death:
        prctl(PR_SET_PDEATHSIG, p.parent_death, "PR_SET_PDEATHSIG")
    foreground = terminal_is_ours()
    child = start_child(p.argv, caller_mask, caller_ignores_chld, foreground)
    if isinstance(child, str):
        say(child.partition(":")[2])
        return int(child.partition(":")[0])
    if p.verbose:
        say(f"started {p.argv[0]!r} as pid {child}" + (" (it has the terminal)" if foreground else ""))
    status = supervise(p, child)
    os._exit(status)


def block_signals() -> set[int]:
    """Everything blocked (hive_init/__init__.py did it on the first line already, when the
    command line said `run`); the mask the caller gave us, which the child gets back."""
    import hive_init

    if hive_init.caller_mask is None:  # main() called another way (tests, `-s X run`)
        hive_init.block_signals()
    assert hive_init.caller_mask is not None
    return set(hive_init.caller_mask)


def prctl(option: int, value: int, what: str) -> bool:
    error = call_prctl(option, value)
    if error:
        say(f"prctl({what}) failed: {os.strerror(error)}")
    return not error


def become_subreaper() -> None:
    """Not PID 1: the child's orphans come to us anyway (`docker run --init` has tini as PID 1)."""
    if os.getpid() != 1:
        prctl(PR_SET_CHILD_SUBREAPER, 1, "PR_SET_CHILD_SUBREAPER")


def terminal_is_ours() -> bool:
    """Our process group is the terminal's foreground (an interactive `docker run -it`, a shell's
    foreground job): then the child takes the terminal over, as with tini."""
    try:
        return os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
    except OSError:  # not our controlling terminal, or none
        return False


def start_child(argv: list[str], caller_mask: set[int], caller_ignores_chld: bool, foreground: bool) -> "int | str":
    """fork + exec; the pid, or "STATUS:message" when the command cannot be executed.

    The exec's error comes back through a close-on-exec pipe: empty means it executed."""
    errors_r, errors_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(errors_r)
            become_child(argv, caller_mask, caller_ignores_chld, foreground)
        except OSError as e:
            os.write(errors_w, str(e.errno).encode())
        finally:
            os._exit(NOT_FOUND_COMMAND)
    os.close(errors_w)
    try:
        os.setpgid(pid, pid)  # as shells do, in both: whichever runs first, the group exists
    except OSError:  # EACCES: it has exec'd already, having done it itself
        pass
    error = os.read(errors_r, 32)
    os.close(errors_r)
    if not error:
        return pid
    os.waitpid(pid, 0)  # it exited at once: nothing else to wait for
    return exec_error(argv[0], int(error))


def become_child(argv: list[str], caller_mask: set[int], caller_ignores_chld: bool, foreground: bool) -> None:
    """In the child, between fork and exec (safe: this process has one thread)."""
    os.setpgid(0, 0)
    if foreground:
        try:
            # SIGTTOU is still blocked here: a background group may take the terminal then
            os.tcsetpgrp(0, os.getpid())
        except OSError:  # the terminal went away meanwhile: the child runs without it
            pass
    # What Python changed at its start goes back to the default (the caller's own setting of
    # SIGPIPE/SIGXFSZ cannot be known: Python ignores both before any line of ours runs);
    # SIGINT's Python handler would swallow a Ctrl-C that arrives before the exec.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    if signal.getsignal(signal.SIGINT) != signal.SIG_IGN:  # the caller's SIG_IGN stays
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    if caller_ignores_chld:
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, caller_mask)
    os.execvp(argv[0], argv)


def exec_error(command: str, errno_: int) -> str:
    import errno

    if errno_ in (errno.ENOENT, errno.ENOTDIR):
        return f"{NOT_FOUND_COMMAND}:cannot execute {command!r}: no such file or directory"
    if errno_ == errno.EACCES:
        return f"{CANNOT_EXECUTE}:cannot execute {command!r}: permission denied"
    if errno_ == errno.ENOEXEC:
        return f"{CANNOT_EXECUTE}:cannot execute {command!r}: not an executable format"
    return f"{CANNOT_EXECUTE}:cannot start {command!r}: {os.strerror(errno_)}"


def supervise(p: Plan, child: int) -> int:
    """The one loop: a signal at a time, until the child is gone; its status, as we exit with it."""
    while True:
        signum = signal.sigwaitinfo(ALL).si_signo
        if signum == signal.SIGCHLD:
            code = reap(p, child)
            if code is not None:
                break
            continue
        if signum == signal.SIGCONT:
            take_terminal_back(child)
        forward(p, child, signum)
    if p.group:
        end_group(p, child)
    if code in p.success:
        code = 0
    if p.verbose:
        say(f"child exited: exiting with status {code}")
    return code


def forward(p: Plan, child: int, signum: int) -> None:
    target = p.rewrite.get(signum, signum)
    if target == 0 or signum in NEVER_FORWARDED:
        if p.verbose and signum not in NEVER_FORWARDED:
            say(f"{signal_name(signum)} dropped (--rewrite)")
        return
    try:
        if p.group:
            os.killpg(child, target)
        else:
            os.kill(child, target)
    except ProcessLookupError:  # gone meanwhile: its SIGCHLD is on its way
        return
    if p.verbose:
        rewritten = f" as {signal_name(target)}" if target != signum else ""
        whom = f"process group {child}" if p.group else f"pid {child}"
        say(f"forwarded {signal_name(signum)}{rewritten} to {whom}")


def reap(p: Plan, child: int) -> "int | None":
    """Every child that has changed state (one SIGCHLD may stand for many); the child's exit
    status (128+N for signal N) once it has exited, else None."""
    code = None
    if p.group:
        # The zombie still holds the process group's id: TERM to what is left of the group now
        # cannot hit a group that reused the number (after the reap, it could).
        try:
            gone = os.waitid(os.P_PID, child, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            gone = None
        if gone is not None and gone.si_pid == child:
            try:
                os.killpg(child, signal.SIGTERM)
            except ProcessLookupError:
                pass
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG | os.WUNTRACED)
        except ChildProcessError:  # no child left at all
            break
        if pid == 0:
            break
        if pid != child:
            continue  # an orphan, reaped (or a stopped orphan: not ours to act on)
        if os.WIFSTOPPED(status):
            child_stopped(p, child, os.WSTOPSIG(status))
        else:
            code = os.waitstatus_to_exitcode(status)
            code = code if code >= 0 else 128 - code
    return code


def child_stopped(p: Plan, child: int, signum: int) -> None:
    """Ctrl-Z (or a TTIN/TTOU of a background read): the job stops as a whole, so the shell
    sees it stop and gets the terminal back. PID 1 cannot stop itself (the kernel ignores it)."""
    if signum not in JOB_STOPS or os.getpid() == 1:
        return
    if p.verbose:
        say(f"child stopped by {signal_name(signum)}: stopping too")
    os.kill(os.getpid(), signal.SIGSTOP)
    # continued: the SIGCONT that did it is queued and comes through the loop


def take_terminal_back(child: int) -> None:
    """`fg`: the shell gave the terminal to our group and continued us; the child gets it
    (it had it, or it was stopped reading it from the background)."""
    if terminal_is_ours():
        try:
            os.tcsetpgrp(0, child)  # SIGTTOU blocked: allowed even if we were not in front
        except OSError:
            pass


def end_group(p: Plan, child: int) -> None:
    """What is left of the child's process group got TERM when the child exited (reap): the
    survivors get GROUP_GRACE seconds, then KILL; orphans among them are ours to reap."""
    import time

    deadline = time.monotonic() + GROUP_GRACE
    killed = False
    while group_alive(child):
        left = deadline - time.monotonic()
        if left <= 0:
            if killed:
                return
            try:
                os.killpg(child, signal.SIGKILL)
            except ProcessLookupError:
                return
            killed, deadline = True, time.monotonic() + KILL_WAIT
            continue
        # Members that are not our children (their parent lives) send us no SIGCHLD: look again
        # every 50 ms, for at most the grace.
        info = signal.sigtimedwait(ALL, min(left, 0.05))
        if info is None or info.si_signo == signal.SIGCHLD:
            reap_orphans()
        else:
            forward(p, child, info.si_signo)


def group_alive(pgid: int) -> bool:
    reap_orphans()
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal: it exists
        return True
    return True


def reap_orphans() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
