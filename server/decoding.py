"""Decoding a request's frames with bounded memory.

Decoded bytes in flight across all requests are capped (``max_decode_mb``):
each frame reserves its decoded size, read from its header or declared shape
before any pixel is decompressed, and waits while the cap is reached. Large
PNG/JPEG frames are reduced while decoding (server/images.py), so only the
decoder ever holds them at full size. A raw uint8 frame that fits in a few MB
is a checked view of the body's bytes, decoded on the event loop (cheaper
than the thread hop); everything else decodes in the threadpool.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from starlette.concurrency import run_in_threadpool

from server.images import DecodedImage, check_size, decode_image, decoded_bytes
from server.schemas import Image

_INLINE_RAW_BYTES = 4 * 2**20  # raw uint8 frames up to 4 MiB (1024x1024 RGB) decode on the event loop


class DecodeBudget:
    """Decoded bytes in flight, bounded; a frame waits for room. A frame larger
    than the whole budget waits until it is alone, then decodes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.in_flight = 0
        self.peak = 0
        self.waits = 0
        self._cond = asyncio.Condition()

    @asynccontextmanager
    async def reserve(self, nbytes: int) -> AsyncIterator[None]:
        nbytes = min(nbytes, self.max_bytes)
        async with self._cond:
            if self.in_flight + nbytes > self.max_bytes:
                self.waits += 1
                await self._cond.wait_for(lambda: self.in_flight + nbytes <= self.max_bytes)
            self.in_flight += nbytes
            self.peak = max(self.peak, self.in_flight)
        try:
            yield
        finally:
            async with self._cond:
                self.in_flight -= nbytes
                self._cond.notify_all()


class Decoder:
    """Decodes, validates and applies the resize policy to a request's frames, within a shared budget.

    budget: decoded bytes in flight across requests. image_size: the model's input side.
    max_pixels: frames over it are refused before decompression. resize_policy: "resize"
    (with the model's transform; large files reduced while decoding) or "reject".
    """

    def __init__(self, budget: DecodeBudget, image_size: int, max_pixels: int, resize_policy: str) -> None:
        self.budget, self.image_size = budget, image_size
        self.max_pixels, self.resize_policy = max_pixels, resize_policy

    async def decode(self, image: Image, field: str) -> DecodedImage:
        args = (image.format, image.data)
        kwargs = dict(field=field, max_pixels=self.max_pixels, shape=image.shape, dtype=image.dtype,
                      color_order=image.color_order, layout=image.layout,
                      reduce_to=self.image_size if self.resize_policy == "resize" else None)
        if image.format == "raw" and image.dtype == "uint8" and len(image.data) <= _INLINE_RAW_BYTES:
            decoded = decode_image(*args, **kwargs)  # type: ignore[arg-type]
        else:
            async with self.budget.reserve(decoded_bytes(image.format, image.data, image.shape, image.dtype)):
                decoded = await run_in_threadpool(decode_image, *args, **kwargs)
        notices = check_size(decoded, self.image_size, self.resize_policy, field)
        return DecodedImage(decoded.pixels, decoded.warnings + notices, decoded.original)
