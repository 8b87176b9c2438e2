"""What the converter infers from a supervisord config beyond its settings' meaning: shell syntax
in a command supervisord ran without a shell, wait loops that are really dependencies, and the
idioms that stop supervisord (and so the container) when a program ends. Pure text functions."""

import re

# (service, the tool a wait loop uses, how the loop shows, how the service's program looks)
SERVICES = [
    ("PostgreSQL", "pg_isready", re.compile(r"\bpg_isready\b"), re.compile(r"postgres|postmaster|pg_ctl|pgsql", re.I)),
    ("Redis", "redis-cli ping", re.compile(r"\bredis-cli\b[^;&|]*\bping\b"), re.compile(r"redis", re.I)),
    ("MySQL", "mysqladmin ping", re.compile(r"\bmysqladmin\b[^;&|]*\bping\b"), re.compile(r"mysql|mariadb", re.I)),
]
GENERIC_WAIT = re.compile(r"\buntil\b|\bwhile\b|wait-for|\bdockerize\b.*-wait|\bnc\s+-z")
SHELLS = {"sh", "bash", "dash", "ash", "zsh", "ksh", "busybox"}

# Ways scripts end supervisord: `supervisorctl shutdown`, a kill of its pid (pidfile, `supervisorctl
# pid`, PID 1, a listener's parent), pkill/killall by name.
_STOPS_SUPERVISORD = re.compile(
    r"supervisorctl\b[^\n;|&]*\bshutdown\b"
    r"|\bkill\b[^\n;|&]*(?:supervisord\.pid|supervisorctl\s+pid|\$PPID|\$\{PPID\}|(?:^|\s)-?(?:\w+\s+)?1(?:\s|$|;|\)))"
    r"|\bkill\s+(?:-\w+\s+)*1\b"
    r"|os\.kill\(\s*(?:1\b|os\.getppid\(\)|int\(\s*open\([^)]*supervisord\.pid)"
    r"|\b(?:pkill|killall)\b[^\n;|&]*supervisord",
    re.M,
)
_EXIT_EVENTS = ("PROCESS_STATE", "PROCESS_STATE_EXITED", "PROCESS_STATE_FATAL", "PROCESS_STATE_STOPPED",
                "PROCESS_STATE_BACKOFF")


def stops_supervisord(text: str) -> bool:
    return bool(_STOPS_SUPERVISORD.search(text))


def watches_exits(events: list[str]) -> bool:
    """A listener told when a program ends (or gives up)."""
    return any(e in _EXIT_EVENTS for e in events)


def is_shell_script(argv: list[str]) -> bool:
    """`sh -c SCRIPT …` (any shell): the script is the shell's business, the argv is kept as is."""
    return bool(argv) and argv[0].rsplit("/", 1)[-1] in SHELLS and any(a == "-c" or (a.startswith("-") and "c" in a
                                                                          and not a.startswith("--")) for a in argv[1:3])


def shell_syntax(text: str) -> list[str]:
    """What in an (unsplit) supervisord command only means something to a shell: unquoted, or
    inside double quotes for `$` and backquotes. Quoting follows shlex's POSIX rules."""
    found: dict[str, None] = {}
    if re.match(r"\s*[A-Za-z_][A-Za-z0-9_]*=", text):
        found["a VAR=value prefix"] = None
    quote: str | None = None
    word_start = True
    i = 0
    while i < len(text):
        c = text[i]
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if quote == "'":
            if c == "'":
                quote = None
        elif quote == '"':
            if c == "\\" and nxt in '"\\':
                i += 1
            elif c == '"':
                quote = None
            elif c == "$" and (nxt.isalnum() or nxt in "_{(?#@*!$-"):
                found["$ expansions"] = None
            elif c == "`":
                found["`command substitution`"] = None
        else:
            starts = word_start
            word_start = c in " \t\r\n"
            if c == "\\":
                i += 2
                continue
            if c in "'\"":
                quote = c
            elif c == "|":
                found["||" if nxt == "|" else "a pipe"] = None
                i += nxt == "|"
            elif c == "&" and nxt == "&":
                found["&&"] = None
                i += 1
            elif c == "&" and text[i - 1:i] not in ("<", ">"):
                found["& (background)"] = None
            elif c == ";":
                found["';'"] = None
            elif c in "<>":
                found["a redirection"] = None
            elif c in "*?[":
                found["a glob"] = None
            elif c == "$" and (nxt.isalnum() or nxt in "_{(?#@*!$-"):
                found["$ expansions"] = None
            elif c == "`":
                found["`command substitution`"] = None
            elif c in "()":
                found["( )"] = None
            elif c == "~" and starts:
                found["~"] = None
        i += 1
    return list(found)
