"""The control commands (status, health, start, stop, restart, signal, logs, reload): a blocking
client of the control socket. Only the standard library, so they start fast."""

import json
import sys
import time

from hive_init import TYPING, exits
from hive_init.api.protocol import Client, Unreachable
from hive_init.healthcheck import BadConfig, socket_path

if TYPING:  # `hive-init status` gets its arguments without argparse (cli._plain_status)
    import argparse


def main(args: "argparse.Namespace") -> int:
    if args.command == "health":
        from hive_init.healthcheck import main as health

        return health(args.socket, config=args.ctl_config)
    try:
        path = socket_path(args.socket, args.ctl_config)
    except BadConfig as e:
        print(f"hive-init: {e}", file=sys.stderr)
        return exits.CONFIG
    try:
        client = Client(path)
    except Unreachable as e:
        print(f"hive-init: {e}", file=sys.stderr)
        return exits.UNREACHABLE
    try:
        return _COMMANDS[args.command](client, args)
    except Unreachable as e:
        print(f"hive-init: {e}", file=sys.stderr)
        return exits.UNREACHABLE
    finally:
        client.close()


def _status(client: Client, args: "argparse.Namespace") -> int:
    reply = client.request({"cmd": "status"})
    programs = [p for p in reply["programs"] if not args.names or p["name"] in args.names]
    unknown = set(args.names) - {p["name"] for p in reply["programs"]}
    if unknown:
        print(f"hive-init: no program named {', '.join(sorted(unknown))}", file=sys.stderr)
        return exits.NOT_FOUND
    if args.json:
        print(json.dumps({**reply, "programs": programs}, indent=2))
    else:
        rows = [("NAME", "STATE", "PID", "UPTIME", "RESTARTS", "READY", "MEM", "CPU%", "INFO")]
        for p in programs:
            rows.append((p["name"], p["state"], str(p["pid"] or "-"), format_uptime(p["uptime"]), str(p["restarts"]),
                         "yes" if p["ready"] else "no", format_memory(p.get("memory_bytes")),
                         format_percent(p.get("cpu_percent")), p["reason"] or ""))
        widths = [max(len(r[i]) for r in rows) for i in range(8)]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[8])
    if args.names:
        return 0 if all(p["ready"] for p in programs) else 1
    return 0 if reply["ready"] else 1


def format_memory(n: int | None) -> str:
    """`412M`: the program tree's memory (PSS, or RSS where PSS cannot be read), in MiB."""
    if n is None:
        return "-"
    if n >= 10 * 1024**3:
        return f"{n / 1024**3:.0f}G"
    if n >= 1024**3:
        return f"{n / 1024**3:.1f}G"
    return f"{n / 1024**2:.1f}M" if n < 10 * 1024**2 else f"{n / 1024**2:.0f}M"


def format_percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_uptime(seconds: float | None) -> str:
    """`1d 2:03:04`, as the status tables show it (here and in hive-containers)."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{days}d " if days else "") + f"{hours}:{minutes:02d}:{secs:02d}"


def _program_command(client: Client, args: "argparse.Namespace") -> int:
    request = {"cmd": args.command, "name": args.name}
    if args.command == "signal":
        request["signal"] = args.signal
    if args.command == "restart" and args.stop_first:
        request["stop_first"] = True
    if args.command in ("stop", "restart"):
        client.sock.settimeout(None)  # stopping waits for the program's own stop_timeout
    return _report(client.request(request), args.name)


def _report(reply: dict, name: str) -> int:
    if reply.get("ok"):
        detail = reply.get("state") or reply.get("signal") or "ok"
        print(f"{name}: {detail}")
        return 0
    print(f"hive-init: {reply.get('message', reply.get('error'))}", file=sys.stderr)
    return exits.NOT_FOUND if reply.get("error") == "not_found" else 1


def _logs(client: Client, args: "argparse.Namespace") -> int:
    if args.lines < 0:
        print("hive-init: logs: -n must not be negative", file=sys.stderr)
        return exits.USAGE
    reply = client.request({"cmd": "logs", "name": args.name, "lines": args.lines, "follow": args.follow})
    if not reply.get("ok"):
        return _report(reply, args.name)
    _print_lines(reply["lines"])
    if args.follow:
        client.sock.settimeout(None)
        while True:
            _print_lines(client.receive()["lines"])
    return 0


def _print_lines(lines: list[dict]) -> None:
    for line in lines:
        stamp = time.strftime("%H:%M:%S", time.localtime(line["ts"]))
        sys.stdout.write(f"{stamp} {line['stream']:<6} {line['text']}\n")
    sys.stdout.flush()


def _reload(client: Client, args: "argparse.Namespace") -> int:
    client.sock.settimeout(None)
    reply = client.request({"cmd": "reload"})
    if not reply.get("ok"):
        print(f"hive-init: reload rejected: {reply.get('message')}", file=sys.stderr)
        return exits.CONFIG if reply.get("error") == "invalid_config" else 1
    parts = [f"{k}: {', '.join(reply[k])}" for k in ("added", "removed", "changed") if reply.get(k)]
    if reply.get("kept"):  # a rolling restart whose new process failed: the old one still runs
        parts.append(f"kept running as before (the new process failed): {', '.join(reply['kept'])}")
    print("reloaded" + (" (" + "; ".join(parts) + ")" if parts else ", nothing changed"))
    return 0


_COMMANDS = {
    "status": _status,
    "start": _program_command,
    "stop": _program_command,
    "restart": _program_command,
    "signal": _program_command,
    "logs": _logs,
    "reload": _reload,
}
