"""The exec wrapper (programs with `listen`) runs as root until it switches to the program's user.
A program's environment must take effect only in the program, as its user: an `LD_PRELOAD` (a
jemalloc the config preloads, say) or a `PYTHONPATH` naming a directory the program's user owns
would otherwise run that user's code as root in the wrapper's interpreter. The attack as `app`,
who owns the library and the Python directory the config names."""

import shutil
import textwrap
from pathlib import Path

import pytest

from tests.helpers import wait_until
from tests.security.conftest import chown_tree

PY = "/usr/bin/python3"  # a system interpreter: runnable by the program's user

# every process that loads it leaves `ld.PID.EUID` in HITS
HOOK = r"""
#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void hit(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s/ld.%d.%d", HITS, (int)getpid(), (int)geteuid());
    FILE *f = fopen(path, "w");
    if (f) fclose(f);
}
"""

# a module of the program's own name space: whoever imports it leaves `py.PID.EUID`
SHADOW = """
import os
open(os.path.join({hits!r}, f"py.{{os.getpid()}}.{{os.geteuid()}}"), "w").close()
"""


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build the attacker's library")
def test_the_program_environment_never_reaches_the_wrappers_root_interpreter(start_init, open_dir, app):
    lib, hits = open_dir / "lib", open_dir / "hits"
    for directory in (lib, lib / "py", hits):  # app's own, as /app is in the images
        directory.mkdir()
        chown_tree(directory, app)

    def app_writes(path: Path, text: str) -> None:
        written = app.run([PY, "-c", f"open({str(path)!r}, 'w').write({text!r})"])
        assert written.returncode == 0, written.stderr

    app_writes(lib / "hook.c", HOOK)
    built = app.run(["gcc", "-shared", "-fPIC", f'-DHITS="{hits}"', "-o", str(lib / "libhook.so"), str(lib / "hook.c")])
    assert built.returncode == 0, built.stderr
    for module in ("fcntl", "signal"):  # what the wrapper imports that a path could shadow
        app_writes(lib / "py" / f"{module}.py", SHADOW.format(hits=str(hits)))
    init = start_init(textwrap.dedent(f"""
        [programs.api]
        command = ["{PY}", "-c", "import fcntl, signal, time; time.sleep(3600)"]
        user = "{app.name}"
        listen = ["127.0.0.1:0"]
        [programs.api.environment]
        LD_PRELOAD = "{lib}/libhook.so"
        PYTHONPATH = "{lib}/py"
    """), pid1=True)
    init.wait_state("api", "READY")
    # the program got its environment (its own loader and interpreter used it, as app)
    wait_until(lambda: {p.name.split(".", 1)[0] for p in hits.iterdir() if p.name.endswith(f".{app.uid}")} == {"ld", "py"},
               what="the program's own use of LD_PRELOAD and PYTHONPATH")
    assert init.program("api")["pid"] == int(next(hits.glob("py.*")).name.split(".")[1])
    # and nothing ran as root: not the preloaded library, not a shadowed module
    assert sorted(p.name for p in hits.iterdir() if not p.name.endswith(f".{app.uid}")) == []
    assert init.stop() == 0


def test_a_wrapped_program_gets_the_environment_a_direct_spawn_gives(start_init, app):
    """The same program and environment, once through the wrapper (`listen`) and once spawned
    directly: the same environment at the exec, but LISTEN_* (nothing of the wrapper's own
    interpreter, such as the LC_CTYPE that Python's C-locale coercion sets)."""
    program = f"""
        command = ["{PY}", "-c", "import time; time.sleep(3600)"]
        user = "{app.name}"
        environment = {{ LD_LIBRARY_PATH = "/nonexistent", PYTHONPATH = "/nonexistent", EMPTY = "", ODD = "a=b c\\u00e9" }}
    """
    init = start_init(f"""
        [programs.wrapped]
        listen = ["127.0.0.1:0"]
        {program}
        [programs.direct]
        {program}
    """, pid1=True, env={"LANG": "C.UTF-8", "TZ": "Europe/Berlin"})
    environ = {}
    for name in ("wrapped", "direct"):
        pid = init.wait_state(name, "READY")["pid"]
        entries = wait_until(lambda pid=pid: _environ(init.init_pid, pid), what=f"the environment of {name}")
        environ[name] = dict(e.split(b"=", 1) for e in entries)
    listen = {k: environ["wrapped"].pop(k) for k in (b"LISTEN_FDS", b"LISTEN_PID", b"LISTEN_FDNAMES")}
    assert listen[b"LISTEN_FDS"] == b"1" and listen[b"LISTEN_FDNAMES"] == b"wrapped"
    assert environ["wrapped"] == environ["direct"]
    assert environ["direct"][b"ODD"] == "a=b cé".encode() and environ["direct"][b"EMPTY"] == b""
    assert environ["direct"][b"LD_LIBRARY_PATH"] == b"/nonexistent" and environ["direct"][b"TZ"] == b"Europe/Berlin"
    assert init.stop() == 0


def _environ(init_pid: int, pid: int) -> list[bytes] | None:
    """A program's environment as exec gave it, once the program (not the wrapper) runs: its pid
    is the namespace's, found through the init's /proc/PID/root."""
    try:
        cmdline = Path(f"/proc/{init_pid}/root/proc/{pid}/cmdline").read_bytes()
        if b"execwrap" in cmdline:
            return None
        return [e for e in Path(f"/proc/{init_pid}/root/proc/{pid}/environ").read_bytes().split(b"\0") if e]
    except OSError:
        return None
