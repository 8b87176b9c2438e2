"""prctl(2), the one way hive-init calls it: through `_ctypes`, the C module. `ctypes` itself
builds its whole type zoo at import (struct and all): several ms before single-command mode's
child gets its first line, and 0.34 MiB for the init's life, for a call that takes one int."""

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def prctl(option: int, value: int) -> int:
    """0, or the errno prctl(2) failed with."""
    import _ctypes

    # typeshed types _ctypes for ctypes' own use: a C int class, the process's own symbols
    # (dlopen(NULL)) and a function pointer looked up in them are what ctypes builds the same way
    class Int(_ctypes._SimpleCData):
        _type_ = "i"

    class Libc:
        _handle = _ctypes.dlopen(None)  # type: ignore[arg-type]

    class Function(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = Int

    if Function(("prctl", Libc))(option, value, 0, 0, 0) != 0:  # type: ignore[arg-type]
        return _ctypes.get_errno() or -1
    return 0
