"""`${VAR}`, `${VAR:-default}` and the `VAR_FILE` convention in config strings.

A value that came from a secret (a `*_FILE` file, or a variable whose name says PASSWORD,
SECRET or TOKEN) is remembered so that every log line and status output can redact it.
"""

import re
from collections.abc import Mapping

from hive_init.redact import SECRET_NAME  # the one list of secret names, kept with the redactor

_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\$")


class UnsetVariable(ValueError):
    pass


def read_secret_file(path: str) -> str:
    """A secret file's content without the trailing newline editors add."""
    with open(path, encoding="utf-8") as f:
        return f.read().rstrip("\r\n")


def expand(text: str, env: Mapping[str, str], secrets: set[str]) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in env:
            value = env[name]
        elif f"{name}_FILE" in env:
            try:
                value = read_secret_file(env[f"{name}_FILE"])
            except OSError as e:
                raise UnsetVariable(f"${{{name}}}: cannot read {name}_FILE={env[name + '_FILE']}: {e.strerror}") from None
            secrets.add(value)
        elif default is not None:
            value = default
        else:
            raise UnsetVariable(f"${{{name}}} is not set (use ${{{name}:-default}} for a default)")
        if SECRET_NAME.search(name) and value:
            secrets.add(value)
        return value

    return _REF.sub(one, text)
