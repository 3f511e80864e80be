"""DINO-WM checkpoints written by any CPython: an enum member the importer
allows (accelerate's `DistributedType`, inside every accelerate-wrapped
optimiser) is pickled by value, `DistributedType("NO")`, by CPython <= 3.10
and >= 3.11.5, and by name, `getattr(DistributedType, "NO")`, by CPython
3.11.0 to 3.11.4 (Debian bookworm's python3 is 3.11.2). Both must load; no
other use of `getattr` may.

The pickles are written here byte for byte, as `torch.save` (pickle protocol
2) writes them, so the test does not depend on the Python that runs it; the
first test checks those bytes against the running Python's own pickler.
"""

from __future__ import annotations

import pickle
import sys
import zipfile
from pathlib import Path

import pytest

from models.dino_wm.checkpoint import CheckpointError, load_checkpoint
from tests.models.dino_wm_reference import DistributedType, register_published

_ENUM = b"caccelerate.utils.dataclasses\nDistributedType\n"


def _dict_pickle(value: bytes) -> bytes:
    """Protocol 2 pickle of {"epoch": 1, "distributed_type": <value>}; `value` starts at memo 3."""
    return (b"\x80\x02}q\x00(X\x05\x00\x00\x00epochq\x01K\x01"
            b"X\x10\x00\x00\x00distributed_typeq\x02" + value + b"u.")


# DistributedType.NO as CPython 3.11.0-3.11.4 pickle it: GLOBAL getattr (protocol 2 writes
# builtins as __builtin__), GLOBAL the class, 'NO', TUPLE2, REDUCE.
BY_NAME = b"c__builtin__\ngetattr\nq\x03" + _ENUM + b"q\x04X\x02\x00\x00\x00NOq\x05\x86q\x06Rq\x07"
# ... and as every other CPython 3 pickles it: GLOBAL the class, 'NO', TUPLE1, REDUCE.
BY_VALUE = _ENUM + b"q\x03X\x02\x00\x00\x00NOq\x04\x85q\x05Rq\x06"


def _checkpoint(path: Path, data_pkl: bytes) -> Path:
    """A torch zip checkpoint holding `data_pkl` and no storages (the layout torch.save writes)."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
    return path


def _getattr_pickle(owner: bytes, name: bytes) -> bytes:
    """getattr(<owner GLOBAL>, <name>) in the by-name enum layout."""
    return (b"c__builtin__\ngetattr\nq\x03c" + owner + b"q\x04X" + len(name).to_bytes(4, "little") + name
            + b"q\x05\x86q\x06Rq\x07")


def test_the_running_python_pickles_enum_members_as_one_of_the_two_forms():
    by_name = (3, 11, 0) <= sys.version_info[:3] < (3, 11, 5)
    with pytest.MonkeyPatch.context() as mp:
        register_published(mp)
        written = pickle.dumps({"epoch": 1, "distributed_type": DistributedType.NO}, protocol=2)
    assert written == _dict_pickle(BY_NAME if by_name else BY_VALUE), (sys.version, written)


@pytest.mark.parametrize("form", ["by_name", "by_value"])
def test_an_allowed_enum_member_loads_in_either_form(tmp_path, form):
    ckpt = load_checkpoint(_checkpoint(tmp_path / "c.pth", _dict_pickle(BY_NAME if form == "by_name" else BY_VALUE)))
    member = ckpt["distributed_type"]
    assert ckpt["epoch"] == 1
    assert member.class_path == "accelerate.utils.dataclasses.DistributedType"
    assert (member.member_name, member.args) == (("NO", ()) if form == "by_name" else (None, ("NO",)))


@pytest.mark.parametrize("owner, name", [
    (b"torch.nn.modules.linear\nLinear\n", b"forward"),         # an allowed class, not an enum
    (b"builtins\ndict\n", b"fromkeys"),                         # allowed, and a real callable
    (b"accelerate.utils.dataclasses\nDistributedType\n", b"__class__"),  # an enum's private attribute
    (b"accelerate.utils.dataclasses\nDistributedType\n", b"NO.x"),       # not a member name
], ids=["nn_class", "builtins_dict", "dunder", "dotted"])
def test_getattr_is_refused_for_anything_but_an_allowed_enum_member(tmp_path, owner, name):
    path = _checkpoint(tmp_path / "c.pth", _dict_pickle(_getattr_pickle(owner, name)))
    with pytest.raises(CheckpointError, match=r"getattr\(.*refused"):
        load_checkpoint(path)


def test_getattr_of_a_class_outside_the_allow_list_is_refused_before_loading(tmp_path):
    path = _checkpoint(tmp_path / "c.pth", _dict_pickle(_getattr_pickle(b"os\nsystem\n", b"__call__")))
    with pytest.raises(CheckpointError, match=r"refers to .*\bsystem\b"):
        load_checkpoint(path)
