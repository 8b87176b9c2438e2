"""The parts of the single-command issue that config mode shares: fault signals sent with kill(2)
never kill the init, the init's own blocking never reaches its programs, and on a terminal the
init (not a program) is the terminal's foreground program."""

import os
import textwrap

import pytest

from tests.helpers import ROOT
from tests.single.util import FAULTS, HIVE, Terminal, children, proc_state, until


def places() -> list:
    out = [pytest.param(False, id="subreaper")]
    if ROOT:
        out.append(pytest.param(True, id="pid1", marks=pytest.mark.pid1))
    return out




@pytest.mark.parametrize("pid1", places())
def test_fault_signals_sent_by_kill_never_kill_the_init(start_init, pid1):
    init = start_init("""
        [programs.idle]
        command = ["sleep", "300"]
        [programs.mask]
        command = ["sh", "-c", "grep SigBlk /proc/self/status; exec sleep 300"]
        autostart = false
    """, pid1=pid1)
    init.wait_state("idle", "READY")
    for signum in FAULTS:
        os.kill(init.init_pid, signum)
    assert init.ctl("start", "mask").returncode == 0
    # the init's blocking of the faults is not the program's
    assert init.wait_msg("SigBlk:", "mask")["msg"].split()[-1] == "0000000000000000"
    assert init.proc.poll() is None
    assert init.program("idle")["state"] == "READY"


def test_on_a_terminal_ctrl_c_stops_the_init_gracefully_and_no_program_holds_the_terminal(tmp_path):
    """What "foreground program" means in config mode: hive-init itself. Every program runs in
    a session of its own, without a controlling terminal, stdin /dev/null: none can be stopped by
    SIGTTIN/SIGTTOU or get the terminal's INT/TSTP; Ctrl-C is the init's graceful shutdown."""
    config = tmp_path / "hive-init.toml"
    config.write_text(textwrap.dedent(f"""
        [init]
        control_socket = "{tmp_path / 'control.sock'}"
        http = false
        [programs.reader]
        command = ["sh", "-c", "echo started; cat; exec sleep 300"]
    """))
    term = Terminal([HIVE, "run", "-c", str(config)])
    try:
        term.expect(b"started")
        reader = until(lambda: next(iter(children(term.pid)), None), what="the program")
        with open(f"/proc/{reader}/stat") as f:
            tty_nr = int(f.read().rsplit(")", 1)[1].split()[4])
        assert tty_nr == 0  # no controlling terminal
        assert os.tcgetpgrp(term.fd) == term.pid  # the init keeps the terminal's foreground
        term.send(b"\x03")
        assert term.wait(30) == 0
        assert b"received SIGINT" in term.screen
        assert proc_state(reader) is None
    finally:
        term.close()
