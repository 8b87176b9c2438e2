"""TOML → validated, immutable specs. `load(path)` is the one entry point."""

from hive_init.config.errors import ConfigError
from hive_init.config.loader import load, loads
from hive_init.config.model import Config, ProgramSpec

__all__ = ["Config", "ConfigError", "ProgramSpec", "load", "loads"]
