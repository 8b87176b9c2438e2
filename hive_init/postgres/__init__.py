"""`kind = "postgres"`: PostgreSQL as a first-class program (spec.py: the config fields; kind.py:
the steps the runtime calls; firstboot.py, bootstrap.py, cluster.py, binaries.py: the work).

`register()` makes the kind known to the config and to the runtime; the CLI calls it, so that
neither of them imports this package. Nothing heavy is imported by it: spec.py when a postgres
program is read, kind.py (and asyncpg) when one is run."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hive_init.config.fields import Table
    from hive_init.config.model import ProgramSpec
    from hive_init.runtime.kind import Kind

_registered: set[str] = set()


def register(runtime: bool = True) -> None:
    """Register with the config (and, unless runtime=False, with the runtime); idempotent."""
    if "config" not in _registered:
        from hive_init.config import kinds

        kinds.register(kinds.ConfigKind(
            "postgres", fields=_fields, parse=_parse,
            own_command="a kind = \"postgres\" program builds its own command; remove it (use `settings`)",
            probe_defaults=(5.0, 3.0),
        ))
        _registered.add("config")
    if runtime and "runtime" not in _registered:
        from hive_init.runtime.kind import register_kind

        register_kind("postgres", _kind)
        _registered.add("runtime")


def _fields() -> frozenset[str]:
    from hive_init.postgres.spec import FIELDS

    return FIELDS


def _parse(t: "Table", secrets: set[str]) -> tuple[Any, dict[str, Any]]:
    from hive_init.postgres.spec import parse_options

    return parse_options(t, secrets)


def _kind(spec: "ProgramSpec") -> "Kind":
    from hive_init.postgres.kind import PostgresKind

    return PostgresKind(spec)
