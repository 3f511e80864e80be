"""The process's memory: RSS, peak RSS, and giving freed heap back to the OS.

After a burst of large frames the Python heap and glibc's malloc arenas keep
the pages they grew to, so RSS stays high although nothing holds them.
``trim()`` asks glibc (``malloc_trim(0)``) to return free pages at the top
of every arena; the scheduler calls it when the server goes idle after
handling large frames. On other C libraries it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import resource

log = logging.getLogger(__name__)


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return lib if lib is not None and hasattr(lib, "malloc_trim") else None


_LIBC = _libc()


def rss_bytes() -> int | None:
    """Resident set size now, from /proc (None where there is no /proc)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * resource.getpagesize()


def max_rss_bytes() -> int:
    """Peak resident set size since start-up (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def trim() -> bool:
    """Return free heap pages to the OS; True when glibc released some."""
    if _LIBC is None:
        return False
    return bool(_LIBC.malloc_trim(0))
