"""Give the heap's freed pages back to the system, so a worker's resident size stays its own.

Loading an ONNX graph holds its weights twice for a moment (the file's protobuf and the
session's tensors), and glibc keeps the freed half mapped: a worker would then report (and
hold) hundreds of megabytes it no longer uses. `malloc_trim` is glibc's own remedy; elsewhere
(musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    library = ctypes.CDLL(name) if name else None
    return getattr(library, "malloc_trim", None)


def return_freed_memory() -> None:
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
