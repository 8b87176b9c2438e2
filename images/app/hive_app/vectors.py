"""pgvector values as Python lists of floats, exchanged in pgvector's text form '[1,2,3]'.

EMBEDDING_DIM is the dimension of every `embedding vector(N)` column. It is 3 so that the
tests stay readable; a real embedding model needs its own size (e.g. 384 or 1536). Changing
it for an existing table needs a migration: the app refuses to serve (503, logged) when the
column it finds has another dimension.
"""

import math
from collections.abc import Sequence

EMBEDDING_DIM = 3


def encode(value: Sequence[float]) -> str:
    floats = [float(x) for x in value]
    if not all(math.isfinite(x) for x in floats):
        raise ValueError("a vector cannot hold NaN or infinity")
    return "[" + ",".join(repr(x) for x in floats) + "]"


def decode(text: str) -> list[float]:
    inner = text.strip()[1:-1].strip()
    return [float(x) for x in inner.split(",")] if inner else []
