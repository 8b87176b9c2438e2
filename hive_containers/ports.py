"""Is a host port free for a container to publish? Checked before `up`, so that the operator reads
"port 48886 (genie) is already in use by …" instead of the engine's error halfway through."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path


def in_use(port: int, host_ip: str = "", protocol: str = "tcp") -> bool:
    """True when binding the address the engine would bind fails with EADDRINUSE. SO_REUSEADDR
    keeps connections in TIME_WAIT from counting; a listening socket still does."""
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    addresses = [(socket.AF_INET, host_ip or "0.0.0.0")]
    if not host_ip and socket.has_ipv6:
        addresses.append((socket.AF_INET6, "::"))
    elif ":" in host_ip:
        addresses = [(socket.AF_INET6, host_ip)]
    for family, address in addresses:
        try:
            sock = socket.socket(family, kind)
        except OSError:
            continue  # no IPv6 here
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return True
            # EADDRNOTAVAIL (no such address here), EACCES (a port < 1024 as a user): not ours to judge
        finally:
            sock.close()
    return False


def owner(port: int, proc: Path = Path("/proc")) -> str | None:
    """"python3 (pid 1234)" for the process listening on TCP `port`, when /proc tells (Linux, and
    only the processes we may look into)."""
    inodes = set()
    for table in ("net/tcp", "net/tcp6"):
        try:
            lines = (proc / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(fields[9])
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for pid in filter(str.isdigit, os.listdir(proc)):
        try:
            for fd in os.listdir(proc / pid / "fd"):
                if os.readlink(proc / pid / "fd" / fd) in targets:
                    name = (proc / pid / "comm").read_text().strip()
                    return f"{name} (pid {pid})"
        except OSError:
            continue
    return None
