"""Every request the control socket reads gets an answer, a request whose handling fails in the
init included: the client is told why in one line, the init logs it. Only a client that goes
away itself (EPIPE, ECONNRESET, a reader stuck past the send deadline) is dropped without a word.
The real init, as PID 1, through its real control socket."""

import shutil
import signal
import socket
import sys
import textwrap

import pytest

from tests.helpers import needs_root, wait_until

# 1000 lines of 16 KB, then quiet: `logs -n 1000` answers 16 MB
PRINTER = 'import signal\nfor _ in range(1000):\n    print("x" * 16000, flush=True)\nsignal.pause()\n'


@needs_root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_a_signal_the_kernel_refuses_is_answered_and_logged(start_init):
    """Root without CAP_KILL (`--cap-drop=KILL`, or a drop-all-then-add list that forgot it) may
    not signal a program of another user: kill(2) says EPERM while the init handles the request.
    That used to close the connection with no answer (`hive-init: ... closed the connection`,
    exit 2) and no line at the init."""
    init = start_init("""
        [programs.s]
        command = ["sleep", "infinity"]
        user = "nobody"
    """, pid1=True, prefix=["setpriv", "--bounding-set=-kill", "--"])
    init.wait_state("s", "READY")
    out = init.ctl("signal", "s", "HUP")
    assert (out.returncode, out.stdout, out.stderr) == (1, "", "hive-init: signal s: Operation not permitted\n")
    logged = init.wait_msg("control request failed")
    assert logged["level"] == "error" and logged["request"] == "signal s" and logged["error"] == "Operation not permitted"
    assert init.ctl("status").returncode == 0  # the init serves on
    # the same answer on the wire: the protocol's error form, one line
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(10)
        client.connect(init.socket)
        client.sendall(b'{"cmd":"signal","name":"s","signal":"TERM"}\n')
        reply = b""
        while not reply.endswith(b"\n"):
            data = client.recv(4096)
            assert data, "the init closed the connection without an answer"
            reply += data
    assert reply == b'{"ok":false,"error":"failed","message":"signal s: Operation not permitted"}\n'


def test_clients_that_go_away_are_dropped_without_a_word(start_init, tmp_path):
    """A client that closes before its answer (EPIPE or ECONNRESET at the init's send) and one
    that never reads a 16 MB answer (the send deadline) lose their connections; the init logs
    nothing about them and serves on."""
    script = tmp_path / "print.py"
    script.write_text(PRINTER)
    init = start_init(textwrap.dedent(f"""
        [programs.flood]
        command = ["{sys.executable}", "{script}"]
    """))
    init.wait_state("flood", "READY")
    wait_until(lambda: len(init.output("flood")) >= 1000, what="1000 lines of flood")
    for _ in range(20):  # gone before the answer comes
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(init.socket)
            client.sendall(b'{"cmd":"logs","name":"flood","lines":1000}\n')
    with socket.socket(socket.AF_UNIX) as stuck:
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(init.socket)
        stuck.sendall(b'{"cmd":"logs","name":"flood","lines":1000}\n')  # 16 MB, never read
        wait_until(lambda: _closed_by_peer(stuck), 30, "the init to drop the stuck reader")
    assert init.ctl("status").returncode == 0
    assert [e for e in init.events() if e.get("level") in ("warning", "error")] == []


def _closed_by_peer(sock: socket.socket) -> bool:
    """Without reading what is there: True once the init has closed its end (a peer's close
    is seen as writable with an error, or EPIPE on a zero-length probe)."""
    try:
        sock.settimeout(0.2)
        sock.send(b"\n")
    except TimeoutError:
        return False
    except OSError:
        return True
    return False


@needs_root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_a_program_the_kernel_will_not_let_us_stop_does_not_take_the_init_down(start_init):
    """The same refusal in the program's own stop (its stop_signal, then SIGKILL): said in one
    line each, and the shutdown still ends at its deadline (as PID 1, the kernel then ends what
    is left) instead of the init dying with an internal error the moment it tries."""
    init = start_init("""
        [init]
        shutdown_timeout = "3s"
        [programs.s]
        command = ["sleep", "infinity"]
        user = "nobody"
        stop_timeout = "1s"
    """, pid1=True, prefix=["setpriv", "--bounding-set=-kill", "--"])
    init.wait_state("s", "READY")
    init.signal(signal.SIGTERM)
    assert init.wait(timeout=60) == 0  # a bound on a hang, not on speed
    refused = [e["msg"] for e in init.events() if e.get("msg", "").startswith("cannot send")]
    assert refused[:2] == ["cannot send SIGTERM: Operation not permitted (is CAP_KILL dropped?)",
                           "cannot send SIGKILL: Operation not permitted (is CAP_KILL dropped?)"], refused
    assert not [e for e in init.events() if "internal error" in e.get("msg", "")]
