"""pipeline.graph.onnx_safety: no tensor anywhere in a shipped ONNX model may reference external data.

Each "place" test plants ONE external tensor somewhere a TensorProto can live and expects the walk to
find exactly it, and `parse_self_contained` to refuse it with IntegrityError. If the walk misses a
place, the model either passes onnx's checker or fails it with CorruptArtifact: both fail the test.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import AttributeProto, TensorProto, helper

from pipeline.errors import CorruptArtifact, IntegrityError
from pipeline.graph.onnx_safety import (
    ExternalRef,
    external_references,
    location_points_outside,
    parse_self_contained,
)

ROOT = Path(__file__).resolve().parents[1]
EXT = "w.bin"
WHERE = "art/xor/model.onnx"


# ---------------------------------------------------------------------------------------------
# Builders


def ext_tensor(
    name: str = "w",
    location: str = EXT,
    *,
    dims: tuple[int, ...] = (2, 1),
    flag: bool = True,
    entries: bool = True,
    data_type: int = TensorProto.FLOAT,
) -> TensorProto:
    """A tensor whose data lives in `location` (8 bytes at offset 0)."""
    t = TensorProto(name=name, data_type=data_type)
    t.dims.extend(dims)
    if flag:
        t.data_location = TensorProto.EXTERNAL
    if entries:
        for key, value in (("location", location), ("offset", "0"), ("length", "8")):
            entry = t.external_data.add()
            entry.key = key
            entry.value = value
    return t


def plain_tensor(name: str = "d", dims: tuple[int, ...] = (1,)) -> TensorProto:
    n = 1
    for d in dims:
        n *= d
    return helper.make_tensor(name, TensorProto.FLOAT, list(dims), [0.5] * n)


def sparse(values: TensorProto, indices: TensorProto) -> onnx.SparseTensorProto:
    sp = onnx.SparseTensorProto()
    sp.values.CopyFrom(values)
    sp.indices.CopyFrom(indices)
    sp.dims.extend([4])
    return sp


def plain_indices(name: str = "i") -> TensorProto:
    return helper.make_tensor(name, TensorProto.INT64, [1], [0])


def ext_indices(name: str = "i", location: str = EXT) -> TensorProto:
    return ext_tensor(name, location, dims=(1,), data_type=TensorProto.INT64)


def valid_model(weight: TensorProto | None = None) -> onnx.ModelProto:
    """x[batch,2] -> Gemm(W, B) -> Sigmoid -> y[batch,1], opset 18."""
    w = weight if weight is not None else helper.make_tensor("W", TensorProto.FLOAT, [2, 1], [1.0, -1.0])
    b = helper.make_tensor("B", TensorProto.FLOAT, [1], [0.0])
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "B"], ["h"], name="gemm"), helper.make_node("Sigmoid", ["h"], ["y"])],
        "xor",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        [w, b],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def leaf_graph(
    name: str, initializers: list[TensorProto] | None = None, nodes: list[onnx.NodeProto] | None = None
) -> onnx.GraphProto:
    """A small subgraph (If/Loop body shape does not matter here: the walk refuses before the checker)."""
    out = helper.make_tensor_value_info("o", TensorProto.FLOAT, [1])
    body_nodes = nodes if nodes is not None else [helper.make_node("Identity", ["k"], ["o"])]
    inits = initializers if initializers is not None else [plain_tensor("k")]
    return helper.make_graph(body_nodes, name, [], [out], inits)


def single_line(text: str) -> bool:
    return len(text.splitlines()) == 1 and "\n" not in text and "\r" not in text


# ---------------------------------------------------------------------------------------------
# The places: each plants ONE external tensor into a valid model and returns the expected `where`


def plant_initializer(m: onnx.ModelProto) -> str:
    m.graph.initializer[0].CopyFrom(ext_tensor("W"))
    return "graph.initializer['W']"


def plant_entries_only(m: onnx.ModelProto) -> str:
    """data_location DEFAULT (with real data) but an external_data entry: still external."""
    m.graph.initializer.append(ext_tensor("w", flag=False))
    m.graph.initializer[-1].float_data.extend([0.0, 0.0])
    return "graph.initializer['w']"


def plant_sparse_initializer_values(m: onnx.ModelProto) -> str:
    m.graph.sparse_initializer.append(sparse(ext_tensor("sv", dims=(1,)), plain_indices()))
    return "graph.sparse_initializer['sv'].values"


def plant_sparse_initializer_indices(m: onnx.ModelProto) -> str:
    m.graph.sparse_initializer.append(sparse(plain_tensor("sv"), ext_indices()))
    return "graph.sparse_initializer['sv'].indices"


def plant_constant_value(m: onnx.ModelProto) -> str:
    m.graph.node.append(helper.make_node("Constant", [], ["c_out"], name="c", value=ext_tensor("cw")))
    return "graph.node[2](Constant 'c').attribute['value'].t"


def plant_attribute_tensors(m: onnx.ModelProto) -> str:
    node = helper.make_node("Custom", [], ["k_out"], name="k", domain="custom")
    node.attribute.append(helper.make_attribute("ts", [plain_tensor("a"), ext_tensor("b")]))
    m.graph.node.append(node)
    return "graph.node[2](Custom 'k').attribute['ts'].tensors[1]"


def plant_sparse_tensor_attribute(m: onnx.ModelProto) -> str:
    value = sparse(ext_tensor("sv", dims=(1,)), plain_indices())
    m.graph.node.append(helper.make_node("Constant", [], ["s_out"], name="cs", sparse_value=value))
    return "graph.node[2](Constant 'cs').attribute['sparse_value'].sparse_tensor.values"


def plant_sparse_tensors_attribute(m: onnx.ModelProto) -> str:
    node = helper.make_node("Custom", [], ["k_out"], name="k", domain="custom")
    node.attribute.append(helper.make_attribute("sps", [sparse(plain_tensor("sv"), ext_indices())]))
    m.graph.node.append(node)
    return "graph.node[2](Custom 'k').attribute['sps'].sparse_tensors[0].indices"


def plant_if_initializer(m: onnx.ModelProto) -> str:
    node = helper.make_node(
        "If",
        ["cond"],
        ["r"],
        name="if1",
        then_branch=leaf_graph("then", [ext_tensor("w", dims=(1,))], [helper.make_node("Identity", ["w"], ["o"])]),
        else_branch=leaf_graph("else"),
    )
    m.graph.node.append(node)
    return "graph.node[2](If 'if1').attribute['then_branch'].graph.initializer['w']"


def plant_loop_in_if_initializer(m: onnx.ModelProto) -> str:
    body = leaf_graph("body", [ext_tensor("w", dims=(1,))], [helper.make_node("Identity", ["w"], ["o"])])
    loop = helper.make_node("Loop", ["", ""], ["o"], name="loop1", body=body)
    node = helper.make_node(
        "If", ["cond"], ["r"], name="if1", then_branch=leaf_graph("then"), else_branch=leaf_graph("else", None, [loop])
    )
    m.graph.node.append(node)
    return (
        "graph.node[2](If 'if1').attribute['else_branch'].graph"
        ".node[0](Loop 'loop1').attribute['body'].graph.initializer['w']"
    )


def plant_subgraph_constant(m: onnx.ModelProto) -> str:
    inner = helper.make_node("Constant", [], ["o"], name="c", value=ext_tensor("cw"))
    node = helper.make_node("Loop", ["", ""], ["r"], name="loop1", body=leaf_graph("body", [], [inner]))
    m.graph.node.append(node)
    return "graph.node[2](Loop 'loop1').attribute['body'].graph.node[0](Constant 'c').attribute['value'].t"


def plant_attribute_graphs(m: onnx.ModelProto) -> str:
    inner = helper.make_node("Constant", [], ["o"], name="c", value=ext_tensor("cw"))
    node = helper.make_node("Custom", [], ["k_out"], name="k", domain="custom")
    node.attribute.append(helper.make_attribute("gs", [leaf_graph("g0"), leaf_graph("g1", [], [inner])]))
    m.graph.node.append(node)
    return "graph.node[2](Custom 'k').attribute['gs'].graphs[1].node[0](Constant 'c').attribute['value'].t"


def plant_lying_attribute_type(m: onnx.ModelProto) -> str:
    """An INT attribute that also carries a tensor: the declared type must not hide it."""
    node = helper.make_node("Custom", [], ["k_out"], name="k", domain="custom", n=3)
    node.attribute[0].t.CopyFrom(ext_tensor("hidden"))
    assert node.attribute[0].type == AttributeProto.INT
    m.graph.node.append(node)
    return "graph.node[2](Custom 'k').attribute['n'].t"


def _local_function(nodes: list[onnx.NodeProto]) -> onnx.FunctionProto:
    return helper.make_function("local", "f", ["a"], ["z"], nodes, [helper.make_opsetid("", 18)])


def plant_function_node_attribute(m: onnx.ModelProto) -> str:
    fn = _local_function([helper.make_node("Constant", [], ["z"], name="fc", value=ext_tensor("fw"))])
    m.functions.append(fn)
    return "functions[0]('f' domain 'local').node[0](Constant 'fc').attribute['value'].t"


def plant_function_subgraph(m: onnx.ModelProto) -> str:
    body = leaf_graph("body", [ext_tensor("w", dims=(1,))], [helper.make_node("Identity", ["w"], ["o"])])
    fn = _local_function(
        [helper.make_node("If", ["a"], ["z"], name="fif", then_branch=body, else_branch=leaf_graph("e"))]
    )
    m.functions.append(fn)
    return "functions[0]('f' domain 'local').node[0](If 'fif').attribute['then_branch'].graph.initializer['w']"


def plant_function_attribute_default(m: onnx.ModelProto) -> str:
    fn = _local_function([helper.make_node("Identity", ["a"], ["z"])])
    fn.attribute_proto.append(helper.make_attribute("alpha", ext_tensor("default")))
    m.functions.append(fn)
    return "functions[0]('f' domain 'local').attribute_proto['alpha'].t"


def plant_training_initialization(m: onnx.ModelProto) -> str:
    info = m.training_info.add()
    info.initialization.CopyFrom(leaf_graph("init", [ext_tensor("w", dims=(1,))], []))
    return "training_info[0].initialization.initializer['w']"


def plant_training_algorithm(m: onnx.ModelProto) -> str:
    info = m.training_info.add()
    inner = helper.make_node("Constant", [], ["o"], name="c", value=ext_tensor("cw"))
    info.algorithm.CopyFrom(leaf_graph("algo", [], [inner]))
    return "training_info[0].algorithm.node[0](Constant 'c').attribute['value'].t"


PLACES: dict[str, Callable[[onnx.ModelProto], str]] = {
    f.__name__.removeprefix("plant_"): f
    for f in (
        plant_initializer,
        plant_entries_only,
        plant_sparse_initializer_values,
        plant_sparse_initializer_indices,
        plant_constant_value,
        plant_attribute_tensors,
        plant_sparse_tensor_attribute,
        plant_sparse_tensors_attribute,
        plant_if_initializer,
        plant_loop_in_if_initializer,
        plant_subgraph_constant,
        plant_attribute_graphs,
        plant_lying_attribute_type,
        plant_function_node_attribute,
        plant_function_subgraph,
        plant_function_attribute_default,
        plant_training_initialization,
        plant_training_algorithm,
    )
}


# ---------------------------------------------------------------------------------------------
# A valid model


def test_valid_model_parses_and_passes() -> None:
    model = valid_model()
    data = model.SerializeToString()
    assert external_references(model) == []
    parsed = parse_self_contained(data, WHERE)
    assert isinstance(parsed, onnx.ModelProto)
    assert parsed.SerializeToString() == data
    # bytes-like inputs are accepted too
    assert parse_self_contained(bytearray(data), WHERE) == parsed
    assert parse_self_contained(memoryview(data), WHERE) == parsed


def test_valid_model_with_every_kind_of_plain_tensor_passes_the_walk() -> None:
    """Decoys everywhere (sparse, attributes, subgraphs, functions, training info): nothing external."""
    m = valid_model()
    m.graph.sparse_initializer.append(sparse(plain_tensor("sv"), plain_indices()))
    m.graph.node.append(helper.make_node("Constant", [], ["c"], value=plain_tensor("cv")))
    m.graph.node.append(helper.make_node("If", ["q"], ["r"], then_branch=leaf_graph("t"), else_branch=leaf_graph("e")))
    m.functions.append(_local_function([helper.make_node("Constant", [], ["z"], value=plain_tensor())]))
    m.training_info.add().initialization.CopyFrom(leaf_graph("init"))
    assert external_references(m) == []


# ---------------------------------------------------------------------------------------------
# One external tensor in each place


@pytest.mark.parametrize("place", sorted(PLACES))
def test_each_place_is_found_and_refused(place: str) -> None:
    model = valid_model()
    expected = PLACES[place](model)
    assert external_references(model) == [ExternalRef(where=expected, location=EXT)]
    with pytest.raises(IntegrityError) as info:
        parse_self_contained(model.SerializeToString(), WHERE)
    message = str(info.value)
    assert single_line(message)
    assert message.startswith(f"{WHERE}: tensor at {expected} ")
    assert "external file ('w.bin')" in message
    assert "self-contained" in message
    assert "outside" not in message
    assert info.value.exit_code == 6


def test_flag_without_entries_is_external_with_empty_location() -> None:
    model = valid_model(ext_tensor("W", entries=False))
    assert external_references(model) == [ExternalRef("graph.initializer['W']", "")]
    with pytest.raises(IntegrityError, match=r"external file \(''\)"):
        parse_self_contained(model.SerializeToString(), WHERE)


def test_unnamed_things_are_named_by_index() -> None:
    m = valid_model()
    node = helper.make_node("Custom", [], ["o"], domain="custom")
    node.attribute.append(helper.make_attribute("t", ext_tensor("")))
    node.attribute[0].name = ""
    m.graph.node.append(node)
    m.graph.initializer.append(ext_tensor(""))
    assert [r.where for r in external_references(m)] == ["graph.initializer[2]", "graph.node[2](Custom).attribute[0].t"]


def test_every_external_tensor_is_reported_in_document_order() -> None:
    m = valid_model(ext_tensor("W", "a.bin"))
    m.graph.node.append(helper.make_node("Constant", [], ["c"], name="c", value=ext_tensor("cw", "b.bin")))
    m.training_info.add().initialization.CopyFrom(leaf_graph("init", [ext_tensor("t", "c.bin", dims=(1,))], []))
    refs = external_references(m)
    assert [r.location for r in refs] == ["a.bin", "b.bin", "c.bin"]
    with pytest.raises(IntegrityError) as info:
        parse_self_contained(m.SerializeToString(), WHERE)
    assert "graph.initializer['W']" in str(info.value)
    assert "and 2 more external tensors" in str(info.value)


# ---------------------------------------------------------------------------------------------
# Locations pointing outside, and the current directory


@pytest.mark.parametrize(
    ("location", "outside"),
    [
        ("../../etc/passwd", True),
        ("/etc/passwd", True),
        ("sub/../../x.bin", True),
        ("..\\..\\windows\\system.ini", True),
        ("C:\\weights.bin", True),
        ("C:weights.bin", True),
        ("\\\\server\\share\\w.bin", True),
        ("~/w.bin", True),
        ("w.bin", False),
        ("sub/w.bin", False),
        ("", False),
    ],
)
def test_location_points_outside(location: str, outside: bool) -> None:
    assert location_points_outside(location) is outside
    assert ExternalRef("graph.initializer['W']", location).points_outside is outside


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd"])
def test_location_outside_its_folder_is_refused_saying_so(location: str) -> None:
    model = valid_model(ext_tensor("W", location))
    with pytest.raises(IntegrityError) as info:
        parse_self_contained(model.SerializeToString(), WHERE)
    message = str(info.value)
    assert single_line(message)
    assert "outside its folder" in message
    assert repr(location) in message


def test_an_outside_location_is_reported_even_when_not_first() -> None:
    m = valid_model(ext_tensor("W", "w.bin"))
    m.graph.node.append(helper.make_node("Constant", [], ["c"], name="c", value=ext_tensor("cw", "../../etc/passwd")))
    with pytest.raises(IntegrityError, match=r"node\[2\]\(Constant 'c'\).*outside its folder.*and 1 more"):
        parse_self_contained(m.SerializeToString(), WHERE)


def test_a_second_suspicious_location_entry_is_not_hidden() -> None:
    t = ext_tensor("W", "../../etc/passwd")
    entry = t.external_data.add()
    entry.key, entry.value = "location", "w.bin"  # onnx would read the last one
    assert external_references(valid_model(t))[0].location == "../../etc/passwd"


def test_refused_even_when_the_file_exists_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / EXT).write_bytes(b"\x00\x00\x80\x3f\x00\x00\x80\xbf")  # [1.0, -1.0] as float32
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    for place in sorted(PLACES):
        model = valid_model()
        PLACES[place](model)
        with pytest.raises(IntegrityError):
            parse_self_contained(model.SerializeToString(), WHERE)
    monkeypatch.chdir(tmp_path / "sub")  # now "../w.bin" exists too
    with pytest.raises(IntegrityError, match="outside its folder"):
        parse_self_contained(valid_model(ext_tensor("W", f"../{EXT}")).SerializeToString(), WHERE)


# ---------------------------------------------------------------------------------------------
# Corrupt input: always CorruptArtifact, always one line


def test_empty_input_is_corrupt() -> None:
    with pytest.raises(CorruptArtifact, match=r"^art/xor/model.onnx is not a valid ONNX file \(it is empty\)$"):
        parse_self_contained(b"", WHERE)


def test_garbage_is_corrupt() -> None:
    with pytest.raises(CorruptArtifact, match="is not a valid ONNX file") as info:
        parse_self_contained(b"\xff" * 64, WHERE)
    assert single_line(str(info.value))
    assert info.value.exit_code == 5


def test_checker_failure_is_one_line_corrupt() -> None:
    m = valid_model()
    m.graph.node[0].input[1] = "nowhere"  # a multi-line checker message ("==> Context: ...")
    with pytest.raises(CorruptArtifact, match="fails the ONNX checker: ") as info:
        parse_self_contained(m.SerializeToString(), WHERE)
    assert single_line(str(info.value))
    assert len(str(info.value)) < 400


def test_shape_inference_failure_is_corrupt() -> None:
    m = valid_model(helper.make_tensor("W", TensorProto.FLOAT, [3, 1], [1.0, 2.0, 3.0]))  # 2 != 3
    with pytest.raises(CorruptArtifact, match="fails the ONNX checker"):
        parse_self_contained(m.SerializeToString(), WHERE)


def test_not_bytes_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        parse_self_contained("model.onnx", WHERE)  # type: ignore[arg-type]


def test_hostile_names_and_locations_stay_on_one_bounded_line() -> None:
    long = "n" * 10_000
    m = valid_model(ext_tensor("W\nsecond line\u2028third", "a\nb\r\x85" + "x" * 10_000))
    m.graph.initializer[0].name = "W\nsecond line\u2028third" + long
    m.graph.node.append(helper.make_node("Constant", [], ["c"], name=long, value=ext_tensor(long, long)))
    with pytest.raises(IntegrityError) as info:
        parse_self_contained(m.SerializeToString(), WHERE)
    message = str(info.value)
    assert single_line(message)
    assert len(message) < 800


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff" * 64,
        valid_model(ext_tensor("W")).SerializeToString(),
        onnx.ModelProto(ir_version=8).SerializeToString(),
    ],
    ids=["empty", "garbage", "external", "checker"],
)
def test_a_multi_line_where_still_gives_one_line(data: bytes) -> None:
    with pytest.raises((CorruptArtifact, IntegrityError)) as info:
        parse_self_contained(data, "dir\nwith\r\nbreaks\u2028/model.onnx")
    assert single_line(str(info.value))


def test_invalid_utf8_in_names_and_locations() -> None:
    """upb hands proto2 strings that are not UTF-8 back as bytes: the walk must still cope."""
    data = valid_model(ext_tensor("W", "LOCATIONMARK")).SerializeToString()
    data = data.replace(b"LOCATIONMARK", b"\xff\xfe../\x80\nAAAAA").replace(b"gemm", b"\xffem\n")
    assert len(data) == len(valid_model(ext_tensor("W", "LOCATIONMARK")).SerializeToString())
    with pytest.raises(IntegrityError) as info:
        parse_self_contained(data, WHERE)
    assert single_line(str(info.value))
    assert "outside its folder" in str(info.value)
    refs = external_references(onnx.ModelProto.FromString(data))
    assert refs == [ExternalRef("graph.initializer['W']", "\\xff\\xfe../\\x80\nAAAAA")]


# ---------------------------------------------------------------------------------------------
# Depth and size


def deep_model(depth: int) -> onnx.ModelProto:
    """`depth` nested If then_branch subgraphs, built top-down in place (linear time), with one
    external initializer at the bottom."""
    m = onnx.ModelProto(ir_version=8)
    m.opset_import.add(version=18)
    graph = m.graph
    for i in range(depth):
        node = graph.node.add(op_type="If", name=f"if{i}")
        attr = node.attribute.add(name="then_branch", type=AttributeProto.GRAPH)
        graph = attr.g
    graph.initializer.append(ext_tensor("deep"))
    return m


def test_very_deep_nesting_does_not_recurse() -> None:
    depth = 3000  # far beyond Python's default recursion limit (1000) for a recursive walk
    model = deep_model(depth)
    refs = external_references(model)
    assert len(refs) == 1
    assert refs[0].location == EXT
    assert refs[0].where.startswith("graph.node[0](If 'if0').attribute['then_branch'].graph")
    assert refs[0].where.endswith(".graph.initializer['deep']")
    assert "steps)" in refs[0].where  # the middle is elided: a place stays readable
    assert len(refs[0].where) < 4000
    # Serializing works, but protobuf refuses to parse more than 100 nested messages: CorruptArtifact,
    # never RecursionError / DecodeError.
    with pytest.raises(CorruptArtifact, match="is not a valid ONNX file") as info:
        parse_self_contained(model.SerializeToString(), WHERE)
    assert single_line(str(info.value))


def test_deepest_parseable_nesting_is_refused_as_external() -> None:
    model = deep_model(30)  # 3 messages a level: just under protobuf's parse depth limit
    with pytest.raises(IntegrityError, match=r"then_branch.*initializer\['deep'\]"):
        parse_self_contained(model.SerializeToString(), WHERE)


def test_wide_model_is_walked() -> None:
    m = valid_model()
    for i in range(5000):
        m.graph.node.append(helper.make_node("Constant", [], [f"c{i}"], value=plain_tensor()))
    m.graph.node.append(helper.make_node("Constant", [], ["last"], name="last", value=ext_tensor()))
    assert [r.where for r in external_references(m)] == ["graph.node[5002](Constant 'last').attribute['value'].t"]


# ---------------------------------------------------------------------------------------------
# Property: random nesting, random place, random decoys


SUBGRAPHS = [("If", "then_branch"), ("If", "else_branch"), ("Loop", "body"), ("Scan", "body")]
GRAPH_PLACES = ["initializer", "sparse_values", "sparse_indices"]
NODE_PLACES = ["constant", "tensors", "sparse_attr", "sparse_attrs", "lying_type"]
ROOTS = ["graph", "function", "training_initialization", "training_algorithm"]
names = st.text(st.characters(codec="utf-8"), max_size=8)
locations = st.text(st.characters(codec="utf-8"), min_size=0, max_size=16)


class Container:
    """A GraphProto or FunctionProto being filled, with its expected place string."""

    def __init__(self, proto: onnx.GraphProto | onnx.FunctionProto, where: str) -> None:
        self.proto = proto
        self.where = where
        self.is_graph = isinstance(proto, onnx.GraphProto)

    def add_node(self, node: onnx.NodeProto) -> str:
        self.proto.node.append(node)
        label = f"{node.op_type} {node.name!r}" if node.name else node.op_type
        return f"{self.where}.node[{len(self.proto.node) - 1}]({label})"


def add_decoys(c: Container, kinds: list[int]) -> None:
    """Plain tensors in every kind of place, some with external-looking names and attributes."""
    for k in kinds:
        if k == 0 and isinstance(c.proto, onnx.GraphProto):
            c.proto.initializer.append(plain_tensor(EXT))
        elif k == 1 and isinstance(c.proto, onnx.GraphProto):
            c.proto.sparse_initializer.append(sparse(plain_tensor("sv"), plain_indices()))
        elif k == 2:
            c.add_node(helper.make_node("Constant", [], ["d"], value=plain_tensor("location")))
        elif k == 3:
            node = helper.make_node("Custom", [], ["d"], domain="x", location=EXT, external_data=["location"])
            node.attribute.append(helper.make_attribute("ts", [plain_tensor(), plain_tensor()]))
            node.attribute.append(helper.make_attribute("sps", [sparse(plain_tensor(), plain_indices())]))
            c.add_node(node)
        elif k == 4 and isinstance(c.proto, onnx.FunctionProto):
            c.proto.attribute_proto.append(helper.make_attribute(f"decoy{len(c.proto.attribute_proto)}", 1.5))


def plant(c: Container, place: str, j: int, location: str) -> str:
    """Plant ONE external tensor at `place` in `c`; return its expected place string."""
    if place == "initializer":
        assert isinstance(c.proto, onnx.GraphProto)
        c.proto.initializer.append(ext_tensor(f"x{j}", location))
        return f"{c.where}.initializer['x{j}']"
    if place in ("sparse_values", "sparse_indices"):
        assert isinstance(c.proto, onnx.GraphProto)
        if place == "sparse_values":
            c.proto.sparse_initializer.append(sparse(ext_tensor(f"s{j}", location, dims=(1,)), plain_indices()))
            return f"{c.where}.sparse_initializer['s{j}'].values"
        c.proto.sparse_initializer.append(sparse(plain_tensor(f"s{j}"), ext_indices(location=location)))
        return f"{c.where}.sparse_initializer['s{j}'].indices"
    if place == "constant":
        node_where = c.add_node(
            helper.make_node("Constant", [], [f"p{j}"], name=f"c{j}", value=ext_tensor("", location))
        )
        return f"{node_where}.attribute['value'].t"
    if place == "tensors":
        node = helper.make_node("Custom", [], [f"p{j}"], name=f"k{j}", domain="x")
        node.attribute.append(helper.make_attribute("ts", [plain_tensor(), ext_tensor("t", location)]))
        return f"{c.add_node(node)}.attribute['ts'].tensors[1]"
    if place == "sparse_attr":
        value = sparse(ext_tensor("sv", location, dims=(1,)), plain_indices())
        node_where = c.add_node(helper.make_node("Constant", [], [f"p{j}"], name=f"cs{j}", sparse_value=value))
        return f"{node_where}.attribute['sparse_value'].sparse_tensor.values"
    if place == "sparse_attrs":
        node = helper.make_node("Custom", [], [f"p{j}"], name=f"k{j}", domain="x")
        node.attribute.append(helper.make_attribute("sps", [sparse(plain_tensor(), ext_indices(location=location))]))
        return f"{c.add_node(node)}.attribute['sps'].sparse_tensors[0].indices"
    if place == "lying_type":
        node = helper.make_node("Custom", [], [f"p{j}"], name=f"k{j}", domain="x", n=1)
        node.attribute[0].t.CopyFrom(ext_tensor("t", location))
        return f"{c.add_node(node)}.attribute['n'].t"
    if place == "attribute_default":
        assert isinstance(c.proto, onnx.FunctionProto)
        c.proto.attribute_proto.append(helper.make_attribute(f"a{j}", ext_tensor("t", location)))
        return f"{c.where}.attribute_proto['a{j}'].t"
    raise AssertionError(place)


@st.composite
def planted_models(draw: st.DrawFn) -> tuple[onnx.ModelProto, list[tuple[str, str]]]:
    model = valid_model()
    decoy_kinds = st.lists(st.integers(0, 4), max_size=3)
    root = draw(st.sampled_from(ROOTS))
    c: Container
    if root == "graph":
        c = Container(model.graph, "graph")
    elif root == "function":
        model.functions.append(_local_function([]))  # a decoy function first
        fn = _local_function([])
        fn.name = "g"
        model.functions.append(fn)
        c = Container(model.functions[1], "functions[1]('g' domain 'local')")
    else:
        info = model.training_info.add()
        part = root.removeprefix("training_")
        c = Container(getattr(info, part), f"training_info[0].{part}")
    for _ in range(draw(st.integers(0, 6))):
        add_decoys(c, draw(decoy_kinds))
        op_type, attr_name = draw(st.sampled_from(SUBGRAPHS))
        node = helper.make_node(op_type, ["q"], ["r"], name=draw(names))
        attr = node.attribute.add(name=attr_name, type=AttributeProto.GRAPH)
        attr.g.name = "sub"
        node_where = c.add_node(node)
        c = Container(c.proto.node[-1].attribute[0].g, f"{node_where}.attribute[{attr_name!r}].graph")
    add_decoys(c, draw(decoy_kinds))
    places = NODE_PLACES + (GRAPH_PLACES if c.is_graph else ["attribute_default"])
    expected = []
    for j in range(draw(st.integers(1, 3))):
        location = draw(locations)
        expected.append((plant(c, draw(st.sampled_from(places)), j, location), location))
        add_decoys(c, draw(decoy_kinds))
    return model, expected


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(planted_models())
def test_walk_finds_exactly_the_planted_tensors(case: tuple[onnx.ModelProto, list[tuple[str, str]]]) -> None:
    model, expected = case
    refs = external_references(model)
    assert Counter((r.where, r.location) for r in refs) == Counter(expected)
    with pytest.raises(IntegrityError) as info:
        parse_self_contained(model.SerializeToString(), WHERE)
    assert single_line(str(info.value))


# ---------------------------------------------------------------------------------------------
# Property: arbitrary bytes never raise anything but our two errors


def _check_any_bytes(data: bytes) -> None:
    try:
        model = parse_self_contained(data, WHERE)
    except (CorruptArtifact, IntegrityError) as exc:
        assert single_line(str(exc))
        assert str(exc).startswith(WHERE)
    else:
        assert isinstance(model, onnx.ModelProto)
        assert external_references(model) == []


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_only_raise_our_errors(data: bytes) -> None:
    _check_any_bytes(data)


VALID_BYTES = valid_model().SerializeToString()
EXTERNAL_BYTES = valid_model(ext_tensor("W")).SerializeToString()


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([VALID_BYTES, EXTERNAL_BYTES]), st.data())
def test_mutated_models_only_raise_our_errors(base: bytes, data: st.DataObject) -> None:
    """Random edits of real models reach deeper than random bytes: into the walk and the checker."""
    buf = bytearray(base)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(buf)))
        edit = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if edit == "flip" and pos < len(buf):
            buf[pos] = data.draw(st.integers(0, 255))
        elif edit == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif edit == "delete":
            del buf[pos : pos + data.draw(st.integers(1, 8))]
        elif edit == "truncate":
            del buf[pos:]
    _check_any_bytes(bytes(buf))


# ---------------------------------------------------------------------------------------------
# Import stays cheap


def test_import_is_cheap() -> None:
    """Importing the module adds none of torch, onnx, numpy (whatever the package itself imports)."""
    code = (
        "import sys; import pipeline.errors; before = set(sys.modules); import pipeline.graph.onnx_safety; "
        "bad = sorted(m for m in set(sys.modules) - before if m.split('.')[0] in ('torch', 'onnx', 'numpy')); "
        "sys.exit(f'imported at module import: {bad}' if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
