"""What a model file declares, read without running it: its custom ops, its tensors and its number of classes.

An Edge TPU build cannot run off the TPU (its graph is one `edgetpu-custom-op` that only libedgetpu resolves), so
the validator checks it by its structure: the op is there, the input is one [1, H, W, 3] uint8 image, the outputs
are SSD's four postprocess tensors, and the labels fit the classes the postprocess op was built for (`num_classes`
in its custom options). LiteRT builds an interpreter for such a file and, failing to allocate it, still tells its
tensors (the Edge TPU compiler writes their shapes); the op codes and options come from the flatbuffer itself
(LiteRT's generated schema reader).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from korall_workloads.vision.catalog import EDGETPU_CUSTOM_OP

POSTPROCESS_OP = "TFLite_Detection_PostProcess"
SSD_OUTPUT_RANKS = [3, 2, 2, 1]  # boxes [1,N,4], classes [1,N], scores [1,N], count [1]


class StructureError(Exception):
    """The file is not what it must be; `reason` is the CamelCase word the result carries."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ModelStructure:
    custom_ops: frozenset[str]
    input_shape: tuple[int, ...]
    input_dtype: str
    output_shapes: tuple[tuple[int, ...], ...]
    num_classes: int | None  # from the postprocess op's options, when it has them

    @property
    def edgetpu(self) -> bool:
        return EDGETPU_CUSTOM_OP.decode() in self.custom_ops

    def describe(self) -> str:
        build = "Edge TPU build" if self.edgetpu else "CPU build"
        classes = f", {self.num_classes} classes" if self.num_classes is not None else ""
        return f"{build}, input {'x'.join(str(v) for v in self.input_shape)} {self.input_dtype}{classes}"


def _custom_ops(path: Path) -> tuple[frozenset[str], int | None]:
    """Custom op names and the postprocess op's num_classes, from the flatbuffer."""
    from ai_edge_litert import schema_py_generated as schema
    from flatbuffers import flexbuffers

    data = path.read_bytes()
    try:
        model = schema.Model.GetRootAsModel(data, 0)
        codes = [model.OperatorCodes(i).CustomCode() for i in range(model.OperatorCodesLength())]
        names = frozenset(c.decode("utf-8", "replace") for c in codes if c)
        num_classes = None
        for s in range(model.SubgraphsLength()):
            graph = model.Subgraphs(s)
            for o in range(graph.OperatorsLength()):
                op = graph.Operators(o)
                if codes[op.OpcodeIndex()] == POSTPROCESS_OP.encode() and op.CustomOptionsLength():
                    options = flexbuffers.Loads(bytes(op.CustomOptionsAsNumpy()))
                    if isinstance(options, dict) and isinstance(options.get("num_classes"), int):
                        num_classes = int(options["num_classes"])
    except Exception as exc:  # a damaged flatbuffer raises whatever its reader meets first
        raise StructureError("ModelUnreadable", f"{path} is not a readable TFLite model: {exc}") from exc
    return names, num_classes


def inspect_model(path: Path) -> ModelStructure:
    """Read the structure of a .tflite file; StructureError(ModelUnreadable) when it is not one."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=str(path))  # not allocated: an Edge TPU build may be read too
    except (ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StructureError("ModelUnreadable", f"LiteRT cannot read {path}: {first}") from exc
    # A CPU build states its postprocess outputs' shapes only once allocated; an Edge TPU build cannot be (its
    # compiler wrote the shapes into the file); a CPU build that cannot allocate fails later, when loaded.
    with contextlib.suppress(ValueError, RuntimeError):
        interpreter.allocate_tensors()
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    ops, num_classes = _custom_ops(path)
    if len(inputs) != 1:
        raise StructureError("TensorMismatch", f"{path} has {len(inputs)} inputs; an SSD detector has one image")
    return ModelStructure(
        custom_ops=ops,
        input_shape=tuple(int(v) for v in inputs[0]["shape"]),
        input_dtype=inputs[0]["dtype"].__name__,
        output_shapes=tuple(tuple(int(v) for v in o["shape"]) for o in outputs),
        num_classes=num_classes,
    )


def check_structure(structure: ModelStructure, path: Path, accelerator: str, labels: dict[int, str]) -> None:
    """Raise StructureError when the build does not fit the accelerator, the tensors are not SSD's, or the labels
    name classes the model cannot output."""
    if accelerator == "edgetpu" and not structure.edgetpu:
        raise StructureError(
            "NotAnEdgeTPUBuild", f"{path} has no {EDGETPU_CUSTOM_OP.decode()}: it is not compiled for the Edge TPU"
        )
    if accelerator == "cpu" and structure.edgetpu:
        raise StructureError("NotACPUBuild", f"{path} is compiled for the Edge TPU and cannot run on the CPU")
    shape = structure.input_shape
    if len(shape) != 4 or shape[0] != 1 or shape[3] != 3 or structure.input_dtype != "uint8":
        raise StructureError("TensorMismatch", f"{path} input is {list(shape)} {structure.input_dtype}, "
                             "expected [1, H, W, 3] uint8")  # fmt: skip
    ranks = [len(s) for s in structure.output_shapes]
    if ranks != SSD_OUTPUT_RANKS:
        raise StructureError("TensorMismatch", f"{path} outputs have ranks {ranks}, expected SSD's {SSD_OUTPUT_RANKS}")
    boxes, classes, scores, _ = structure.output_shapes
    if boxes[-1] != 4 or not boxes[1] == classes[1] == scores[1]:
        raise StructureError(
            "TensorMismatch", f"{path} outputs {[list(s) for s in structure.output_shapes]} are not [1,N,4],[1,N]x2,[1]"
        )
    if structure.num_classes is not None:
        beyond = sorted(i for i in labels if i >= structure.num_classes or i < 0)
        if beyond or len(labels) > structure.num_classes:
            raise StructureError(
                "LabelsMismatch",
                f"the labels name {len(labels)} classes (ids up to {max(labels)}), the model outputs "
                f"{structure.num_classes} (ids 0..{structure.num_classes - 1})"
                + (f"; ids beyond: {beyond[:5]}" if beyond else ""),
            )


def same_tensors(build: ModelStructure, twin: ModelStructure) -> bool:
    """An Edge TPU build and its CPU twin take the same input and give the same outputs."""
    return (
        build.input_shape == twin.input_shape
        and build.input_dtype == twin.input_dtype
        and build.output_shapes == twin.output_shapes
        and build.num_classes == twin.num_classes
    )
