"""Append rows to a ``.npy`` file whose length is unknown until the end.

``write_dataset`` consumes an iterator of episodes of unknown total length;
collecting them in memory first would hold the whole dataset (1.2 GB of
frames for 1000 episodes of 100 64x64 frames) twice. Instead each array is
streamed to disk under a fixed-size placeholder header, and the true header
is written over it on ``close``.

The header follows the NPY format 1.0 specification
(https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html):
magic, version, little-endian uint16 header length, then a Python-literal
dict padded with spaces and ended by a newline, the whole preamble a multiple
of 64 bytes.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

_MAGIC = b"\x93NUMPY\x01\x00"
_PREAMBLE_BYTES = 256  # room for any realistic shape; a multiple of 64


def _header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    descr = np.lib.format.dtype_to_descr(dtype)
    text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {shape!r}, }}"
    pad = _PREAMBLE_BYTES - len(_MAGIC) - 2 - len(text) - 1
    if pad < 0:
        raise ValueError(f"npy header for shape {shape} exceeds {_PREAMBLE_BYTES} bytes")
    body = (text + " " * pad + "\n").encode("latin1")
    return _MAGIC + struct.pack("<H", len(body)) + body


class NpyAppender:
    """Write ``(rows, *row_shape)`` blocks of one dtype to ``path`` as a single array."""

    def __init__(self, path: Path, dtype: np.dtype | type, row_shape: tuple[int, ...]) -> None:
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(row_shape)
        self.rows = 0
        self._file = open(self.path, "wb")
        self._file.write(_header(self.dtype, (0, *self.row_shape)))

    def append(self, block: np.ndarray) -> None:
        """Append (n, *row_shape) rows; dtype and row shape must match exactly."""
        if block.dtype != self.dtype or block.shape[1:] != self.row_shape:
            raise ValueError(
                f"{self.path.name}: expected rows of shape {self.row_shape} and dtype "
                f"{self.dtype}, got block {block.shape} {block.dtype}"
            )
        self._file.write(np.ascontiguousarray(block).tobytes())
        self.rows += block.shape[0]

    def close(self) -> None:
        """Write the final header (now that the length is known), sync and close."""
        self._file.seek(0)
        self._file.write(_header(self.dtype, (self.rows, *self.row_shape)))
        self._file.flush()
        # Synced before the dataset directory is renamed into place, so that a
        # power loss cannot leave a complete-looking dataset with missing bytes.
        os.fsync(self._file.fileno())
        self._file.close()

    def abort(self) -> None:
        """Close without finishing; the caller deletes the file."""
        self._file.close()
