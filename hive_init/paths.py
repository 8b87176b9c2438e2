"""Where hive-init's files are by default: the config file and the control socket. A leaf
(imports only `os`): the config loader, the control server, the control client and `hive-init
health`'s fast path all read these, and none of them may import the others for it."""

import os

DEFAULT_CONFIG = "/etc/hive-init/hive-init.toml"


def config_path(explicit: str | None) -> str:
    """The config file: -c, else $HIVE_INIT_CONFIG, else the default."""
    return explicit or os.environ.get("HIVE_INIT_CONFIG") or DEFAULT_CONFIG


def default_socket_path() -> str:
    """`[init] control_socket`'s default. Not root: in a directory only this user can write
    ($XDG_RUNTIME_DIR, or a 0700 directory of its own in /tmp, which the init creates and checks),
    so that nobody can take the name first."""
    if os.geteuid() == 0:
        return "/run/hive-init.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "hive-init.sock")
    return f"/tmp/hive-init-{os.geteuid()}/control.sock"
