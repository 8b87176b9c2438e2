"""`python -m hive_app [--fd N]`: uvicorn serving the app.

The listening socket: with `--fd N` that descriptor (hive-init's held socket is 3); without
it, the first socket passed as sd_listen_fds(3) defines (LISTEN_FDS, with LISTEN_PID this
process); otherwise its own, bound on $HIVE_API_HOST:$HIVE_API_PORT (default 0.0.0.0 and the
service's port). A passed socket outlives the process, and so gets (hive_app.drain) uvicorn's
graceful stop fixed (nothing accepted is dropped) and accepting only once the database answers.
"""

import os
import socket
import sys

import uvicorn

from hive_app.drain import DrainingH11Protocol, DrainingServer, accept_once_connected
from hive_app.logs import uvicorn_log_config
from hive_app.main import create_app
from hive_app.settings import SettingsError, from_env

# uvicorn's own graceful shutdown (after SIGTERM) stays inside hive-init's stop_timeout of 5 s
GRACEFUL_SHUTDOWN = 3
LISTEN_FDS_START = 3


def passed_fd(argv: list[str], env: "os._Environ[str] | dict[str, str]") -> int | None:
    if argv[:1] == ["--fd"] and len(argv) == 2 and argv[1].isdigit():
        return int(argv[1])
    if argv:
        raise SettingsError(f"usage: python -m hive_app [--fd N] (got {' '.join(argv)!r})")
    if env.get("LISTEN_PID") == str(os.getpid()) and env.get("LISTEN_FDS", "0").isdigit() and int(env["LISTEN_FDS"]) > 0:
        return LISTEN_FDS_START
    return None


def main(argv: list[str] | None = None) -> int:
    try:
        settings = from_env()
        fd = passed_fd(sys.argv[1:] if argv is None else argv, os.environ)
    except SettingsError as e:
        print(f"hive_app: {e}", file=sys.stderr, flush=True)
        return 78  # EX_CONFIG
    app = create_app(settings)
    config = uvicorn.Config(
        accept_once_connected(app) if fd is not None else app,
        host=settings.host,
        port=settings.port,
        log_config=uvicorn_log_config(settings.log_level),
        log_level=settings.log_level,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
        server_header=False,
        http=DrainingH11Protocol if fd is not None else "auto",
    )
    if fd is None:
        uvicorn.Server(config).run()
        return 0
    try:
        # the family is read from the descriptor (uvicorn's own --fd makes every socket AF_UNIX,
        # so its TCP connections miss TCP_NODELAY)
        sock = socket.socket(fileno=fd)
    except OSError as e:
        print(f"hive_app: descriptor {fd} is not a socket: {e.strerror}", file=sys.stderr, flush=True)
        return 78
    DrainingServer(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
