"""Child output as a user sees it in `docker logs`: one event per line, with program and stream;
partial, very long and binary lines handled; a chatty child never blocks the init."""

import json
import sys

from hive_init.runtime.output import MAX_LINE, LineSplitter


def test_partial_long_and_binary_lines_are_captured(start_init, tmp_path):
    script = tmp_path / "noisy.py"
    script.write_text(
        "import os, sys\n"
        "os.write(1, b'first line\\n')\n"
        "os.write(2, b'to stderr\\n')\n"
        "os.write(1, b'x' * 40000 + b'\\n')\n"
        "os.write(1, b'bad \\xff\\xfe bytes\\n')\n"
        "os.write(1, b'crlf line\\r\\n')\n"
        "os.write(1, b'no newline at the end')\n"
    )
    init = start_init(f"""
        [programs.noisy]
        command = ["{sys.executable}", "{script}"]
        oneshot = true
    """)
    init.wait_state("noisy", "EXITED")
    init.stop()
    events = [e for e in init.lines if e.get("program") == "noisy"]
    by_stream = [(e["stream"], e["msg"]) for e in events]
    assert by_stream[0] == ("stdout", "first line")
    assert ("stderr", "to stderr") in by_stream
    stdout = [m for s, m in by_stream if s == "stdout"]
    long_pieces = [m for m in stdout if set(m) == {"x"}]
    assert "".join(long_pieces) == "x" * 40000 and max(map(len, long_pieces)) == MAX_LINE
    assert "bad \ufffd\ufffd bytes" in stdout
    assert "crlf line" in stdout
    assert stdout[-1] == "no newline at the end"
    assert all(isinstance(json.dumps(e), str) for e in events)


def test_logs_command_shows_recent_lines(start_init):
    init = start_init("""
        [programs.talker]
        command = ["sh", "-c", "for i in 1 2 3 4 5; do echo line-$i; done; exec sleep 60"]
    """)
    init.wait_msg("line-5", "talker")
    out = init.ctl("logs", "talker", "-n", "2")
    assert out.returncode == 0
    assert [line.split()[-1] for line in out.stdout.splitlines()] == ["line-4", "line-5"]
    missing = init.ctl("logs", "nope")
    assert missing.returncode == 3 and "no program named 'nope'" in missing.stderr


def test_line_splitter_pieces():
    s = LineSplitter(max_line=4)
    assert list(s.feed(b"ab")) == []
    assert list(s.feed(b"c\nabcdefg")) == [b"abc", b"abcd"]
    assert list(s.flush()) == [b"efg"]
    assert list(s.flush()) == []
