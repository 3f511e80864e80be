"""Decode and validate one camera frame: PNG/JPEG bytes or a raw array.

Pure numpy/PIL, no HTTP and no torch. Every rejection is an ``ImageError``
with a stable ``image.<reason>`` code and a message that says what was
received and what to send; nothing is guessed silently:

* raw arrays declare ``shape`` and ``dtype`` (little-endian); HWC or CHW is
  inferred from where a 3- or 4-channel axis is, and an array where both
  readings are plausible must declare ``layout``;
* uint8 is read as [0, 255], float as [0, 1] (a small rounding tolerance is
  clipped; anything further out is refused with the conversion to apply);
* RGBA loses its alpha channel with a warning; ``color_order="bgr"`` is
  swapped to RGB (colour order cannot be seen in pixels, so it is declared);
* grayscale frames are refused: the model was trained on RGB, and
  replicating one channel three times is a guess the caller should make;
* PNG/JPEG headers are checked against the pixel limit before any pixel is
  decompressed (decompression bombs), and only the declared decoder runs.

The result is an RGB ``(H, W, 3)`` array, uint8 or float32 in [0, 1], which
the model's own transform resizes and normalises.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

ImageFormat = Literal["png", "jpeg", "raw"]
ColorOrder = Literal["rgb", "bgr"]
Layout = Literal["hwc", "chw"]
ResizePolicy = Literal["resize", "reject"]

SUPPORTED_DTYPES = ("uint8", "float16", "float32", "float64")
# Float pixels this far outside [0, 1] are rounding, not a unit mistake.
FLOAT_TOLERANCE = 1e-3
_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG"}
_MAGIC = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg"}


class ImageError(Exception):
    """A frame that cannot be used, with a code, a sentence and the field."""

    def __init__(self, code: str, message: str, field: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


@dataclass(frozen=True)
class Notice:
    """A non-fatal change made to the input, reported back to the client."""

    code: str
    message: str
    field: str | None = None


@dataclass(frozen=True)
class DecodedImage:
    """An RGB frame: ``pixels`` (H, W, 3), uint8 or float32 in [0, 1].

    original: (height, width) as sent, when decoding already reduced it.
    """

    pixels: np.ndarray
    warnings: list[Notice] = field(default_factory=list)
    original: tuple[int, int] | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) as sent."""
        if self.original is not None:
            return self.original
        return int(self.pixels.shape[0]), int(self.pixels.shape[1])


def decode_image(
    fmt: ImageFormat,
    data: bytes,
    *,
    field: str,
    max_pixels: int,
    shape: list[int] | None = None,
    dtype: str | None = None,
    color_order: ColorOrder = "rgb",
    layout: Layout | None = None,
    reduce_to: int | None = None,
) -> DecodedImage:
    """Decode one frame and validate it; raise ``ImageError`` if unusable.

    Args:
        fmt: ``"png"``, ``"jpeg"`` or ``"raw"``.
        data: the encoded file, or the raw array's bytes (C order).
        field: request field name, echoed in errors and warnings.
        max_pixels: refuse frames with more than H * W pixels.
        shape, dtype, layout: describe a raw array; refused for PNG/JPEG.
        color_order: channel order of the pixels as sent.
        reduce_to: the model's input size. A PNG/JPEG at least 4x larger on
            its short side is reduced while decoding (JPEG: DCT scaling;
            both: an integer box reduction) to no less than twice this size,
            so a huge frame never exists at full size past the decoder; the
            model's transform then resizes it as usual.
    """
    if len(data) == 0:
        raise ImageError(
            "image.empty",
            f"{field} has no data (0 bytes): a camera that has not rendered yet? "
            "Send a rendered RGB frame.",
            field,
        )
    if fmt == "raw":
        rgb, notices = _decode_raw(data, shape, dtype, layout, field, max_pixels)
        original = None
    else:
        if shape is not None or dtype is not None or layout is not None:
            raise ImageError(
                "image.unexpected_field",
                f"{field}: shape, dtype and layout describe raw arrays; "
                f"a {fmt} file carries its own, so omit them (or send format 'raw').",
                field,
            )
        rgb, notices, original = _decode_file(fmt, data, field, max_pixels, reduce_to)
    if color_order == "bgr":
        rgb = rgb[..., ::-1]
    # Contiguous and writable: torch.from_numpy refuses read-only buffers.
    return DecodedImage(np.require(rgb, requirements=["C", "W"]), notices, original)


def check_size(
    image: DecodedImage, image_size: int, policy: ResizePolicy, field: str
) -> list[Notice]:
    """Apply the resize policy to a frame of the wrong size.

    Returns the warnings to report when the model's transform will resize it;
    raises ``image.wrong_size`` when the policy is ``reject``.
    """
    h, w = image.size
    if (h, w) == (image_size, image_size):
        return []
    if policy == "reject":
        raise ImageError(
            "image.wrong_size",
            f"{field} is {h}x{w} (HxW) but this server takes exactly "
            f"{image_size}x{image_size} frames (resize policy 'reject'); "
            "resize before sending.",
            field,
        )
    aspect = "" if h == w else "; its aspect ratio changes"
    return [
        Notice(
            "image.resized",
            f"{field} resized from {h}x{w} to {image_size}x{image_size} with the "
            f"model's training transform (bilinear, antialiased){aspect}",
            field,
        )
    ]


# -- raw arrays ---------------------------------------------------------------


def _decode_raw(
    data: bytes,
    shape: list[int] | None,
    dtype: str | None,
    layout: Layout | None,
    field: str,
    max_pixels: int,
) -> tuple[np.ndarray, list[Notice]]:
    if shape is None or dtype is None:
        missing = "shape" if shape is None else "dtype"
        raise ImageError(
            f"image.missing_{missing}",
            f"{field}: a raw array needs its {missing}, e.g. shape [H, W, 3] and "
            "dtype 'uint8'.",
            field,
        )
    if dtype not in SUPPORTED_DTYPES:
        raise ImageError(
            "image.unsupported_dtype",
            f"{field}: dtype '{dtype}' is not supported; send uint8 in [0, 255] "
            "or float16/float32/float64 in [0, 1].",
            field,
        )
    shown = _shape_text(shape)
    if any(d < 0 for d in shape):
        raise ImageError(
            "image.bad_shape", f"{field}: shape {shown} has a negative dimension.", field
        )
    if len(shape) == 0:
        raise ImageError(
            "image.bad_ndim",
            f"{field}: shape {shown} is a scalar; send one frame as (H, W, 3) or (3, H, W).",
            field,
        )
    if math.prod(shape) == 0:
        raise ImageError(
            "image.empty",
            f"{field}: shape {shown} has no pixels: a camera that has not rendered yet? "
            "Send a rendered RGB frame.",
            field,
        )
    if len(shape) == 1:
        raise ImageError(
            "image.one_dimensional",
            f"{field}: shape {shown} is 1-D (a flattened or not-yet-rendered frame); "
            "send (H, W, 3) or (3, H, W).",
            field,
        )
    if len(shape) == 2:
        raise _grayscale(field, f"shape {shown}")
    if len(shape) > 3:
        raise ImageError(
            "image.bad_ndim",
            f"{field}: shape {shown} is {len(shape)}-D; send one frame, (H, W, C) or "
            "(C, H, W), without a batch or time axis.",
            field,
        )
    chosen = _layout(shape, layout, field)
    h, w, c = (shape[0], shape[1], shape[2]) if chosen == "hwc" else (shape[1], shape[2], shape[0])
    _check_pixels(h, w, field, max_pixels)

    itemsize = np.dtype(dtype).itemsize
    expected = math.prod(shape) * itemsize
    if len(data) != expected:
        raise ImageError(
            "image.size_mismatch",
            f"{field}: data has {len(data)} bytes but shape {shown} of {dtype} needs "
            f"{expected}; send the array's bytes in C order (arr.tobytes()).",
            field,
        )
    arr = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)
    if chosen == "chw":
        arr = arr.transpose(1, 2, 0)  # (H, W, C)
    if arr.dtype.kind == "f":
        arr = _check_float(arr, field)
    notices: list[Notice] = []
    if c == 4:
        arr = arr[..., :3]
        notices.append(_alpha_dropped(field))
    return arr, notices


def _layout(shape: list[int], declared: Layout | None, field: str) -> Layout:
    """Which axis holds the channels; refuse what cannot be told apart."""
    shown = _shape_text(shape)
    readings: dict[Layout, tuple[int, int, int]] = {
        "hwc": (shape[2], shape[0], shape[1]),  # (C, H, W)
        "chw": (shape[0], shape[1], shape[2]),
    }
    if declared is not None:
        c = readings[declared][0]
        if c == 1:
            raise _grayscale(field, f"shape {shown}")
        if c not in (3, 4):
            raise ImageError(
                "image.bad_channels",
                f"{field}: shape {shown} declared {declared.upper()} has {c} channels; "
                "send 3 (RGB) or 4 (RGBA).",
                field,
            )
        return declared
    valid = [name for name, (c, _, _) in readings.items() if c in (3, 4)]
    if len(valid) == 2:
        # Both readings put 3 or 4 on a spatial axis (e.g. (3, 64, 4)), so
        # neither is a plausible camera frame and the sizes cannot decide.
        raise ImageError(
            "image.ambiguous_layout",
            f"{field}: shape {shown} reads as HWC or as CHW; declare \"layout\": "
            "\"hwc\" or \"chw\".",
            field,
        )
    if len(valid) == 1:
        return valid[0]
    if 1 in (shape[0], shape[2]):
        raise _grayscale(field, f"shape {shown}")
    raise ImageError(
        "image.bad_channels",
        f"{field}: shape {shown} has no 3- or 4-channel axis; send (H, W, 3|4) or "
        "(3|4, H, W) in RGB(A).",
        field,
    )


def _check_float(arr: np.ndarray, field: str) -> np.ndarray:
    arr = arr.astype(np.float32)
    finite = np.isfinite(arr)
    if not finite.all():
        nan = int(np.isnan(arr).sum())
        inf = int(arr.size - finite.sum()) - nan
        raise ImageError(
            "image.non_finite",
            f"{field} has {nan} NaN and {inf} infinite values; send finite pixels "
            "in [0, 1].",
            field,
        )
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -FLOAT_TOLERANCE or hi > 1.0 + FLOAT_TOLERANCE:
        if lo >= 0.0 and hi <= 255.0:
            hint = "values look like 0-255: divide by 255 or send uint8"
        elif lo >= -1.0 - FLOAT_TOLERANCE and hi <= 1.0 + FLOAT_TOLERANCE:
            hint = "values look like [-1, 1]: send (x + 1) / 2"
        else:
            hint = "undo the normalisation (e.g. mean/std) and send [0, 1]"
        raise ImageError(
            "image.float_out_of_range",
            f"{field}: float pixels must lie in [0, 1] but range over "
            f"[{lo:.4g}, {hi:.4g}]; {hint}.",
            field,
        )
    return np.clip(arr, 0.0, 1.0)


# -- PNG / JPEG ---------------------------------------------------------------


def _decode_file(
    fmt: Literal["png", "jpeg"], data: bytes, field: str, max_pixels: int, reduce_to: int | None
) -> tuple[np.ndarray, list[Notice], tuple[int, int] | None]:
    im = _open(fmt, data, field)
    with im:
        w, h = im.size
        # The header is read, no pixel is decompressed yet.
        _check_pixels(h, w, field, max_pixels)
        factor = min(w, h) // (2 * reduce_to) if reduce_to else 1
        try:
            if factor >= 2 and fmt == "jpeg":
                # Decode at 1/2, 1/4 or 1/8 scale, no smaller than twice the model's size.
                im.draft(im.mode, (2 * reduce_to * w // min(w, h), 2 * reduce_to * h // min(w, h)))
            im.load()
            if factor >= 2:
                factor = min(im.size) // (2 * reduce_to)
                reduced = im.reduce(factor) if factor >= 2 else im
                rgb, notices = _to_rgb(reduced, fmt, field)
                return rgb, notices, (h, w)
            rgb, notices = _to_rgb(im, fmt, field)
            return rgb, notices, None
        except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError) as exc:
            # Every way a truncated or corrupt file fails in Pillow's decoders.
            raise ImageError(
                "image.corrupt",
                f"{field}: the {fmt} file is truncated or corrupt ({_reason(exc)}); send the "
                "complete file.",
                field,
            ) from None


def _open(fmt: Literal["png", "jpeg"], data: bytes, field: str) -> Image.Image:
    try:
        # Only the declared decoder may run: no guessing among PIL's dozens.
        return Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[fmt]])
    except Image.DecompressionBombError as exc:
        raise ImageError("image.too_large", f"{field}: {exc}", field) from None
    except UnidentifiedImageError:
        raise ImageError("image.corrupt", _not_a_file(fmt, data, field), field) from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError) as exc:
        raise ImageError(
            "image.corrupt", f"{field}: the {fmt} header is truncated or corrupt ({_reason(exc)}); "
            "send the complete file.", field) from None


def decoded_bytes(fmt: ImageFormat, data: bytes, shape: list[int] | None, dtype: str | None) -> int:
    """Upper bound on the memory a frame takes once decoded (before any reduction),
    read from its header or declared shape without decoding pixels; 0 when unknown
    (the decoder then refuses it anyway)."""
    try:
        if fmt == "raw":
            if not shape or dtype not in SUPPORTED_DTYPES:
                return 0
            return math.prod(max(0, d) for d in shape) * max(4, np.dtype(dtype).itemsize)
        with Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[fmt]]) as im:
            w, h = im.size
            return w * h * 4
    except Exception:  # noqa: BLE001 - an unreadable header is the decoder's to report
        return 0


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _to_rgb(im: Image.Image, fmt: str, field: str) -> tuple[np.ndarray, list[Notice]]:
    notices: list[Notice] = []
    mode = im.mode
    if mode in ("L", "LA", "1", "I", "I;16", "I;16B", "I;16L", "F"):
        raise _grayscale(field, f"a {fmt} in mode {mode}")
    if mode == "RGBA" or (mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        notices.append(_alpha_dropped(field))
    elif mode not in ("RGB", "P"):
        raise ImageError(
            "image.bad_channels",
            f"{field}: {fmt} in colour mode {mode}; send an RGB or RGBA image.",
            field,
        )
    rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)  # (H, W, 3)
    return rgb, notices


def _not_a_file(fmt: str, data: bytes, field: str) -> str:
    for magic, actual in _MAGIC.items():
        if data.startswith(magic) and actual != fmt:
            return f"{field} was declared {fmt} but holds a {actual} file; set format '{actual}'."
    return f"{field} is not a readable {fmt} file ({len(data)} bytes); send a complete {fmt}."


# -- shared -------------------------------------------------------------------


def _check_pixels(h: int, w: int, field: str, max_pixels: int) -> None:
    if h * w > max_pixels:
        raise ImageError(
            "image.too_large",
            f"{field} is {h}x{w} = {h * w} pixels, over this server's limit of "
            f"{max_pixels}; downscale before sending.",
            field,
        )


def _grayscale(field: str, what: str) -> ImageError:
    return ImageError(
        "image.grayscale",
        f"{field}: {what} is grayscale but the model takes RGB; send (H, W, 3), "
        "e.g. np.repeat(x[..., None], 3, axis=-1) if the camera is monochrome.",
        field,
    )


def _alpha_dropped(field: str) -> Notice:
    return Notice("image.alpha_dropped", f"{field}: alpha channel dropped (RGBA -> RGB)", field)


def _shape_text(shape: list[int]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
