"""peercred.connect: the one wording of every way a client does not reach the init, shared by
`hive-init health` and the control commands (real unix sockets in a per-test directory)."""

import socket
import subprocess
import sys

import pytest

from hive_init.peercred import Unreachable, connect


def test_no_socket_file(tmp_path):
    with pytest.raises(Unreachable, match=r"^hive-init is not running \(no control socket at .*/s\)$"):
        connect(str(tmp_path / "s"), 1.0)


def test_a_socket_nobody_listens_on(tmp_path):
    path = str(tmp_path / "s")
    left = socket.socket(socket.AF_UNIX)
    left.bind(path)  # bound, never listening: what a crashed init leaves behind
    try:
        with pytest.raises(Unreachable, match=r"^hive-init is not running \(nothing listens on .*/s\)$"):
            connect(path, 1.0)
    finally:
        left.close()


def test_a_listening_socket_of_our_own_is_trusted(tmp_path):
    path = str(tmp_path / "s")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen()
    try:
        connect(path, 1.0).close()
    finally:
        server.close()


@pytest.mark.parametrize("cmd", [["health"], ["status"]])
def test_health_and_the_control_commands_say_it_the_same_way(tmp_path, cmd):
    path = str(tmp_path / "s")
    out = subprocess.run([sys.executable, "-m", "hive_init", "-s", path, *cmd], capture_output=True, text=True,
                         timeout=60)
    said = (out.stdout + out.stderr).strip()
    assert said.endswith(f"hive-init is not running (no control socket at {path})"), said
