"""Score a gridsight model file with numpy alone: for gateways where onnxruntime has no wheel
(32-bit Raspberry Pi OS, armv7l) or where its ~20 MB of resident memory matter.

The signed ``model.onnx`` stays the one authoritative file: this module reads its protobuf
directly (a ~100-line wire-format reader, no ``onnx`` package) and evaluates the one graph
model_export writes::

    features(float32) -> Cast(double) -> TreeEnsembleRegressor(SUM) -> Cast(double)
                      -> Mul(scale) -> Exp -> Neg -> Sub(offset) -> Reshape -> score

Anything else is refused with :class:`UnsupportedModel` naming what differs, so a model this
evaluator cannot reproduce is never scored approximately. Arithmetic follows onnxruntime's
single-threaded CPU kernel: thresholds compared in double, each row's leaf weights summed in
double in tree order, the sum rounded to float32 (the operator's output type), then the
double-precision tail. The scorer's self-test (scores recorded at export) runs on this
evaluator too, so a file that loads here scores as it did at export.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Iterator, Union

import numpy as np

from edge_agent.medians import sorted_unique
from gridsight.errors import GridsightError

__all__ = ["TreeEnsembleModel", "UnsupportedModel"]


class UnsupportedModel(GridsightError, ValueError):
    """The file is not protobuf ONNX, or its graph is not the one this evaluator reproduces."""


# ---------------------------------------------------------------------------- protobuf wire format
#
# Values are views of the file's bytes (no copies), and the tree ensemble's long repeated fields
# (tens of thousands of node ids, thresholds and modes) are decoded into numpy arrays in one go:
# parsing must not leave the agent holding a heap that a Python object per node had grown.

Buffer = Union[bytes, memoryview]


def _varint(buf: Buffer, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise UnsupportedModel("truncated protobuf varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise UnsupportedModel("malformed protobuf varint")


def _iter_fields(buf: Buffer) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of one message: ints for varints, views for the rest."""
    view = memoryview(buf)
    pos, end = 0, len(view)
    while pos < end:
        key, pos = _varint(view, pos)
        number, wire = key >> 3, key & 7
        value: int | memoryview
        if wire == 0:
            value, pos = _varint(view, pos)
        elif wire == 1:
            value, pos = view[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(view, pos)
            value, pos = view[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = view[pos : pos + 4], pos + 4
        else:
            raise UnsupportedModel(f"unsupported protobuf wire type {wire}")
        if pos > end:
            raise UnsupportedModel("truncated protobuf message")
        yield number, wire, value


def _fields(buf: Buffer) -> list[tuple[int, int, Any]]:
    """All fields of a (small) message, in order."""
    return list(_iter_fields(buf))


def _packed_varints(buf: Buffer) -> np.ndarray:
    """A packed repeated int64 field as int64 (two's complement, as protobuf encodes negatives)."""
    b = np.frombuffer(buf, dtype=np.uint8)
    if b.size == 0:
        return np.empty(0, dtype=np.int64)
    if b[-1] & 0x80:
        raise UnsupportedModel("truncated protobuf varint")
    last = np.flatnonzero(b < 0x80)
    first = np.empty_like(last)
    first[0] = 0
    first[1:] = last[:-1] + 1
    lengths = last - first + 1
    if int(lengths.max()) > 10:
        raise UnsupportedModel("malformed protobuf varint")
    shift = (np.arange(b.size, dtype=np.uint64) - np.repeat(first, lengths).astype(np.uint64)) * np.uint64(7)
    parts = (b & 0x7F).astype(np.uint64) << shift  # disjoint bits: their sum is their OR
    return np.add.reduceat(parts, first).view(np.int64)


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _ints(fields, number: int) -> np.ndarray:
    """A repeated int64 field, packed or not."""
    chunks: list[np.ndarray] = []
    loose: list[int] = []
    for n, wire, value in fields:
        if n != number:
            continue
        if wire == 0:
            loose.append(_signed(value))
        else:
            if loose:
                chunks.append(np.asarray(loose, dtype=np.int64))
                loose = []
            chunks.append(_packed_varints(value))
    if loose:
        chunks.append(np.asarray(loose, dtype=np.int64))
    return np.concatenate(chunks) if chunks else np.empty(0, dtype=np.int64)


def _strs(fields, number: int) -> list[str]:
    return [bytes(v).decode("utf-8") for n, w, v in fields if n == number and w == 2]


def _one(fields, number: int, default=None):
    for n, _, value in fields:
        if n == number:
            return value
    return default


_DOUBLE, _FLOAT, _INT64, _INT32 = 11, 1, 7, 6


def _tensor(buf: Buffer) -> np.ndarray:
    """A TensorProto as a numpy array (double, float, int64, int32; raw or typed data)."""
    f = _fields(buf)
    dims = _ints(f, 1).tolist()
    dtype = _one(f, 2, 0)
    raw = _one(f, 9)
    kinds = {_DOUBLE: ("<f8", 10, 1), _FLOAT: ("<f4", 4, 5), _INT64: ("<i8", 7, 0), _INT32: ("<i4", 5, 0)}
    if dtype not in kinds:
        raise UnsupportedModel(f"tensor data type {dtype} is not supported")
    np_type, field, wire = kinds[dtype]
    if raw is not None:
        arr = np.frombuffer(bytes(raw), dtype=np_type)
    elif wire == 0:
        arr = _ints(f, field).astype(np_type)
    else:
        chunks = [bytes(v) for n, w, v in f if n == field]
        arr = np.frombuffer(b"".join(chunks), dtype=np_type)
    count = int(np.prod(dims)) if dims else 1
    if arr.size != count:
        raise UnsupportedModel(f"tensor holds {arr.size} values for shape {dims}")
    return arr.reshape(dims) if dims else arr.reshape(())


# AttributeProto fields: name 1, f 2, i 3, s 4, t 5, floats 7, ints 8, strings 9, type 20


def _attributes(node_fields) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n, _, value in node_fields:
        if n != 5:
            continue
        # one pass; repeated strings (a mode per tree node) become shared str objects as they come
        single: list[tuple[int, int, Any]] = []
        numbers: list[tuple[int, int, Any]] = []
        strings: list[str] = []
        known: dict[bytes, str] = {}
        for field in _iter_fields(value):
            if field[0] == 9 and field[1] == 2:
                raw = bytes(field[2])
                text = known.get(raw)
                if text is None:
                    text = known[raw] = raw.decode("utf-8")
                strings.append(text)
            elif field[0] in (7, 8):
                numbers.append(field)
            else:
                single.append(field)
        name = bytes(_one(single, 1, b"")).decode()
        kind = _one(single, 20, 0)
        if kind == 1:
            out[name] = struct.unpack("<f", _one(single, 2))[0]
        elif kind == 2:
            out[name] = _signed(_one(single, 3, 0))
        elif kind == 3:
            out[name] = bytes(_one(single, 4, b"")).decode()
        elif kind == 4:
            out[name] = _tensor(_one(single, 5))
        elif kind == 6:
            chunks = [bytes(v) for m, w, v in numbers if m == 7 and w == 2]
            chunks += [bytes(v) for m, w, v in numbers if m == 7 and w == 5]
            out[name] = np.frombuffer(b"".join(chunks), dtype="<f4")
        elif kind == 7:
            out[name] = _ints(numbers, 8)
        elif kind == 8:
            out[name] = strings
        else:
            raise UnsupportedModel(f"attribute {name!r} of type {kind} is not supported")
    return out


# ---------------------------------------------------------------------------- the model

_PATTERN = ("Cast", "TreeEnsembleRegressor", "Cast", "Mul", "Exp", "Neg", "Sub", "Reshape")
_COMPARE = {
    "BRANCH_LEQ": np.less_equal,
    "BRANCH_LT": np.less,
    "BRANCH_GTE": np.greater_equal,
    "BRANCH_GT": np.greater,
    "BRANCH_EQ": np.equal,
    "BRANCH_NEQ": np.not_equal,
}


class _NodeIndex:
    """Where each (tree id, node id) is in the node table, for many at once; of duplicates the last."""

    def __init__(self, tree_ids: np.ndarray, node_ids: np.ndarray) -> None:
        if tree_ids.size and (
            min(int(tree_ids.min()), int(node_ids.min())) < 0
            or max(int(tree_ids.max()), int(node_ids.max())) >= 1 << 31
        ):
            raise UnsupportedModel("tree or node ids out of range")
        keys = (tree_ids << 32) | node_ids
        self._order = np.argsort(keys, kind="stable")
        self._keys = keys[self._order]

    def __call__(self, trees: np.ndarray, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions, found) of these (tree, node) pairs; positions are 0 where not found."""
        inside = (trees >= 0) & (nodes >= 0) & (trees < 1 << 31) & (nodes < 1 << 31)
        keys = (np.where(inside, trees, 0) << 32) | np.where(inside, nodes, 0)
        at = np.searchsorted(self._keys, keys, side="right") - 1
        found = inside & (at >= 0) & (self._keys[np.maximum(at, 0)] == keys)
        return np.where(found, self._order[np.maximum(at, 0)], 0), found


@dataclass(frozen=True)
class _Trees:
    """All trees as one flat node table; ``roots[t]`` is tree t's first node."""

    feature: np.ndarray  # int64 per node
    threshold: np.ndarray  # float64 per node
    true_next: np.ndarray  # global index per node (leaves point at themselves)
    false_next: np.ndarray
    mode: np.ndarray  # index into _COMPARE order, -1 for a leaf
    leaf_value: np.ndarray  # float64 per node (0 for branches)
    roots: np.ndarray
    depth: int


class TreeEnsembleModel:
    """A parsed gridsight model: ``metadata`` (the file's metadata_props), ``n_features`` and
    ``run(X)`` giving the score column, as onnxruntime's session would."""

    def __init__(
        self, metadata: dict[str, str], n_features: int | None, trees: _Trees, scale: float, offset: float
    ) -> None:
        self.metadata = metadata
        self.n_features = n_features
        self._trees = trees
        self._scale = scale
        self._offset = offset

    # ------------------------------------------------------------------ parsing

    @classmethod
    def parse(cls, data: bytes) -> "TreeEnsembleModel":
        try:
            return cls._parse(data)
        except UnsupportedModel:
            raise
        except (ValueError, KeyError, IndexError, TypeError, struct.error, UnicodeDecodeError) as exc:
            raise UnsupportedModel(f"unreadable model protobuf ({type(exc).__name__})") from None

    @classmethod
    def _parse(cls, data: bytes) -> "TreeEnsembleModel":
        model = _fields(data)
        graph = _one(model, 7)
        if graph is None:
            raise UnsupportedModel("no graph: not an ONNX model file")
        metadata = {}
        for n, _, value in model:
            if n == 14:
                entry = _fields(value)
                metadata[bytes(_one(entry, 1, b"")).decode()] = bytes(_one(entry, 2, b"")).decode()
        g = _fields(graph)
        nodes = [_fields(v) for n, _, v in g if n == 1]
        ops = tuple(bytes(_one(nf, 4, b"")).decode() for nf in nodes)
        if ops != _PATTERN:
            raise UnsupportedModel(
                f"graph {' -> '.join(ops) or 'empty'} is not the gridsight tree ensemble ({' -> '.join(_PATTERN)})"
            )
        inits = {}
        for n, _, value in g:
            if n == 5:
                tf = _fields(value)
                inits[bytes(_one(tf, 8, b"")).decode()] = _tensor(value)
        cast_in, trees_node, cast_out, mul, _, _, sub, _ = nodes
        if _attributes(cast_in).get("to") != _DOUBLE or _attributes(cast_out).get("to") != _DOUBLE:
            raise UnsupportedModel("the casts around the tree ensemble are not to double")
        scale = cls._constant(inits, _strs(mul, 1))
        offset = cls._constant(inits, _strs(sub, 1)[1:])
        trees = cls._read_trees(_attributes(trees_node))
        inputs = [i for i in (_fields(v) for n, _, v in g if n == 11) if bytes(_one(i, 1, b"")).decode() not in inits]
        if len(inputs) != 1:
            raise UnsupportedModel(f"expected one input, found {len(inputs)}")
        return cls(metadata, cls._width(inputs[0]), trees, scale, offset)

    @staticmethod
    def _constant(inits: dict[str, np.ndarray], names: list[str]) -> float:
        found = [inits[n] for n in names if n in inits]
        if len(found) != 1 or found[0].size != 1:
            raise UnsupportedModel(f"expected one scalar constant among {names}")
        return float(found[0].reshape(-1)[0])

    @staticmethod
    def _width(value_info) -> int | None:
        type_proto = _one(value_info, 2)
        tensor = _one(_fields(type_proto), 1) if type_proto is not None else None
        shape = _one(_fields(tensor), 2) if tensor is not None else None
        if shape is None:
            return None
        dims = [_fields(d) for n, _, d in _fields(shape) if n == 1]
        if len(dims) != 2:
            raise UnsupportedModel(f"input has {len(dims)} dimensions, expected 2")
        width = _one(dims[1], 1)
        return int(width) if width is not None else None

    @staticmethod
    def _read_trees(a: dict[str, Any]) -> _Trees:
        if a.get("aggregate_function", "SUM") != "SUM" or a.get("post_transform", "NONE") != "NONE":
            raise UnsupportedModel("only SUM aggregation without post transform is supported")
        if a.get("n_targets", 1) != 1 or np.any(np.asarray(a.get("target_ids", ()), dtype=np.int64) != 0):
            raise UnsupportedModel("only single-target tree ensembles are supported")
        if "base_values" in a or "base_values_as_tensor" in a:
            base = np.asarray(a.get("base_values", a.get("base_values_as_tensor")), dtype=np.float64).reshape(-1)
            if base.size and np.any(base != 0):
                raise UnsupportedModel("base values are not supported")
        tree_ids = np.asarray(a["nodes_treeids"], dtype=np.int64)
        node_ids = np.asarray(a["nodes_nodeids"], dtype=np.int64)
        values = a.get("nodes_values_as_tensor", a.get("nodes_values"))
        thresholds = np.asarray(values, dtype=np.float64).reshape(-1)
        modes = a["nodes_modes"]
        true_ids = np.asarray(a["nodes_truenodeids"], dtype=np.int64)
        false_ids = np.asarray(a["nodes_falsenodeids"], dtype=np.int64)
        n = len(tree_ids)
        if (
            not (
                len(node_ids)
                == len(modes)
                == thresholds.size
                == len(a["nodes_featureids"])
                == len(true_ids)
                == len(false_ids)
                == n
            )
            or n == 0
        ):
            raise UnsupportedModel("tree ensemble node attributes differ in length")
        find = _NodeIndex(tree_ids, node_ids)
        codes = {name: code for code, name in enumerate(_COMPARE)}
        codes["LEAF"] = -1
        mode = np.fromiter((codes.get(m, -2) for m in modes), dtype=np.int64, count=n)
        if (mode == -2).any():
            raise UnsupportedModel(f"node mode {modes[int(np.argmax(mode == -2))]!r} is not supported")
        branch = np.flatnonzero(mode >= 0)
        true_next = np.arange(n, dtype=np.int64)
        false_next = np.arange(n, dtype=np.int64)
        for target, ids in ((true_next, true_ids), (false_next, false_ids)):
            found, ok = find(tree_ids[branch], ids[branch])
            if not ok.all():
                t = int(tree_ids[branch[int(np.argmin(ok))]])
                raise UnsupportedModel(f"tree {t} points at a node that does not exist")
            target[branch] = found
        leaf_value = np.zeros(n, dtype=np.float64)
        weights = np.asarray(a.get("target_weights_as_tensor", a.get("target_weights")), dtype=np.float64).reshape(-1)
        target_trees = np.asarray(a["target_treeids"], dtype=np.int64)
        target_nodes = np.asarray(a["target_nodeids"], dtype=np.int64)
        count = min(len(target_trees), len(target_nodes), len(weights))
        leaf, ok = find(target_trees[:count], target_nodes[:count])
        ok &= mode[leaf] == -1
        if not ok.all():
            bad = int(np.argmin(ok))
            raise UnsupportedModel(
                f"a target weight names tree {int(target_trees[bad])} node "
                f"{int(target_nodes[bad])}, which is not a leaf"
            )
        np.add.at(leaf_value, leaf, weights[:count])  # in file order, a leaf's weights one by one
        # roots: each tree's first listed node, as onnxruntime takes them
        first = np.r_[True, tree_ids[1:] != tree_ids[:-1]]
        roots = np.flatnonzero(first)
        if len(sorted_unique(tree_ids[roots])) != len(roots):
            raise UnsupportedModel("the nodes of a tree are not listed together")
        depth = TreeEnsembleModel._depth(roots, mode, true_next, false_next)
        return _Trees(
            np.asarray(a["nodes_featureids"], dtype=np.int64),
            thresholds,
            true_next,
            false_next,
            mode,
            leaf_value,
            roots,
            depth,
        )

    @staticmethod
    def _depth(roots, mode, true_next, false_next) -> int:
        frontier, depth = np.asarray(roots), 0
        while True:
            inner = frontier[mode[frontier] >= 0]
            if inner.size == 0:
                return depth
            depth += 1
            if depth > 4096:
                raise UnsupportedModel("a tree has a cycle")
            frontier = sorted_unique(np.concatenate([true_next[inner], false_next[inner]]))

    # ------------------------------------------------------------------ scoring

    def run(self, X: np.ndarray) -> np.ndarray:
        """Scores of float32 feature rows ``X`` (n, n_features), as the ONNX graph computes them."""
        t = self._trees
        x = np.asarray(X, dtype=np.float32).astype(np.float64)
        if t.feature.size and int(t.feature.max()) >= x.shape[1]:
            raise ValueError(f"the model reads feature {int(t.feature.max())}, rows have {x.shape[1]}")
        rows = np.arange(x.shape[0])[:, None]
        node = np.broadcast_to(t.roots, (x.shape[0], t.roots.size)).copy()
        for _ in range(t.depth):
            m = t.mode[node]
            branch = m >= 0
            if not branch.any():
                break
            value = x[rows, np.where(branch, t.feature[node], 0)]
            go_true = np.zeros(node.shape, dtype=bool)
            for code, compare in enumerate(_COMPARE.values()):
                sel = m == code
                if sel.any():
                    go_true[sel] = compare(value[sel], t.threshold[node][sel])
            node = np.where(branch, np.where(go_true, t.true_next[node], t.false_next[node]), node)
        leaves = t.leaf_value[node]
        total = np.zeros(x.shape[0], dtype=np.float64)
        for j in range(leaves.shape[1]):  # tree order, as onnxruntime accumulates
            total += leaves[:, j]
        path_sum = total.astype(np.float32).astype(np.float64)
        return -np.exp(path_sum * self._scale) - self._offset
