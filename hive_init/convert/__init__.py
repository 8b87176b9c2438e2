"""`hive-init convert`: other supervisors' configurations → hive-init TOML."""

from hive_init.convert.supervisord import command

__all__ = ["command"]
