"""Where hive-init's files are by default: the config file and the control socket. A leaf
(imports only `os`): the config loader, the control client and `hive-init health`'s fast path
all read these, and none of them may import the others for it."""

import os

DEFAULT_CONFIG = "/etc/hive-init/hive-init.toml"


def config_path(explicit: str | None) -> str:
    """The config file: -c, else $HIVE_INIT_CONFIG, else the default."""
    return explicit or os.environ.get("HIVE_INIT_CONFIG") or DEFAULT_CONFIG


def socket_path(explicit: str | None) -> str:
    """Where the clients look: -s, else $HIVE_INIT_SOCKET, else the default."""
    return explicit or os.environ.get("HIVE_INIT_SOCKET") or default_socket_path()


def default_socket_path() -> str:
    """`[init] control_socket`'s default."""
    if os.geteuid() == 0:
        return "/run/hive-init.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(runtime, "hive-init.sock") if runtime else f"/tmp/hive-init-{os.geteuid()}.sock"
