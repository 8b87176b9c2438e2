"""`python -m hive_app`: uvicorn on $HIVE_API_HOST:$HIVE_API_PORT (default 0.0.0.0 and the service's port)."""

import sys

import uvicorn

from hive_app.logs import uvicorn_log_config
from hive_app.main import create_app
from hive_app.settings import SettingsError, from_env

# uvicorn's own graceful shutdown (after SIGTERM) stays inside hive-init's stop_timeout of 5 s
GRACEFUL_SHUTDOWN = 3


def main() -> int:
    try:
        settings = from_env()
    except SettingsError as e:
        print(f"hive_app: {e}", file=sys.stderr, flush=True)
        return 78  # EX_CONFIG
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=uvicorn_log_config(settings.log_level),
        log_level=settings.log_level,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
