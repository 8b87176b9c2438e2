"""How a rolling restart sees that the new process accepts: an epoll set of the process, or of one
of its descendants, watches a held socket (rolling.polls_any over procfs). Real processes, real
epoll sets, read from /proc."""

import os
import socket
import subprocess
import sys
import textwrap

import pytest

from hive_init.runtime.rolling import polls_any

# argv: the descriptor of the socket, "self" or "child" (who polls it), "watch" or "hold" (hold:
# an epoll set that watches something else; the socket only held)
POLLER = textwrap.dedent("""
    import os, select, sys
    fd, who, what = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    if who == "child" and os.fork() != 0:
        os.wait()
        raise SystemExit
    r, w = os.pipe()
    ep = select.epoll()
    ep.register(fd if what == "watch" else r, select.EPOLLIN)
    print("polling", flush=True)
    sys.stdin.read()
""")


@pytest.fixture
def listener():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


def _poller(sock: socket.socket, who: str, what: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", POLLER, str(sock.fileno()), who, what], pass_fds=[sock.fileno()],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "polling\n"
    return proc


@pytest.mark.parametrize("who", ["self", "child"])
def test_a_process_tree_polling_the_socket_is_seen(listener, who):
    proc = _poller(listener, who, "watch")
    try:
        assert polls_any(proc.pid, {os.fstat(listener.fileno()).st_ino})
        assert not polls_any(proc.pid, {os.fstat(listener.fileno()).st_ino + 1})
    finally:
        proc.communicate("")


def test_holding_the_socket_without_polling_it_is_not_accepting(listener):
    proc = _poller(listener, "self", "hold")
    try:
        assert not polls_any(proc.pid, {os.fstat(listener.fileno()).st_ino})
    finally:
        proc.communicate("")


def test_a_process_that_is_gone_polls_nothing(listener):
    proc = _poller(listener, "self", "watch")
    proc.communicate("")
    assert not polls_any(proc.pid, {os.fstat(listener.fileno()).st_ino})
