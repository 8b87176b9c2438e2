"""`${VAR}`, `${VAR:-default}` and the `VAR_FILE` convention in config strings.

A value that came from a secret (a `*_FILE` file, or a variable whose name says PASSWORD,
SECRET or TOKEN) is remembered so that every log line and status output can redact it.
"""

import errno
import os
import re
import stat
from collections.abc import Mapping

from hive_init.redact import SECRET_NAME  # the one list of secret names, kept with the redactor
from hive_init.securefs import read_open_file

_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\$")


class UnsetVariable(ValueError):
    pass


MAX_SECRET = 64 * 1024  # a password, a key, a certificate: never more


def read_regular_file(path: str, limit: int) -> bytes:
    """A file someone else may control, read safely: opened non-blocking (a FIFO does not hang
    the open), refused unless it is a regular file (/dev/zero, a FIFO, a directory, a device), and
    read up to `limit` bytes. Links are followed: Kubernetes mounts secrets and ConfigMaps as
    links into `..data/`; what the link reaches is checked on the open descriptor itself."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)  # the object opened, not the path again: it cannot be swapped in between
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if st.st_size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes")
        return read_open_file(fd, limit)
    finally:
        os.close(fd)


def read_secret_file(path: str) -> str:
    """A secret file's content without the trailing newline editors add."""
    data = read_regular_file(path, MAX_SECRET)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise OSError(errno.EILSEQ, f"not UTF-8 text (byte {e.start})") from None
    if "\0" in text:
        raise OSError(errno.EILSEQ, "holds a NUL byte")
    return text.rstrip("\r\n")


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
                raise UnsetVariable(f"${{{name}}}: cannot read {name}_FILE={env[name + '_FILE']}: {e.strerror or e}") from None
            secrets.add(value)
        elif default is not None:
            value = default
        else:
            raise UnsetVariable(f"${{{name}}} is not set (use ${{{name}:-default}} for a default)")
        if SECRET_NAME.search(name) and value:
            secrets.add(value)
        return value

    return _REF.sub(one, text)
