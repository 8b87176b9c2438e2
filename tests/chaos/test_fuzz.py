"""Fuzz: the output line splitter (properties), the health endpoint (random requests and raw
bytes: never a 5xx, never a hang, the init survives and changes nothing), and the control socket
beyond what tests/api fuzzes (raw garbage, huge lines, slow clients, idle connections)."""

import json
import re
import socket
import string
import threading
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hive_init.runtime.output import LineSplitter
from tests.chaos.util import ChaosInit as Init
from tests.chaos.util import http_get, open_fds, unix_request, wait_http, wait_until

# ---- the line splitter ------------------------------------------------------------------------


def split_all(data: bytes, max_line: int, cuts: list[int]) -> list[bytes]:
    """Feed `data` in pieces cut at `cuts`, then flush: every line that comes out."""
    splitter = LineSplitter(max_line)
    out: list[bytes] = []
    last = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}):
        out += splitter.feed(data[last:cut])
        last = cut
    out += splitter.feed(data[last:])
    out += splitter.flush()
    return out


def expected_lines(data: bytes, max_line: int) -> list[bytes]:
    """The specification: every newline-terminated line (and a last one without a newline), each
    cut into pieces of max_line bytes; an empty line stays one empty line."""
    segments = data.split(b"\n")
    if segments[-1] == b"":
        segments.pop()  # the input ended with a newline (or was empty): no line after it
    out = []
    for segment in segments:
        out += [segment[i:i + max_line] for i in range(0, len(segment), max_line)] or [b""]
    return out


no_cr = st.binary(max_size=300).map(lambda b: b.replace(b"\r", b""))
small_alphabet = st.lists(st.sampled_from([b"a", b"b", b"\n", b"\xff"]), max_size=60).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(no_cr, small_alphabet), max_line=st.integers(1, 9), cuts=st.lists(st.integers(0, 400), max_size=8))
def test_splitter_is_lossless_and_bounded(data, max_line, cuts):
    lines = split_all(data, max_line, cuts)
    assert all(len(line) <= max_line for line in lines)
    assert b"".join(lines) == data.replace(b"\n", b"")  # nothing lost, nothing added, but separators
    assert len(lines) >= data.count(b"\n")  # one line per newline at least


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(no_cr, small_alphabet), max_line=st.integers(1, 9))
def test_splitter_fed_at_once_gives_exactly_the_specified_lines(data, max_line):
    assert split_all(data, max_line, []) == expected_lines(data, max_line)


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(no_cr, small_alphabet), max_line=st.integers(1, 9), cuts=st.lists(st.integers(0, 400), max_size=8))
@example(data=b"x" * 16 + b"\nnext\n", max_line=16, cuts=[16])
def test_splitter_gives_the_same_lines_however_the_input_is_chunked(data, max_line, cuts):
    assert split_all(data, max_line, cuts) == expected_lines(data, max_line)


def test_splitter_line_of_exactly_max_line_bytes():
    assert split_all(b"abcd\nef\n", 4, [4]) == [b"abcd", b"ef"]  # the newline in the next read
    assert split_all(b"abcd\r\nef\n", 4, []) == [b"abcd", b"ef"]  # CRLF, even in one read


@pytest.mark.parametrize("data,lines", [
    (b"crlf\r\nline\r\n", [b"crlf", b"line"]),
    (b"a\r\n\r\nb", [b"a", b"", b"b"]),
    (b"\n\n\n", [b"", b"", b""]),
    (b"no newline", [b"no newline"]),
    (b"", []),
    (b"\xff\xfe\n", [b"\xff\xfe"]),
])
def test_splitter_examples(data, lines):
    for max_line in (5, 64):
        expect = [piece for line in lines for piece in ([line[i:i + max_line] for i in range(0, len(line), max_line)] or [b""])]
        assert split_all(data, max_line, []) == expect


# ---- the health endpoint ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def http_init(tmp_path_factory):
    init = Init(tmp_path_factory.mktemp("http-fuzz"), """
        [programs.app]
        command = ["sleep", "300"]
        [programs.worker]
        command = ["sleep", "300"]
    """, http=True)
    init.wait_state("app", "READY")
    init.wait_state("worker", "READY")
    wait_http(init)
    init.before = {p["name"]: p["pid"] for p in init.status()["programs"]}
    yield init
    init.close()


def exchange(port: int, data: bytes, timeout: float = 5.0, half_close: bool = True) -> bytes:
    """Send raw bytes, close our side, read everything the init answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except TimeoutError:
            raise  # the endpoint stopped reading without closing: a hang
        except OSError:
            pass  # it closed on a bad request before reading it all: what it answered is still there
        chunks = []
        deadline = time.monotonic() + timeout
        while True:
            assert time.monotonic() < deadline, "the endpoint never finished answering"
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def statuses(response: bytes) -> list[int]:
    """The status of every response in what came back (pipelined ones follow a body directly)."""
    return [int(code) for code in re.findall(rb"HTTP/1\.[01] (\d{3}) ", response)]


def assert_healthy_answer(init, response: bytes) -> None:
    codes = statuses(response)
    assert all(code < 500 for code in codes), response[:300]
    assert init.proc.poll() is None


TOKEN = st.text(alphabet=string.ascii_letters + string.digits + "-!#$%&'*+.^_`|~", min_size=1, max_size=20)
METHODS = st.one_of(st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
                                     "PROPFIND", "get", "GET " * 3]), TOKEN)
PATHS = st.one_of(
    st.sampled_from(["/livez", "/readyz", "/health", "/metrics", "/", "*", "//livez", "/livez?x=1&y", "/stop",
                     "/programs/app/stop", "/%2e%2e/%2e%2e/etc/passwd", "/health/../livez", "/%ff%fe", "/livez%00",
                     "http://evil.example/health", "/" + "a" * 8000]),
    st.text(alphabet=string.printable.strip() + "é€", max_size=60).map(lambda s: "/" + s),
)
HEADERS = st.lists(st.tuples(TOKEN, st.text(alphabet=string.printable.replace("\r", "").replace("\n", ""), max_size=60)),
                   max_size=8)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=METHODS, path=PATHS, headers=HEADERS, body=st.binary(max_size=3000),
       version=st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/9.9", ""]))
def test_random_requests_never_get_a_5xx_or_a_hang(http_init, method, path, headers, body, version):
    head = f"{method} {path} {version}".rstrip() + "\r\nHost: 127.0.0.1\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers)
    head += f"Content-Length: {len(body)}\r\n\r\n"
    assert_healthy_answer(http_init, exchange(http_init.port, head.encode("utf-8") + body))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=2000),
                      st.lists(st.sampled_from([b"GET ", b"/livez", b" HTTP/1.1", b"\r\n", b"\n", b"Host: x", b":",
                                                b"Content-Length: 5", b"Transfer-Encoding: chunked", b"0\r\n\r\n",
                                                b"\x00", b"\xff", b" ", b"Connection: keep-alive"]),
                               max_size=30).map(b"".join)))
def test_raw_bytes_never_get_a_5xx_or_a_hang(http_init, data):
    assert_healthy_answer(http_init, exchange(http_init.port, data))


@pytest.mark.parametrize("data", [
    pytest.param(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n", id="100KB-header"),
    pytest.param(b"GET /livez HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(5000)) + b"\r\n", id="5000-headers"),
    pytest.param(b"GET /" + b"a" * 200_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", id="200KB-target"),
    pytest.param(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n" * 199 + b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                 id="200-pipelined"),
    pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00" * 50, id="http2-preface"),
    pytest.param(bytes.fromhex("16030100a5010000a10303") + b"\x00" * 160, id="tls-client-hello"),
    pytest.param(b"GET /livez\r\n", id="http-0.9"),
    pytest.param(b"POST /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n", id="huge-chunk"),
    pytest.param(b"GET /livez HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nContent-Length: 20\r\n\r\n", id="two-lengths"),
    pytest.param(b"GET /livez HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", id="websocket"),
])
def test_malformed_and_oversized_requests(http_init, data):
    pipelined = data.startswith(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    response = exchange(http_init.port, data, timeout=10, half_close=not pipelined)
    assert_healthy_answer(http_init, response)
    if pipelined:
        assert statuses(response) == [200] * 200


def test_after_the_fuzz_the_init_is_unchanged(http_init):
    assert http_get(http_init.port, "/livez") == (200, b"ok\n")
    assert http_get(http_init.port, "/readyz")[0] == 200
    status = http_init.status()
    assert {p["name"]: p["pid"] for p in status["programs"]} == http_init.before
    assert all(p["restarts"] == 0 and p["state"] == "READY" for p in status["programs"])
    assert not [e for e in http_init.events() if e.get("level") == "error"]


def test_a_slow_http_client_does_not_stall_the_init(http_init):
    """One byte per 0.2 s on one connection while /livez is asked on others."""
    stop = threading.Event()

    def trickle():
        with socket.create_connection(("127.0.0.1", http_init.port)) as s:
            for byte in b"GET /livez HTTP/1.1\r\nHost: x\r\n":
                if stop.is_set():
                    return
                s.send(bytes([byte]))
                time.sleep(0.2)  # the slowness under test, not synchronisation

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    # no bound in seconds: each answer comes while the slow client is still sending (~6 s in all)
    for _ in range(10):
        assert http_get(http_init.port, "/livez", timeout=10) == (200, b"ok\n")
        assert thread.is_alive(), "the slow client finished first: this proves nothing"
        time.sleep(0.1)  # pacing the requests, not synchronisation
    stop.set()
    thread.join(5)


def test_idle_http_connections_cannot_make_livez_fail(tmp_path):
    init = Init(tmp_path, '[programs.app]\ncommand = ["sleep", "300"]\n', http=True)
    idle = []
    try:
        wait_http(init)
        sockets_before = sum(1 for target in open_fds(init.init_pid).values() if target.startswith("socket:"))
        for _ in range(70):
            idle.append(socket.create_connection(("127.0.0.1", init.port)))
        idle[-1].sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n")  # and one that never finishes its request
        wait_until(lambda: sum(1 for target in open_fds(init.init_pid).values() if target.startswith("socket:"))
                   >= sockets_before + 70, 20, "the init to accept the 70 connections")
        assert http_get(init.port, "/livez")[0] == 200
    finally:
        for s in idle:
            s.close()
        init.close()


# ---- the control socket -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def control_init(tmp_path_factory):
    init = Init(tmp_path_factory.mktemp("control-fuzz"), """
        [programs.a]
        command = ["sleep", "300"]
        [programs.b]
        command = ["sleep", "300"]
    """)
    init.wait_state("a", "READY")
    init.wait_state("b", "READY")
    init.before = {p["name"]: p["pid"] for p in init.status()["programs"]}
    yield init
    init.close()


def replies(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.split(b"\n") if line]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(min_size=1, max_size=3000).filter(lambda b: b"\n" not in b[:-1]))
def test_raw_garbage_lines_get_a_bad_request(control_init, garbage):
    answer = replies(unix_request(control_init.socket, garbage.rstrip(b"\n") + b"\n"))
    assert len(answer) == 1 and isinstance(answer[0]["ok"], bool), answer  # garbage may happen to be a request
    assert answer[0]["ok"] or answer[0]["error"] in ("bad_request", "not_found"), answer
    assert control_init.proc.poll() is None


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
                    max_leaves=12)


def not_a_signal(value) -> bool:
    """These requests go to real programs: no value that names a real signal ("io", "hup", 9…)."""
    from hive_init.config.fields import parse_signal

    try:
        parse_signal(value)
    except (ValueError, TypeError):
        return True
    return False


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=st.fixed_dictionaries({"cmd": st.sampled_from(["status", "health", "logs", "signal", "nope"])},
                                     optional={"name": st.one_of(st.sampled_from(["a", "b", "zz"]), JSON),
                                               "lines": st.one_of(st.integers(-5, 10**30), JSON),
                                               "signal": st.one_of(st.sampled_from(["bogus", "", "0", "SIG"]),
                                                                   st.integers(-3, 0), st.integers(65, 10**20),
                                                                   JSON).filter(not_a_signal),
                                               "follow": st.just(False)}))
def test_structurally_odd_requests_get_one_answer(control_init, request):
    answer = replies(unix_request(control_init.socket, json.dumps(request).encode() + b"\n"))
    assert len(answer) == 1 and isinstance(answer[0]["ok"], bool)
    assert control_init.proc.poll() is None


@pytest.mark.parametrize("size", [64 * 1024 + 1, 1024 * 1024])
def test_a_huge_line_is_refused_and_the_connection_closed(control_init, size):
    for data in (b"x" * size, b'{"cmd": "status", "pad": "' + b"x" * size + b'"}\n'):
        answer = replies(unix_request(control_init.socket, data))
        assert answer == [{"ok": False, "error": "bad_request", "message": "request too long"}]
    assert control_init.proc.poll() is None


def test_a_slow_client_and_100_idle_connections(control_init):
    """A client sending one byte per second holds a slot but stalls nothing; idle connections fill the
    32 slots (the others are told "busy" at once), are dropped after the request timeout, and new
    clients are served as soon as slots are free again."""
    from hive_init.api.control import MAX_CLIENTS, REQUEST_TIMEOUT

    slow_result: dict = {}

    sending = threading.Event()

    def slow():
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(control_init.socket)
            slow_result["cut"] = False
            try:
                for byte in b'{"cmd": "status"}\n':
                    s.send(bytes([byte]))
                    sending.set()
                    time.sleep(1)  # the slowness under test, not synchronisation
            except (BrokenPipeError, ConnectionResetError):
                slow_result["cut"] = True

    thread = threading.Thread(target=slow, daemon=True)
    thread.start()
    assert sending.wait(20), "the slow client never connected"
    # other requests are answered while the slow one trickles (it takes ~18 s to send everything)
    for _ in range(3):
        assert replies(unix_request(control_init.socket, b'{"cmd": "status"}\n'))[0]["ok"] is True
        assert thread.is_alive()
    idle = []
    try:
        for _ in range(100):
            s = socket.socket(socket.AF_UNIX)
            s.connect(control_init.socket)
            idle.append(s)
        for s in idle:
            s.setblocking(False)
        # the ones past the cap are told at once, and closed
        told: dict[int, bytes] = {}

        def all_told() -> bool:
            for i, s in enumerate(idle):
                if i not in told:
                    try:
                        told[i] = s.recv(1000)
                    except BlockingIOError:
                        pass
            return len(told) >= 100 - (MAX_CLIENTS - 1)

        wait_until(all_told, 20, "the connections past the cap to be told busy")
        busy = list(told.values())
        assert len(busy) == 100 - (MAX_CLIENTS - 1)
        assert all(replies(b)[0]["error"] == "busy" for b in busy)
        assert replies(unix_request(control_init.socket, b'{"cmd": "status"}\n'))[0]["error"] == "busy"
        # ten of them go: ten new clients can be served at once
        for s in idle[:10]:
            s.close()
        wait_until(lambda: replies(unix_request(control_init.socket, b'{"cmd": "status"}\n'))[0]["ok"] is True, 20,
                   "a slot to be free again")
        for _ in range(4):
            assert replies(unix_request(control_init.socket, b'{"cmd": "status"}\n'))[0]["ok"] is True
        # the idle ones that stay are dropped once the request timeout has passed
        for s in idle[10:]:
            s.setblocking(True)
            s.settimeout(REQUEST_TIMEOUT + 60)
            assert s.recv(100) == b""  # closed by the init (a timeout here raises)
    finally:
        for s in idle:
            s.close()
    thread.join(REQUEST_TIMEOUT + 20)
    assert slow_result["cut"], "the slow client was served to the end, never cut off"
    assert replies(unix_request(control_init.socket, b'{"cmd": "status"}\n'))[0]["ok"] is True


def test_after_the_control_fuzz_nothing_changed(control_init):
    status = control_init.status()
    assert {p["name"]: p["pid"] for p in status["programs"]} == control_init.before
    assert all(p["restarts"] == 0 for p in status["programs"])


def test_deeply_nested_json_is_a_bad_request(tmp_path):
    init = Init(tmp_path, '[programs.a]\ncommand = ["sleep", "300"]\n')
    try:
        init.wait_state("a", "READY")
        answer = replies(unix_request(init.socket, b"[" * 60_000 + b"\n"))
        assert init.ctl("status").returncode == 0, init.raw[-1]  # a round trip: the init is still there
        assert answer and answer[0]["error"] == "bad_request"
    finally:
        init.close()


def test_signal_by_real_time_number_over_the_socket(tmp_path):
    init = Init(tmp_path, """
        [programs.a]
        command = ["sh", "-c", "trap 'echo got-40' 40; echo up; while :; do sleep 0.05; done"]
    """)
    try:
        init.wait_msg("up", "a")
        answer = replies(unix_request(init.socket, b'{"cmd": "signal", "name": "a", "signal": 40}\n'))
        assert init.ctl("status").returncode == 0, init.raw[-1]  # a round trip: the init is still there
        assert answer and answer[0]["ok"] is True
        init.wait_msg("got-40", "a")
    finally:
        init.close()


def test_signal_command_takes_a_number(control_init):
    out = control_init.ctl("signal", "b", "28")  # WINCH: sleep ignores it
    assert out.returncode == 0, out.stderr
    assert out.stdout == "b: SIGWINCH\n"
