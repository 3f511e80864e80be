"""Every rejection over HTTP: a 4xx with {"error": {code, message, field}}, never a 5xx.

The last test checks the server is still healthy and counted the errors.
"""

from __future__ import annotations

import io
import json
import random
import struct
import zlib

import httpx
import msgpack
import numpy as np
import pytest
from PIL import Image

from tests.server.conftest import GOAL_PROPRIO, PROPRIO, frame
from wm_client import PlanningClient, PlanningError


def raw_image(shape, dtype="uint8", data=None, **extra):
    if data is None:
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize if all(d > 0 for d in shape) else 0
        data = b"\x01" * n
    return {"format": "raw", "data": data, "shape": list(shape), "dtype": dtype, **extra}


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


GOOD = frame(0)
FLOATS_0_255 = GOOD.astype(np.float32)
WITH_NAN = (GOOD / 255).astype(np.float32)
WITH_NAN[0, 0, 0] = np.nan
PNG = png_bytes(GOOD)

IMAGE_CASES = {
    "image.empty": raw_image([32, 32, 3], data=b""),
    "image.one_dimensional": raw_image([32 * 32 * 3]),
    "image.grayscale": raw_image([32, 32]),
    "image.bad_channels": raw_image([32, 32, 2]),
    "image.ambiguous_layout": raw_image([3, 32, 4]),
    "image.bad_ndim": raw_image([1, 32, 32, 3]),
    "image.float_out_of_range": raw_image([32, 32, 3], "float32", FLOATS_0_255.tobytes()),
    "image.non_finite": raw_image([32, 32, 3], "float32", WITH_NAN.tobytes()),
    "image.unsupported_dtype": raw_image([32, 32, 3], "int16"),
    "image.size_mismatch": raw_image([32, 32, 3], data=b"\0" * 100),
    "image.missing_shape": {"format": "raw", "data": GOOD.tobytes(), "dtype": "uint8"},
    "image.corrupt": {"format": "png", "data": PNG[: len(PNG) // 2]},
    "image.too_large": {"format": "png", "data": bomb_png(40_000, 40_000)},
    "image.unexpected_field": {"format": "png", "data": PNG, "shape": [32, 32, 3]},
}


@pytest.mark.parametrize("field", ["obs", "goal"])
@pytest.mark.parametrize("code", sorted(IMAGE_CASES))
def test_each_image_rule_has_its_code_and_field(mp_client, code, field):
    images = {"obs": GOOD, "goal": GOOD, field: IMAGE_CASES[code]}
    with pytest.raises(PlanningError) as info:
        mp_client.plan(images["obs"], images["goal"], PROPRIO, GOAL_PROPRIO)
    err = info.value
    assert (err.status, err.code, err.field) == (422, code, field), err.message
    assert field in err.message


def test_float_message_says_how_to_convert(mp_client):
    with pytest.raises(PlanningError) as info:
        mp_client.plan(FLOATS_0_255, GOOD, PROPRIO, GOAL_PROPRIO)
    assert "divide by 255" in info.value.message


def test_replan_validates_its_frame_too(mp_client):
    sid = mp_client.plan(GOOD, frame(1), PROPRIO, GOAL_PROPRIO, seed=0)["session_id"]
    with pytest.raises(PlanningError) as info:
        mp_client.replan(sid, IMAGE_CASES["image.empty"], PROPRIO)
    assert (info.value.code, info.value.field) == ("image.empty", "obs")
    assert mp_client.replan(sid, GOOD, PROPRIO)["warm_start"] is True  # the session survived


def test_bad_base64_in_json(json_client):
    with pytest.raises(PlanningError) as info:
        json_client.plan({"format": "png", "data": "not base64!!"}, GOOD, PROPRIO, GOAL_PROPRIO)
    assert (info.value.status, info.value.code, info.value.field) == (422, "image.bad_base64", "obs.data")


@pytest.mark.parametrize(
    "proprio, goal_proprio, code, field",
    [
        ([1.0], GOAL_PROPRIO, "proprio.wrong_length", "proprio"),
        (PROPRIO, [1.0, 2.0, 3.0], "proprio.wrong_length", "goal_proprio"),
        ([float("nan"), 0.0], GOAL_PROPRIO, "proprio.non_finite", "proprio"),
        (PROPRIO, [float("inf"), 0.0], "proprio.non_finite", "goal_proprio"),
        ([1e39, 0.0], GOAL_PROPRIO, "proprio.non_finite", "proprio"),  # overflows float32
        (None, GOAL_PROPRIO, "proprio.missing", "proprio"),
    ],
)
def test_proprio_rules(client, proprio, goal_proprio, code, field):
    with pytest.raises(PlanningError) as info:
        client.plan(GOOD, GOOD, proprio, goal_proprio)
    assert (info.value.status, info.value.code, info.value.field) == (422, code, field)


def body(**overrides):
    base = {
        "obs": {"format": "raw", "data": GOOD.tobytes(), "shape": [32, 32, 3], "dtype": "uint8"},
        "goal": {"format": "raw", "data": GOOD.tobytes(), "shape": [32, 32, 3], "dtype": "uint8"},
        "proprio": PROPRIO,
        "goal_proprio": GOAL_PROPRIO,
    }
    base.update(overrides)
    return base


def error_of(response: httpx.Response) -> dict:
    """The error body, whichever format the server answered in."""
    if response.headers["content-type"].startswith("application/msgpack"):
        return msgpack.unpackb(response.content)["error"]
    return response.json()["error"]


def post(url: str, payload, path="/plan", content_type="application/msgpack", **headers):
    content = payload if isinstance(payload, bytes) else msgpack.packb(payload, use_bin_type=True)
    return httpx.post(url + path, content=content, headers={"Content-Type": content_type, **headers})


@pytest.mark.parametrize(
    "payload, code, field",
    [
        (body(colour="red"), "request.unknown_field", "colour"),
        (body(planner={"num_sample": 10}), "request.unknown_field", "planner.num_sample"),
        (body(obs={"format": "raw", "data": b"", "shape": [1], "dtype": "uint8", "alpha": 1}),
         "request.unknown_field", "obs.alpha"),
        ({"obs": body()["obs"]}, "request.missing_field", "goal"),
        (body(seed=-1), "request.invalid", "seed"),
        (body(session_id="spaces are not allowed"), "request.invalid", "session_id"),
        (body(obs={"format": "gif", "data": b"x"}), "request.invalid", "obs.format"),
        (body(planner={"horizon": 0}), "planner.invalid", "planner.horizon"),  # the planner config's own rule
        (body(seed="5"), "request.invalid", "seed"),
        (body(seed=True), "request.invalid", "seed"),
        (body(seed=1.5), "request.invalid", "seed"),
        (body(proprio=[True, 1.0]), "request.invalid", "proprio.0"),
        (body(proprio=["1.0", 1.0]), "request.invalid", "proprio.0"),
        (body(planner={"horizon": True}), "request.invalid", "planner.horizon"),
        (body(planner={"alpha": "1"}), "request.invalid", "planner.alpha"),
        (body(planner={"alpha": 1e300}), "planner.out_of_bounds", "planner.alpha"),
        (body(planner={"alpha": float("inf")}), "request.invalid", "planner.alpha"),
        (body(planner={"alpha": float("nan")}), "request.invalid", "planner.alpha"),
        (body(planner={"var_scale": 1e300}), "planner.out_of_bounds", "planner.var_scale"),
        (body(planner={"min_improvement": 1e300}), "planner.out_of_bounds", "planner.min_improvement"),
        (body(planner={"patience": 10_000}), "planner.out_of_bounds", "planner.patience"),
        (body(planner={"objective": "mean"}), "request.invalid", "planner.objective"),
        (body(planner={"num_samples": 1_000_000}), "planner.out_of_bounds", "planner.num_samples"),
        (body(planner={"horizon": 33}), "planner.out_of_bounds", "planner.horizon"),
        (body(planner={"opt_steps": 101}), "planner.out_of_bounds", "planner.opt_steps"),  # deprecated names
        (body(planner={"max_iterations": 101}), "planner.out_of_bounds", "planner.max_iterations"),
        (body(planner={"icem": {"samples": 1_000_000}}), "planner.out_of_bounds", "planner.icem.samples"),
        (body(planner={"cem": {"sigma": 11.0}}), "planner.out_of_bounds", "planner.cem.sigma"),
        (body(planner={"cem": {"samples": 8, "elites": 9}}), "planner.invalid", "planner.cem.elites"),
        (body(planner={"icem": {"keep_elites": 2.0}}), "planner.invalid", "planner.icem.keep_elites"),
        (body(planner={"icem": {"beta": "2"}}), "request.invalid", "planner.icem.beta"),
        (body(planner={"icem": {"nope": 1}}), "request.unknown_field", "planner.icem.nope"),
        (body(planner={"subgoal_hops": 0}), "planner.invalid", "planner.subgoal_hops"),
        (body(planner={"var_scale": 11.0}), "planner.out_of_bounds", "planner.var_scale"),
        (body(planner={"num_samples": 8, "topk": 9}), "planner.invalid", "planner.topk"),
        ([1, 2, 3], "request.invalid", None),
    ],
)
def test_body_rules(server_url, payload, code, field):
    response = post(server_url, payload)
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert (error["code"], error["field"]) == (code, field), error["message"]


def test_out_of_bounds_message_names_the_limit(server_url):
    error = error_of(post(server_url, body(planner={"num_samples": 5000})))
    assert "4096" in error["message"] and "5000" in error["message"]


def test_executed_steps_out_of_range(mp_client):
    sid = mp_client.plan(GOOD, frame(1), PROPRIO, GOAL_PROPRIO, seed=0)["session_id"]
    with pytest.raises(PlanningError) as info:
        mp_client.replan(sid, GOOD, PROPRIO, executed_steps=99)
    assert (info.value.status, info.value.code) == (422, "replan.executed_steps_out_of_range")
    with pytest.raises(PlanningError) as info:
        mp_client.replan(sid, GOOD, PROPRIO, executed_steps=-1)
    assert (info.value.code, info.value.field) == ("request.invalid", "executed_steps")


def test_unknown_session_is_404(mp_client):
    with pytest.raises(PlanningError) as info:
        mp_client.replan("no-such-session", GOOD, PROPRIO)
    assert (info.value.status, info.value.code, info.value.field) == (404, "session.not_found", "session_id")


def test_unknown_route_and_method_use_the_error_body(server_url):
    r = httpx.get(server_url + "/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "http.not_found"
    r = httpx.get(server_url + "/plan")
    assert r.status_code == 405 and r.json()["error"]["code"] == "http.method_not_allowed"
    r = httpx.delete(server_url + "/sessions/bad%20id")
    assert r.status_code == 422 and r.json()["error"]["field"] == "session_id"


def _valid_msgpack() -> bytes:
    return msgpack.packb(body(planner={"num_samples": 8, "topk": 2, "opt_steps": 1}), use_bin_type=True)


MALFORMED = [
    ("application/json", b"{not json"),
    ("application/json", b'{"obs": '),
    ("application/json", b"\xff\xfe\x00garbage"),
    ("application/json", b"[" * 100_000 + b"]" * 100_000),
    ("application/json", b""),
    ("application/json", b"null"),
    ("application/json", b'"a string"'),
    ("application/json", json.dumps(body(obs=None, goal=None)).encode()),
    ("application/msgpack", b"\xc1"),  # never-used msgpack byte
    ("application/msgpack", _valid_msgpack()[:40]),  # truncated
    ("application/msgpack", _valid_msgpack() + b"\x00"),  # trailing data
    ("application/msgpack", msgpack.packb({1: 2})),  # int keys
    ("application/msgpack", msgpack.packb({"obs": msgpack.ExtType(1, b"pickle?")})),
    ("application/msgpack", b"\x91" * 100_000 + b"\xc0"),  # deep nesting
    ("application/msgpack", b"\xdd\xff\xff\xff\xff"),  # array claiming 4G items
    ("application/msgpack", b"\xa3\xff\xfe\xfd"),  # invalid UTF-8 string
    ("text/plain", b"hello"),
    ("application/x-www-form-urlencoded", b"a=b"),
]


@pytest.mark.parametrize("content_type, payload", MALFORMED)
def test_malformed_bodies_are_4xx(server_url, content_type, payload):
    response = post(server_url, payload, content_type=content_type)
    assert 400 <= response.status_code < 500, response.text
    assert error_of(response)["code"].startswith(("request.", "image."))


def test_fuzzed_bodies_never_give_5xx(server_url):
    rng = random.Random(1234)
    valid = _valid_msgpack()
    statuses = []
    for i in range(60):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        kind = "application/msgpack"
        if i % 3 == 0:
            data = bytearray(rng.randbytes(rng.randint(0, 300)))
            kind = rng.choice(["application/msgpack", "application/json"])
        r = post(server_url, bytes(data), path=rng.choice(["/plan", "/replan"]), content_type=kind)
        statuses.append(r.status_code)
    assert all(s < 500 for s in statuses), statuses


def test_server_stays_healthy_and_counts_the_errors(server_url):
    with PlanningClient(server_url) as c:
        before = c.stats()["errors_by_code"]
        for _ in range(3):
            with pytest.raises(PlanningError):
                c.plan(IMAGE_CASES["image.non_finite"], GOOD, PROPRIO, GOAL_PROPRIO)
        post(server_url, b"{", content_type="application/json")
        health = c.health()
        stats = c.stats()
    assert health["status"] == "ok" and health["eval_mode"] is True
    after = stats["errors_by_code"]
    assert after["image.non_finite"] - before.get("image.non_finite", 0) == 3
    assert after["request.malformed"] - before.get("request.malformed", 0) == 1
    assert stats["errors"]["POST /plan"]["image.non_finite"] >= 3
    # The shared server may already count the 500 that test_hygiene provokes on purpose.
    assert after.get("internal.error", 0) == before.get("internal.error", 0)
