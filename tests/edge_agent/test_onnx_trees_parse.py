"""The numpy scorer's reader of the model file: whole-array decoding, and one clear error per defect."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edge_agent.onnx_trees import TreeEnsembleModel, UnsupportedModel, _packed_varints, _varint
from edge_agent.scorer import ModelError, Scorer


def _encode(values) -> bytes:
    out = bytearray()
    for v in values:
        v &= (1 << 64) - 1  # negatives as protobuf writes int64: ten bytes
        while True:
            byte = v & 0x7F
            v >>= 7
            out.append(byte | (0x80 if v else 0))
            if not v:
                break
    return bytes(out)


def test_packed_varints_decode_as_the_one_by_one_reader_does():
    rng = np.random.default_rng(4)
    values = np.concatenate([rng.integers(0, 128, 200), rng.integers(0, 1 << 40, 200),
                             rng.integers(-(1 << 62), 1 << 62, 200), [0, 1, 127, 128, -1, (1 << 63) - 1, -(1 << 63)]])
    buf = _encode(values.tolist())
    decoded, pos = [], 0
    while pos < len(buf):
        v, pos = _varint(buf, pos)
        decoded.append(v - (1 << 64) if v >= 1 << 63 else v)
    assert decoded == values.tolist()
    assert _packed_varints(buf).tolist() == values.tolist()
    assert _packed_varints(b"").tolist() == []
    with pytest.raises(UnsupportedModel, match="truncated"):
        _packed_varints(buf[:-1] + b"\x80")
    with pytest.raises(UnsupportedModel, match="malformed"):
        _packed_varints(b"\xff" * 11 + b"\x01")


def _edited(model_path, tmp_path, name: str, edit):
    model = onnx.load(str(model_path))
    node = next(n for n in model.graph.node if n.op_type == "TreeEnsembleRegressor")
    attribute = next(a for a in node.attribute if a.name == name)
    edit(attribute)
    out = tmp_path / f"{name}.onnx"
    onnx.save(model, str(out))
    return out


def test_the_parsed_model_scores_its_own_self_test(model_path):
    scorer = Scorer.load(model_path, kind="numpy")
    X = np.asarray(scorer.metadata["selftest"]["X"], dtype=np.float32)
    scores, _ = scorer.score(X)
    assert np.max(np.abs(scores - np.asarray(scorer.metadata["selftest"]["scores"]))) <= 1e-9


@pytest.mark.parametrize("name, edit, message", [
    ("nodes_modes", lambda a: a.strings.__setitem__(0, b"BRANCH_SOMETIMES"), "node mode 'BRANCH_SOMETIMES'"),
    ("nodes_truenodeids", lambda a: a.ints.__setitem__(0, 999_999), "points at a node that does not exist"),
    ("target_nodeids", lambda a: a.ints.__setitem__(0, 0), "which is not a leaf"),
    ("nodes_nodeids", lambda a: a.ints.__setitem__(3, -5), "ids out of range"),
])
def test_a_defective_tree_table_is_refused_in_one_line(model_path, tmp_path, name, edit, message):
    broken = _edited(model_path, tmp_path, name, edit)
    with pytest.raises(ModelError, match=message) as err:
        Scorer.load(broken, kind="numpy")
    assert "\n" not in str(err.value)
    with pytest.raises(UnsupportedModel):
        TreeEnsembleModel.parse(broken.read_bytes())
