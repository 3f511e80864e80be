"""server.images: every acceptance and rejection rule, without HTTP."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from server.images import ImageError, check_size, decode_image

MAX = 1_000_000


def raw(arr: np.ndarray, **kw):
    return decode_image(
        "raw", arr.tobytes(), field="obs", max_pixels=MAX, shape=list(arr.shape),
        dtype=arr.dtype.name, **kw,
    )


def png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def rejected(code: str, fn, *args, **kwargs) -> ImageError:
    with pytest.raises(ImageError) as info:
        fn(*args, **kwargs)
    assert info.value.code == code, info.value.message
    assert info.value.field == "obs"
    return info.value


RGB = np.random.default_rng(0).integers(0, 256, (16, 20, 3), dtype=np.uint8)


def test_uint8_hwc_is_returned_unchanged():
    out = raw(RGB)
    np.testing.assert_array_equal(out.pixels, RGB)
    assert out.warnings == [] and out.pixels.flags.writeable


def test_chw_is_transposed_to_hwc():
    np.testing.assert_array_equal(raw(np.ascontiguousarray(RGB.transpose(2, 0, 1))).pixels, RGB)


def test_declared_bgr_is_swapped_to_rgb():
    out = raw(np.ascontiguousarray(RGB[..., ::-1]), color_order="bgr")
    np.testing.assert_array_equal(out.pixels, RGB)


def test_rgba_drops_alpha_with_a_warning():
    rgba = np.concatenate([RGB, np.full((16, 20, 1), 7, np.uint8)], axis=-1)
    out = raw(rgba)
    np.testing.assert_array_equal(out.pixels, RGB)
    assert [w.code for w in out.warnings] == ["image.alpha_dropped"]


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_float_in_unit_range_is_accepted(dtype):
    out = raw((RGB / 255.0).astype(dtype))
    assert out.pixels.dtype == np.float32
    np.testing.assert_allclose(out.pixels, RGB / 255.0, atol=1e-3)


def test_float_rounding_just_outside_unit_range_is_clipped():
    arr = np.full((8, 8, 3), 1.0004, np.float32)
    assert raw(arr).pixels.max() == 1.0


def test_png_round_trip_and_bgr_png():
    np.testing.assert_array_equal(
        decode_image("png", png(RGB), field="obs", max_pixels=MAX).pixels, RGB
    )
    swapped = decode_image(
        "png", png(np.ascontiguousarray(RGB[..., ::-1])), field="obs", max_pixels=MAX,
        color_order="bgr",
    )
    np.testing.assert_array_equal(swapped.pixels, RGB)


def test_jpeg_decodes_to_rgb():
    buf = io.BytesIO()
    Image.fromarray(RGB).save(buf, format="JPEG", quality=95)
    out = decode_image("jpeg", buf.getvalue(), field="obs", max_pixels=MAX)
    assert out.pixels.shape == (16, 20, 3) and out.pixels.dtype == np.uint8


def test_png_rgba_drops_alpha():
    rgba = np.concatenate([RGB, np.full((16, 20, 1), 255, np.uint8)], axis=-1)
    out = decode_image("png", png(rgba), field="obs", max_pixels=MAX)
    np.testing.assert_array_equal(out.pixels, RGB)
    assert [w.code for w in out.warnings] == ["image.alpha_dropped"]


@pytest.mark.parametrize(
    "shape, code",
    [
        ([0, 16, 3], "image.empty"),
        ([768], "image.one_dimensional"),
        ([16, 16], "image.grayscale"),
        ([16, 16, 1], "image.grayscale"),
        ([1, 16, 16], "image.grayscale"),
        ([16, 16, 2], "image.bad_channels"),
        ([16, 16, 5], "image.bad_channels"),
        ([3, 4, 3], "image.ambiguous_layout"),
        ([4, 16, 3], "image.ambiguous_layout"),  # a 4x16 RGB or a 16x3 RGBA frame
        ([3, 64, 4], "image.ambiguous_layout"),
        ([1, 16, 16, 3], "image.bad_ndim"),
        ([], "image.bad_ndim"),
        ([-1, 16, 3], "image.bad_shape"),
    ],
)
def test_bad_shapes_are_refused_with_their_code(shape, code):
    n = max(1, int(np.prod(shape))) if all(d > 0 for d in shape) else 4
    rejected(code, decode_image, "raw", b"\0" * n, field="obs", max_pixels=MAX,
             shape=shape, dtype="uint8")


def test_layout_is_inferred_when_only_one_axis_can_hold_channels():
    out = decode_image("raw", b"\0" * (3 * 64 * 4), field="obs", max_pixels=MAX,
                       shape=[64, 4, 3], dtype="uint8")
    assert out.pixels.shape == (64, 4, 3)  # CHW would need 64 channels
    out = decode_image("raw", b"\0" * (4 * 64 * 64), field="obs", max_pixels=MAX,
                       shape=[4, 64, 64], dtype="uint8")
    assert out.pixels.shape == (64, 64, 3) and [w.code for w in out.warnings] == ["image.alpha_dropped"]


def test_declared_layout_resolves_ambiguity():
    arr = np.arange(36, dtype=np.uint8).reshape(3, 4, 3)
    hwc = raw(arr, layout="hwc")
    chw = raw(arr, layout="chw")
    assert hwc.pixels.shape == (3, 4, 3) and chw.pixels.shape == (4, 3, 3)
    np.testing.assert_array_equal(chw.pixels, arr.transpose(1, 2, 0))


def test_declared_layout_with_wrong_channels_is_refused():
    rejected("image.bad_channels", raw, np.zeros((16, 16, 3), np.uint8), layout="chw")


def test_empty_data_is_refused():
    rejected("image.empty", decode_image, "raw", b"", field="obs", max_pixels=MAX,
             shape=[16, 16, 3], dtype="uint8")
    rejected("image.empty", decode_image, "png", b"", field="obs", max_pixels=MAX)


def test_float_0_255_is_refused_with_the_fix():
    err = rejected("image.float_out_of_range", raw, RGB.astype(np.float32))
    assert "divide by 255" in err.message


def test_float_minus_one_to_one_is_refused_with_the_fix():
    err = rejected("image.float_out_of_range", raw, (RGB / 127.5 - 1).astype(np.float32))
    assert "(x + 1) / 2" in err.message


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_floats_are_refused(bad):
    arr = np.full((8, 8, 3), 0.5, np.float32)
    arr[2, 3, 1] = bad
    rejected("image.non_finite", raw, arr)


@pytest.mark.parametrize("dtype", ["int16", "uint16", "int32", "bool", "complex64", "object"])
def test_unsupported_dtypes_are_refused(dtype):
    err = rejected("image.unsupported_dtype", decode_image, "raw", b"\0" * 192, field="obs",
                   max_pixels=MAX, shape=[8, 8, 3], dtype=dtype)
    assert "uint8" in err.message


def test_data_length_must_match_shape_and_dtype():
    err = rejected("image.size_mismatch", decode_image, "raw", b"\0" * 100, field="obs",
                   max_pixels=MAX, shape=[8, 8, 3], dtype="float32")
    assert "768" in err.message  # 8 * 8 * 3 * 4 bytes


def test_raw_needs_shape_and_dtype():
    rejected("image.missing_shape", decode_image, "raw", b"\0" * 192, field="obs", max_pixels=MAX,
             dtype="uint8")
    rejected("image.missing_dtype", decode_image, "raw", b"\0" * 192, field="obs", max_pixels=MAX,
             shape=[8, 8, 3])


def test_raw_fields_on_a_png_are_refused():
    rejected("image.unexpected_field", decode_image, "png", png(RGB), field="obs", max_pixels=MAX,
             shape=[16, 20, 3])


def test_corrupt_and_truncated_files_are_refused():
    rejected("image.corrupt", decode_image, "png", b"not a png at all", field="obs", max_pixels=MAX)
    data = png(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    err = rejected("image.corrupt", decode_image, "png", data[: len(data) // 2], field="obs",
                   max_pixels=MAX)
    assert "truncated" in err.message


def test_wrong_declared_format_names_the_actual_one():
    buf = io.BytesIO()
    Image.fromarray(RGB).save(buf, format="JPEG")
    err = rejected("image.corrupt", decode_image, "png", buf.getvalue(), field="obs", max_pixels=MAX)
    assert "format 'jpeg'" in err.message


def test_grayscale_png_is_refused():
    gray = np.zeros((16, 16), np.uint8)
    rejected("image.grayscale", decode_image, "png", png(gray), field="obs", max_pixels=MAX)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height, with one tiny IDAT: a bomb's header."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_from_its_header():
    err = rejected("image.too_large", decode_image, "png", _png_header_only(50_000, 50_000),
                   field="obs", max_pixels=MAX)
    assert "2500000000" in err.message


def test_raw_over_pixel_limit_is_refused_before_reading_data():
    rejected("image.too_large", decode_image, "raw", b"\0" * 10, field="obs", max_pixels=MAX,
             shape=[2000, 2000, 3], dtype="uint8")


def test_size_policy_resize_warns_and_reject_refuses():
    image = raw(RGB)  # 16x20
    notes = check_size(image, 32, "resize", "obs")
    assert [n.code for n in notes] == ["image.resized"] and "aspect" in notes[0].message
    assert check_size(raw(np.zeros((32, 32, 3), np.uint8)), 32, "reject", "obs") == []
    with pytest.raises(ImageError) as info:
        check_size(image, 32, "reject", "obs")
    assert info.value.code == "image.wrong_size"
