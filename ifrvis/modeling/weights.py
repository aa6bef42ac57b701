"""Load `model.weights`, a local checkpoint file (nothing is downloaded), into a `VISModel`, and report
what it gave the model (`LoadReport.render()`, `LoadReport.summary()`; `ifrvis weights CONFIG FILE`).

Accepted files:
- torchvision state dicts of ResNet / Swin (`conv1.weight`, `layer1.0...`, `features.0...`): loaded into
  `backbone.*` (classification heads `fc.*`, `head.*`, `norm.*` are reported as unexpected);
- detectron2 / Mask2Former checkpoints (`.pkl`: pickled dict of numpy arrays, possibly under "model",
  read by a restricted unpickler that builds containers, strings, numbers and NumPy arrays only;
  `.pth` with "model"): ResNet keys `backbone.stem.*`, `backbone.res{2-5}.*` are mapped to torchvision
  names, Swin keys (`backbone.patch_embed.*`, `backbone.layers.*`, `backbone.norm{0-3}.*`) to
  torchvision's (Swin's 2D `relative_position_index` is the same index as torchvision's flat one);
  Mask2Former's `sem_seg_head.pixel_decoder.*` and `sem_seg_head.predictor.*` go to the pixel decoder
  and decoder; other keys are kept when the model has them under the same name, else unexpected;
- this project's own state dicts (`backbone.*`, `pixel_decoder.*`, `decoder.*`), optionally under "model".

What an image model's decoder blocks (Mask2Former's, or this project's Mask2Former-VIS decoder's as in
`checkpoints/synthetic_tiny_pretrained.pth`) give IFR is `ifr_init` (`model.ifr_init`):
- "random" (default, the paper's Sec. 4.1: "we randomly initialize these [inter-frame recurrent
  attention] modules"): IFR's decoder layers keep their random initialisation; the file's decoder blocks
  are not used;
- "checkpoint" (an ablation): the image model's cross-attention, self-attention and FFN of layer i are
  copied into IFR layer i's `frame_cross_attn`, `frame_self_attn`, `frame_ffn`.
Our reading of "the inter-frame recurrent attention modules": the blocks that compute the frame-level
queries Q_i^t from Q_i^{t-1} (ifr_decoder.py), i.e. `frame_cross_attn` (Eq. 2: the one attention of both
Attn(Q_i^{t-1}, F_t) and Attn(Q_i, F_t)), `frame_self_attn` (Eq. 3's self-attention over the 2N queries)
and `frame_ffn` (the FFN after Eq. 3's self-attention, as in every Mask2Former layer): the only IFR
blocks an image model has a counterpart for. The clip update (`temporal_cross_attn`, `clip_self_attn`,
`clip_ffn`: Q_i to all Q_i^t) has no counterpart and always starts random. Keys of an IFR checkpoint
(same names) always load. Either way the decoder's queries, level embedding, LayerNorm and mask head
load.

Random by design, not reported missing: those IFR blocks, and a class head whose class count differs
(COCO's 80 + 1 against the run's K or K + 1). A checkpoint with more learned queries than the model
(Swin-L's 200-query COCO model into a 100-query run) gives its first `num_queries` with
`extra_queries="first"` (said in the report) and is refused with "error". BatchNorm's
`num_batches_tracked` counters and the loss's `criterion.*` buffers are not weights and are skipped.
Missing keys are counted only inside the top-level modules the file covers (a backbone-only file does
not report the decoder as missing). Tensors of the wrong shape are skipped and reported as mismatched
(not also as missing). NumPy arrays keep their shape, 0-d ones (`num_batches_tracked`) included.

A checkpoint is data, never code: a .pkl is first scanned (`scan_pickle`: memo indices, frame lengths
and nesting bounded by the file) and then read by `ArrayUnpickler`, which builds plain numeric arrays
only (dtypes of PLAIN_DTYPES; a dtype or array state other than NumPy's plain one is refused, as is any
global but the few NumPy and container ones an array pickle needs), a .pth by `torch.load(...,
weights_only=True)`. A corrupt, truncated or unsafe file of either kind is one CheckpointError line
(`ifrvis weights`: exit status 2, as any user error).

`ifrvis weights` exit status: 0 when the file gives the model every tensor of the modules it covers
(or leaves it random by design); 1 when tensors are left missing or mismatched, so that a script can
gate on it; 2 on an error.
"""

from __future__ import annotations

import collections
import importlib
import logging
import math
import mmap
import os
import pickle
import pickletools
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from ifrvis.config import ExtraQueries, IfrInit
from ifrvis.errors import UserError

log = logging.getLogger(__name__)

IFR_INITS = typing.get_args(IfrInit)
EXTRA_QUERIES = typing.get_args(ExtraQueries)


class CheckpointError(UserError):
    """A checkpoint file is missing, unreadable, unsafe or does not fit the model."""


class Refused(pickle.UnpicklingError):
    """A pickle asks for something a checkpoint of arrays does not need (`read_pickle` names the file)."""


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """`_codecs.encode` as protocol-2 pickles use it for bytes (NumPy's array data), latin-1 only."""
    if not isinstance(text, str) or not isinstance(encoding, str):
        raise Refused("_codecs.encode of something else than text")
    if encoding.replace("-", "").lower() != "latin1":
        raise Refused(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _empty_bytes(*args: object) -> bytes:
    """`bytes()` as protocol-2 pickles write empty bytes (an empty array's data), without arguments
    (`bytes(n)` would allocate n bytes)."""
    if args:
        raise Refused("bytes() with arguments")
    return b""


# The type strings NumPy pickles for the dtypes of real checkpoints (float32 weights, float16 and
# float64 ones, int64 index buffers, uint8, bool). Every other dtype is refused: an object ('O') field
# read from a file's bytes is a pointer NumPy would follow, and NumPy takes a dtype's fields and flags
# from the pickle as they are.
PLAIN_DTYPES = ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1")
# What a plain dtype's pickled state may be: (3, byte order, no subarray, names, fields, default
# element size and alignment, no flags); NumPy writes '<' or '>', and '|' for one-byte types.
PLAIN_STATE_TAIL = (None, None, None, -1, -1, 0)


def _is_int(value: object) -> bool:
    return type(value) is int  # not bool, float or a NumPy number


def _dtype_word(typestr: str) -> str:
    kind = typestr[:1]
    return {"O": "object dtype", "V": "structured dtype"}.get(kind, "dtype")


class PickledDtype:
    """A plain numeric dtype as a checkpoint's pickle builds it (`pickled_dtype`), whose state (the BUILD
    that follows) must be the plain one; NumPy's own `dtype.__setstate__`, which would take names,
    fields and flags from the file, is never called."""

    __slots__ = ("dtype", "built")

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype
        self.built = False

    def __setstate__(self, state: object) -> None:
        self.dtype = plain_dtype(self.dtype, state, self.built)
        self.built = True


def pickled_dtype(typestr: object, align: object = False, copy: object = True) -> PickledDtype:
    """`numpy.dtype(typestr, align, copy)` as NumPy's dtype pickles call it, for PLAIN_DTYPES only."""
    if not isinstance(typestr, str) or typestr not in PLAIN_DTYPES:
        word = _dtype_word(typestr) if isinstance(typestr, str) else "dtype"
        raise Refused(f"{word} {typestr!r:.30} (only plain numbers are read: {', '.join(PLAIN_DTYPES)})")
    if type(align) not in (bool, int) or align or type(copy) not in (bool, int) or not copy:
        raise Refused(f"dtype {typestr!r} with align={align!r:.20}, copy={copy!r:.20}")
    return PickledDtype(np.dtype(typestr))


def plain_dtype(dtype: np.dtype, state: object, built: bool = False) -> np.dtype:
    """`dtype` in the byte order of its pickled `state`, which must be the plain one (PLAIN_STATE_TAIL);
    anything else (names, fields, a subarray, flags, a second state) is refused."""
    if built:
        raise Refused(f"dtype {dtype.str!r} given a state twice")
    if not isinstance(state, tuple) or len(state) != 8 or not _is_int(state[0]) or state[0] != 3:
        raise Refused(f"dtype {dtype.str!r} with a state that is not NumPy's plain (3, order, ...) one")
    order, tail = state[1], state[2:]
    if not all(_is_int(v) or v is None for v in tail) or tail != PLAIN_STATE_TAIL:
        raise Refused(
            f"dtype {dtype.str!r} with a subarray, fields or flags in its state"
            " (a structured or object dtype)"
        )
    if order not in ("<", ">", "=", "|") or (order == "|" and dtype.itemsize > 1):
        raise Refused(f"dtype {dtype.str!r} with byte order {order!r}")
    return dtype if dtype.itemsize == 1 else dtype.newbyteorder(order)


def _checked_dtype(dtype: object) -> np.dtype:
    if not isinstance(dtype, PickledDtype):
        raise Refused(f"an array of {type(dtype).__name__}, not of a dtype the pickle built")
    return dtype.dtype


def _checked_shape(shape: object) -> tuple[int, ...]:
    if not isinstance(shape, tuple) or len(shape) > 32 or not all(_is_int(n) and n >= 0 for n in shape):
        raise Refused(f"an array shape that is not a tuple of sizes: {shape!r:.60}")
    if math.prod(max(n, 1) for n in shape) >= 2**48:  # NumPy refuses 2**63 bytes even with a 0 in shape
        raise Refused(f"an array shape of more than 2**48 elements: {shape!r:.60}")
    return shape


def _checked_data(data: object, shape: tuple[int, ...], dtype: np.dtype) -> bytes | bytearray:
    """An array's raw bytes (Python 2 pickles give latin-1 text), exactly shape x itemsize of them."""
    if isinstance(data, str):
        data = data.encode("latin1")
    if not isinstance(data, (bytes, bytearray)):
        raise Refused(f"array data given as {type(data).__name__}, not bytes (an object array)")
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise Refused(f"array data of {len(data)} bytes for shape {shape} of {dtype.str} ({expected} bytes)")
    return data


class PickledArray(np.ndarray):
    """What `_reconstruct(ndarray, (0,), b'b')` builds: an empty array whose state (shape, dtype,
    order, bytes) is checked before NumPy's `ndarray.__setstate__` copies the bytes in."""

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, tuple) or len(state) != 5 or not _is_int(state[0]) or state[0] != 1:
            raise Refused("an array state that is not NumPy's (1, shape, dtype, fortran, data)")
        _, shape, dtype, fortran, data = state
        shape, dtype = _checked_shape(shape), _checked_dtype(dtype)
        if fortran not in (True, False) or not isinstance(fortran, (bool, int)):
            raise Refused(f"an array state with fortran={fortran!r:.20}")
        super().__setstate__((1, shape, dtype, bool(fortran), _checked_data(data, shape, dtype)))


class _NdarrayName:
    """`numpy.ndarray` as a checkpoint's pickle names it: only ever `_reconstruct`'s first argument
    (the real class would let NEWOBJ allocate arrays of any size)."""

    __slots__ = ()


NDARRAY = _NdarrayName()


def _reconstruct(subtype: object, shape: object, tag: object) -> PickledArray:
    """`numpy.core.multiarray._reconstruct` as NumPy's array pickles call it (protocols 0-4)."""
    if subtype is not NDARRAY or shape != (0,) or tag not in (b"b", "b"):
        what = getattr(subtype, "__name__", type(subtype).__name__)
        raise Refused(f"_reconstruct of {what} {shape!r:.30}, not of an empty numpy.ndarray")
    return np.ndarray.__new__(PickledArray, (0,), "b")


def _frombuffer(buffer: object, dtype: object, shape: object, order: object, axis_order: object = None):
    """`numpy.core.numeric._frombuffer` as NumPy's protocol-5 array pickles call it."""
    shape, dtype = _checked_shape(shape), _checked_dtype(dtype)
    data = _checked_data(buffer, shape, dtype)
    if order not in ("C", "F", "K") or (order == "K") != (axis_order is not None):
        raise Refused(f"an array of order {order!r:.10}")
    if axis_order is None:
        array = np.frombuffer(data, dtype).reshape(shape, order=order)
    elif not isinstance(axis_order, tuple) or sorted(axis_order) != list(range(len(shape))):
        raise Refused(f"an array of axis order {axis_order!r:.30}")
    else:
        array = np.frombuffer(data, dtype).reshape(shape, order="C").transpose(axis_order)
    return array.view(PickledArray)  # a BUILD on it is checked, not NumPy's own __setstate__


def _scalar(dtype: object, data: object) -> int | float | bool:
    """`numpy.core.multiarray.scalar` as NumPy's scalar pickles call it: one plain number, as Python's
    (a NumPy scalar would take any state a BUILD gives it)."""
    dtype = _checked_dtype(dtype)
    return _numpy_module("multiarray").scalar(dtype, bytes(_checked_data(data, (), dtype))).item()


def _numpy_module(name: str):
    try:
        return importlib.import_module(f"numpy._core.{name}")  # NumPy 2 renamed numpy.core
    except ImportError:
        return importlib.import_module(f"numpy.core.{name}")


def _sealed(function):
    """`function` as an object with no attribute a pickle can set: BUILD on a plain function would set
    its `__defaults__` (what later calls receive) for the rest of the process."""
    return type(function.__name__, (), {"__slots__": (), "__call__": staticmethod(function)})()


def _numpy_globals() -> dict[tuple[str, str], object]:
    """Checked stand-ins for the NumPy callables a pickled array or scalar needs, under NumPy 1's
    `numpy.core` and NumPy 2's `numpy._core` names (either NumPy writes one, reads both)."""
    allowed = {("numpy", "ndarray"): NDARRAY, ("numpy", "dtype"): _sealed(pickled_dtype)}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = _sealed(_reconstruct)  # protocols 0-4
        allowed[(f"{package}.multiarray", "scalar")] = _sealed(_scalar)
        allowed[(f"{package}.numeric", "_frombuffer")] = _sealed(_frombuffer)  # protocol 5
    return allowed


class ArrayUnpickler(pickle.Unpickler):
    """Unpickles containers, strings, numbers and plain numeric NumPy arrays; any other global (a class or
    function the pickle would call, e.g. `os.system`) and any NumPy dtype or array state other than a
    plain numeric one raise CheckpointError naming the file and what was refused. NumPy's own
    `dtype`, `_reconstruct` and `_frombuffer` are replaced by the checked stand-ins above."""

    def __init__(self, handle, path: Path):
        super().__init__(handle, encoding="latin1")  # latin1: Python 2 pickles' byte strings
        self.path = path
        self.allowed = {
            **_numpy_globals(),
            ("collections", "OrderedDict"): collections.OrderedDict,
            ("_codecs", "encode"): _sealed(_latin1_bytes),
            ("__builtin__", "bytes"): _sealed(_empty_bytes),  # Python 3 writes bytes under Python 2's name
            ("builtins", "bytes"): _sealed(_empty_bytes),
        }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.allowed:
            raise CheckpointError(
                f"model.weights: {self.path} refused: its pickle calls {_one_line(f'{module}.{name}')}, "
                "which a checkpoint of arrays does not need (only containers, strings, numbers and NumPy "
                "arrays are read)"
            )
        return self.allowed[(module, name)]

    def persistent_load(self, pid):
        raise CheckpointError(f"model.weights: {self.path} refused: its pickle has persistent ids")


def _one_line(text: str, limit: int = 300) -> str:
    """`text` (which may come from the file) as one line of at most about `limit` characters, control
    characters escaped (a name read from a file must not drive the terminal)."""
    text = " ".join(text.split())
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    return text if len(text) <= limit else text[:limit] + "..."


def _describe(error: Exception, reason: str) -> str:
    return f"{type(error).__name__}: {reason}" if reason else type(error).__name__  # MemoryError()


# Deeper than any checkpoint (a detectron2 file nests about 8 levels: dict, dict, array, its state,
# its dtype, ...); hashing a deeper tuple (a dict key) recurses in C until the stack overflows.
MAX_NESTING = 100
MEMO_PUTS = ("PUT", "BINPUT", "LONG_BINPUT")
MEMO_GETS = ("GET", "BINGET", "LONG_BINGET")
# Opcodes whose first item is a container that they fill (its depth grows to hold the rest) and those
# that leave their items as they are.
FILLING = ("APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD")
PASSING = ("DUP", "READONLY_BUFFER", "POP", "POP_MARK", "STOP")


def scan_pickle(stream, size: int) -> None:
    """Refuse, before anything is built, a pickle that would make the unpickler allocate far more than
    the file holds or recurse without bound: a memo index beyond the opcodes read so far (the memo grows
    to the index: a 9-byte file asks for gigabytes), a frame longer than the rest of the file, items
    nested deeper than MAX_NESTING. Walks `stream`'s opcodes (pickletools), keeping the nesting depth of
    each stack item and memo entry (a malformed stack is left to the unpickler to refuse). Exact for
    tuples, which cannot change once built; a list filled after it was memoized may be deeper than
    recorded, but lists are never hashed and CPython guards their repr and deallocation."""
    stack: list[int] = []  # the nesting depth of each item
    marks: list[int] = []
    memo: dict[int, int] = {}
    for count, (opcode, arg, position) in enumerate(pickletools.genops(stream)):
        name = opcode.name
        if name in MEMO_PUTS and arg > count:
            raise Refused(f"a memo index of {arg} after {count} opcodes")
        if name == "FRAME" and arg > size - position:
            raise Refused(f"a frame of {arg} bytes where {size - position} are left")
        if name == "MARK":
            marks.append(len(stack))
            continue
        before = [item.name for item in opcode.stack_before]
        popped = []
        if "mark" in before:
            if not marks:
                return
            popped, stack[marks[-1] :] = stack[marks[-1] :], []
            marks.pop()
            before = before[: before.index("mark")]
        if len(before) > len(stack):
            return
        if before:
            popped, stack[-len(before) :] = stack[-len(before) :] + popped, []
        if name in MEMO_PUTS:
            memo[arg] = stack[-1] if stack else 0
        elif name in MEMO_GETS:
            stack.append(memo.get(arg, 0))
        elif name == "MEMOIZE":
            memo[len(memo)] = popped[0]
            stack.append(popped[0])
        elif name in PASSING:
            stack += popped[:1] * len(opcode.stack_after)
        elif opcode.stack_after:
            if name in FILLING:
                depth = max(popped[0], 1 + max(popped[1:], default=0))
            else:
                depth = 1 + max(popped) if popped else 0
            if depth > MAX_NESTING:
                raise Refused(f"items nested more than {MAX_NESTING} deep")
            stack.append(depth)


def read_pickle(path: Path) -> object:
    """The object in pickle file `path`, scanned by `scan_pickle`, then built by `ArrayUnpickler`."""
    with path.open("rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise CheckpointError(f"model.weights: {path} is empty")
        try:
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:  # read twice, held once
                scan_pickle(data, len(data))
                data.seek(0)
                return ArrayUnpickler(data, path).load()
        except CheckpointError:
            raise
        except Refused as error:
            raise CheckpointError(
                f"model.weights: {path} refused: its pickle has {_one_line(str(error))}"
            ) from None
        except Exception as error:  # a truncated or corrupt file fails in many ways
            message = _one_line(_describe(error, str(error)))
            raise CheckpointError(f"model.weights: {path} is not a readable pickle: {message}") from None


def torch_reason(error: Exception) -> str:
    """What went wrong in `torch.load`'s message, without its advice: torch >= 2.6 gives it in the
    paragraph after "Weights only load failed. ...", earlier versions after "WeightsUnpickler error:";
    other errors (a corrupt zip) in their first sentence."""
    text = str(error)
    match = re.search(r"WeightsUnpickler error: (.+)", text)
    if match:
        return match[1]
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    if text.startswith("Weights only load failed") and len(paragraphs) > 1:
        return paragraphs[1]
    return text.split(". ")[0]


def read_torch(path: Path) -> object:
    """The object in torch file `path`, read with `weights_only=True` (tensors, containers, numbers:
    torch's own restricted unpickler); a corrupt or unsafe file is one CheckpointError line."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        message = _one_line(_describe(error, torch_reason(error)))
        raise CheckpointError(
            f"model.weights: {path} is not a readable or safe torch file: {message}"
        ) from None


# What a tensor of a checkpoint may be (real numbers, as the model's parameters and buffers).
TENSOR_DTYPES = (
    torch.float16, torch.bfloat16, torch.float32, torch.float64,
    torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool,
)  # fmt: skip


def as_tensor(value: object) -> Tensor | None:
    """A checkpoint value as a CPU tensor of real numbers (a NumPy array keeps its shape, 0-d included,
    in native byte order), None when it is something else (a scalar, a string, a complex tensor)."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":  # numbers, not object arrays
        native = np.require(np.asarray(value), value.dtype.newbyteorder("="), ["C", "W"])
        return torch.from_numpy(native)
    if torch.is_tensor(value) and value.layout == torch.strided and value.dtype in TENSOR_DTYPES:
        return value
    return None


def read_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The state dict in `path` (.pkl detectron2 pickle, or a torch file), values as tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"model.weights: no such file {path} (for the tiny configs, `ifrvis pretrain CONFIG` writes it)"
        )
    data = read_pickle(path) if path.suffix == ".pkl" else read_torch(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"model.weights: {path} holds a {type(data).__name__}, expected a state dict")
    for wrapper in ("model", "state_dict"):
        if isinstance(data.get(wrapper), dict):
            data = data[wrapper]
    state = {}
    for key, value in data.items():
        try:
            tensor = as_tensor(value)
        except Exception as error:  # NumPy's or torch's limits on an array the checks let through
            message = _one_line(_describe(error, str(error)))
            raise CheckpointError(
                f"model.weights: {path} has an array torch cannot take: {message}"
            ) from None
        if tensor is None:
            continue
        if not isinstance(key, str) or not key.isprintable():  # printed in the report
            raise CheckpointError(
                f"model.weights: {path} has a tensor under {_one_line(repr(key), 60)}, not under a name"
            )
        state[key] = tensor
    if not state:
        raise CheckpointError(f"model.weights: {path} holds no tensors")
    return state


_D2_RESNET = [
    (r"^backbone\.stem\.conv1\.norm\.(.+)$", r"backbone.bn1.\1"),
    (r"^backbone\.stem\.conv1\.(weight|bias)$", r"backbone.conv1.\1"),
    (r"^backbone\.res(\d)\.(\d+)\.conv(\d)\.norm\.(.+)$", r"backbone.layer{res}.\2.bn\3.\4"),
    (r"^backbone\.res(\d)\.(\d+)\.conv(\d)\.(weight|bias)$", r"backbone.layer{res}.\2.conv\3.\4"),
    (r"^backbone\.res(\d)\.(\d+)\.shortcut\.norm\.(.+)$", r"backbone.layer{res}.\2.downsample.1.\3"),
    (r"^backbone\.res(\d)\.(\d+)\.shortcut\.(weight|bias)$", r"backbone.layer{res}.\2.downsample.0.\3"),
]


# Mask2Former's pixel decoder and transformer decoder (`sem_seg_head.*`); {cross}, {self}, {ffn} are
# the decoder layer's blocks: the per-frame blocks of Eqs. 2-3 for IFR, the only ones for the baseline.
_MASK2FORMER = [
    (r"^sem_seg_head\.pixel_decoder\.transformer\.encoder\.layers\.(.+)$", r"pixel_decoder.layers.\1"),
    (r"^sem_seg_head\.pixel_decoder\.transformer\.level_embed$", r"pixel_decoder.level_embed"),
    (r"^sem_seg_head\.pixel_decoder\.(input_proj|mask_features)\.(.+)$", r"pixel_decoder.\1.\2"),
    (r"^sem_seg_head\.pixel_decoder\.adapter_1\.weight$", r"pixel_decoder.lateral_conv.0.weight"),
    (r"^sem_seg_head\.pixel_decoder\.adapter_1\.norm\.(.+)$", r"pixel_decoder.lateral_conv.1.\1"),
    (r"^sem_seg_head\.pixel_decoder\.layer_1\.weight$", r"pixel_decoder.output_conv.0.weight"),
    (r"^sem_seg_head\.pixel_decoder\.layer_1\.norm\.(.+)$", r"pixel_decoder.output_conv.1.\1"),
    (r"^sem_seg_head\.predictor\.(query_feat|query_embed|level_embed)\.(.+)$", r"decoder.\1.\2"),
    (r"^sem_seg_head\.predictor\.decoder_norm\.(.+)$", r"decoder.heads_out.norm.\1"),
    (r"^sem_seg_head\.predictor\.(class_embed|mask_embed)\.(.+)$", r"decoder.heads_out.\1.\2"),
    (
        r"^sem_seg_head\.predictor\.transformer_cross_attention_layers\.(\d+)\.multihead_attn\.(.+)$",
        r"decoder.layers.\1.{cross}.attn.\2",
    ),
    (
        r"^sem_seg_head\.predictor\.transformer_cross_attention_layers\.(\d+)\.norm\.(.+)$",
        r"decoder.layers.\1.{cross}.norm.\2",
    ),
    (
        r"^sem_seg_head\.predictor\.transformer_self_attention_layers\.(\d+)\.self_attn\.(.+)$",
        r"decoder.layers.\1.{self}.attn.\2",
    ),
    (
        r"^sem_seg_head\.predictor\.transformer_self_attention_layers\.(\d+)\.norm\.(.+)$",
        r"decoder.layers.\1.{self}.norm.\2",
    ),
    (r"^sem_seg_head\.predictor\.transformer_ffn_layers\.(\d+)\.(.+)$", r"decoder.layers.\1.{ffn}.\2"),
]
IFR_BLOCKS = {"cross": "frame_cross_attn", "self": "frame_self_attn", "ffn": "frame_ffn"}
BASELINE_BLOCKS = {"cross": "cross_attn", "self": "self_attn", "ffn": "ffn"}


def mask2former_name(key: str, blocks: dict[str, str]) -> str | None:
    """Mask2Former head name -> this project's, e.g. `sem_seg_head.predictor.transformer_ffn_layers.0.
    linear1.weight` -> `decoder.layers.0.frame_ffn.linear1.weight` (IFR blocks); None if not one."""
    for pattern, replacement in _MASK2FORMER:
        match = re.match(pattern, key)
        if match:
            return match.expand(replacement.format(**blocks))
    return None


def baseline_block_name(key: str, blocks: dict[str, str]) -> str | None:
    """This project's Mask2Former-VIS decoder key -> the same block of the model's decoder, e.g.
    `decoder.layers.0.cross_attn.norm.weight` -> `decoder.layers.0.frame_cross_attn.norm.weight` (IFR
    blocks), so that an image-level Mask2Former initialises IFR's per-frame blocks; None if not one."""
    match = re.match(r"^decoder\.layers\.(\d+)\.(cross_attn|self_attn|ffn)\.(.+)$", key)
    if match is None:
        return None
    block = {"cross_attn": "cross", "self_attn": "self", "ffn": "ffn"}[match[2]]
    return f"decoder.layers.{match[1]}.{blocks[block]}.{match[3]}"


def detectron2_resnet_name(key: str) -> str | None:
    """detectron2 ResNet name -> this project's, e.g. `backbone.res2.0.conv1.norm.weight` ->
    `backbone.layer1.0.bn1.weight`; None if `key` is not a detectron2 ResNet key."""
    for pattern, replacement in _D2_RESNET:
        match = re.match(pattern, key)
        if match:
            res = int(match.group(1)) - 1 if "{res}" in replacement else 0
            return match.expand(replacement.replace("{res}", str(res)))
    return None


def swin_name(key: str) -> str | None:
    """Mask2Former's Swin (the official implementation's names) -> torchvision's `features.*`, e.g.
    `backbone.layers.1.blocks.0.mlp.fc2.weight` -> `backbone.features.3.0.mlp.3.weight` (stage i's blocks
    are `features[2i + 1]`, its patch merging `features[2i + 2]`); None if not a Swin key."""
    rules = [
        (r"^backbone\.patch_embed\.proj\.(.+)$", lambda m: f"backbone.features.0.0.{m[1]}"),
        (r"^backbone\.patch_embed\.norm\.(.+)$", lambda m: f"backbone.features.0.2.{m[1]}"),
        (
            r"^backbone\.layers\.(\d)\.blocks\.(\d+)\.mlp\.fc([12])\.(.+)$",
            lambda m: f"backbone.features.{2 * int(m[1]) + 1}.{m[2]}.mlp.{0 if m[3] == '1' else 3}.{m[4]}",
        ),
        (
            r"^backbone\.layers\.(\d)\.blocks\.(\d+)\.(norm1|norm2|attn)\.(.+)$",
            lambda m: f"backbone.features.{2 * int(m[1]) + 1}.{m[2]}.{m[3]}.{m[4]}",
        ),
        (
            r"^backbone\.layers\.(\d)\.downsample\.(reduction|norm)\.(.+)$",
            lambda m: f"backbone.features.{2 * int(m[1]) + 2}.{m[2]}.{m[3]}",
        ),
        (r"^backbone\.norm(\d)\.(.+)$", lambda m: f"backbone.out_norms.{m[1]}.{m[2]}"),
    ]
    for pattern, rename in rules:
        match = re.match(pattern, key)
        if match:
            return rename(match)
    return None


# An image model's decoder blocks (Mask2Former's `transformer_*_layers`, the baseline's `cross_attn`,
# `self_attn`, `ffn`) map to IFR's recurrent blocks (Eqs. 2-3); the clip update has no counterpart.
IFR_RECURRENT_BLOCKS = tuple(IFR_BLOCKS.values())
IFR_CLIP_BLOCKS = ("temporal_cross_attn", "clip_self_attn", "clip_ffn")
CLASS_HEAD = ("decoder.heads_out.class_embed.weight", "decoder.heads_out.class_embed.bias")
LEARNED_QUERIES = ("decoder.query_feat.weight", "decoder.query_embed.weight")
RECURRENT_RANDOM = "IFR recurrent blocks (Eqs. 2-3: model.ifr_init=random, as Sec. 4.1)"
CLIP_RANDOM = "IFR clip blocks (temporal cross-attention, self-attention, FFN: none in an image model)"


def ifr_block(key: str) -> str | None:
    """The IFR decoder block a model key belongs to (`frame_ffn`, `clip_self_attn`, ...), else None."""
    match = re.match(r"^decoder\.layers\.\d+\.(\w+)\.", key)
    blocks = IFR_RECURRENT_BLOCKS + IFR_CLIP_BLOCKS
    return match[1] if match and match[1] in blocks else None


def map_key(key: str, model_keys: set[str], blocks: dict[str, str]) -> tuple[str | None, bool]:
    """Where file key `key` goes in the model (decoder `blocks`: IFR_BLOCKS or BASELINE_BLOCKS), or None;
    and whether it is an image model's decoder block renamed into one of IFR's recurrent blocks."""
    renamed = [mask2former_name(key, blocks), baseline_block_name(key, blocks)]
    candidates = [detectron2_resnet_name(key), swin_name(key), *renamed, key, f"backbone.{key}"]
    name = next((c for c in candidates if c is not None and c in model_keys), None)
    return name, name is not None and name in renamed and ifr_block(name) is not None


class Mismatch(NamedTuple):
    key: str  # in the file
    shape: tuple[int, ...]
    name: str  # in the model
    model_shape: tuple[int, ...]

    def __str__(self) -> str:
        return f"{self.key}: {self.shape} vs {self.name}: {self.model_shape}"


class KeyGroup(NamedTuple):
    pattern: str  # module path with indices as `*`, or the key itself for a group of one
    instances: int  # modules matching the pattern
    keys: list[str]


def group_keys(keys: list[str], budget: int = 4) -> list[KeyGroup]:
    """Compact listing of `keys`: grouped by module path with indices as `*`, as deep as fits in `budget`
    groups, e.g. `KeyGroup("decoder.layers.*.temporal_cross_attn", 9, [54 keys])`."""
    paths = [key.split(".")[:-1] or [key] for key in keys]  # module paths: the tensor's name dropped
    for depth in range(max((len(p) for p in paths), default=1), 0, -1):
        groups: dict[str, tuple[set[str], list[str]]] = {}
        for key, path in zip(keys, paths):
            pattern = ".".join("*" if part.isdigit() else part for part in path[:depth])
            instances, members = groups.setdefault(pattern, (set(), []))
            instances.add(".".join(path[:depth]))
            members.append(key)
        if len(groups) <= budget or depth == 1:
            break
    return [
        KeyGroup(members[0], 1, members) if len(members) == 1 else KeyGroup(pattern, len(found), members)
        for pattern, (found, members) in groups.items()
    ]


def _group_lines(keys: list[str], indent: str = "  ") -> list[str]:
    lines = []
    for group in group_keys(sorted(keys)):
        count = f" x{group.instances}" if group.instances > 1 else ""
        tensors = f" ({len(group.keys)} tensors)" if len(group.keys) > 1 else ""
        lines.append(f"{indent}{group.pattern}{count}{tensors}")
    return lines


def _reason_lines(reasons: dict[str, str]) -> list[str]:
    """`{key: reason}` -> per reason, its keys grouped."""
    by_reason: dict[str, list[str]] = {}
    for key, reason in reasons.items():
        by_reason.setdefault(reason, []).append(key)
    return [
        line for reason, keys in by_reason.items() for line in [f"  {reason}:", *_group_lines(keys, "    ")]
    ]


@dataclass
class LoadReport:
    """What a checkpoint gave a model. Model keys: `loaded`, `missing` (inside the modules the file
    covers), `random` (left random by design: key -> reason); file keys: `unexpected`, `mismatches`,
    `skipped` (not used by design: key -> reason); `notes`: adjustments made (fewer queries kept)."""

    path: str = ""
    model_keys: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    random: dict[str, str] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    mismatches: list[Mismatch] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """The file gave the model tensors, and every tensor of the modules it covers that is not random
        by design: nothing missing, nothing of the wrong shape."""
        return bool(self.loaded) and not self.missing and not self.mismatches

    @property
    def mismatched(self) -> list[str]:
        """`"file key: file shape vs model key: model shape"` per shape mismatch."""
        return [str(m) for m in self.mismatches]

    def modules(self) -> dict[str, list[str]]:
        """Top-level module -> its model keys."""
        modules: dict[str, list[str]] = {}
        for key in self.model_keys:
            modules.setdefault(key.split(".")[0], []).append(key)
        return modules

    def summary(self) -> str:
        """One line, e.g. "model.weights X: 485/811 tensors loaded (backbone 100%, pixel_decoder 100%,
        decoder 3%); 326 random by design (IFR recurrent blocks, class head, IFR clip blocks); 0 missing,
        0 unexpected, 0 mismatched", then the notes."""
        loaded = set(self.loaded)
        parts = ", ".join(
            f"{module} {100 * sum(k in loaded for k in keys) // len(keys)}%"
            for module, keys in self.modules().items()
        )
        reasons = ", ".join(dict.fromkeys(reason.split(" (")[0] for reason in self.random.values()))
        line = (
            f"model.weights {self.path}: {len(loaded)}/{len(self.model_keys)} tensors loaded ({parts})"
            f"; {len(self.random)} random by design"
            + (f" ({reasons})" if reasons else "")
            + f"; {len(self.missing)} missing, {len(self.unexpected)} unexpected,"
            f" {len(self.mismatches)} mismatched"
        )
        return "; ".join([line, *self.notes])

    def module_lines(self) -> list[str]:
        """Tensors loaded per top-level module, and per sub-module where a module is partly loaded."""
        loaded = set(self.loaded)
        lines = [f"loaded {len(loaded)}/{len(self.model_keys)} tensors"]
        for module, keys in self.modules().items():
            done = sum(k in loaded for k in keys)
            lines.append(f"  {module:<14} {done:>5}/{len(keys):<5} {100 * done // len(keys):>3}%")
            if 0 < done < len(keys):
                for group in group_keys(keys, budget=12):
                    done = sum(k in loaded for k in group.keys)
                    lines.append(f"    {group.pattern:<40} {done:>4}/{len(group.keys)}")
        return lines

    def render(self) -> str:
        """The full report: `module_lines`, then the keys left random by design, missing, unexpected,
        mismatched and not used by design, grouped by module; the notes."""
        lines = [f"model.weights {self.path}", *self.module_lines()]
        lines += [f"random by design: {len(self.random)}", *_reason_lines(self.random)]
        lines += [f"missing: {len(self.missing)}", *_group_lines(self.missing)]
        lines += [f"unexpected (file keys with no place in the model): {len(self.unexpected)}"]
        lines += _group_lines(self.unexpected)
        lines.append(f"mismatched: {len(self.mismatches)}")
        by_key = {m.key: m for m in self.mismatches}
        for group in group_keys(sorted(by_key)):
            first = by_key[group.keys[0]]
            count = f" x{group.instances}" if group.instances > 1 else ""
            lines.append(f"  {group.pattern}{count}: e.g. {first.shape} in the file vs {first.model_shape}")
        lines += [f"file keys not used by design: {len(self.skipped)}", *_reason_lines(self.skipped)]
        return "\n".join(lines + [f"note: {note}" for note in self.notes])


def _fit_queries(value: Tensor, key: str, shape: torch.Size, extra_queries: str, report: LoadReport):
    """A file's learned queries `(N_file, C)` for a model with `(N, C)`, N < N_file: the first N."""
    if extra_queries == "error":
        raise CheckpointError(
            f"model.weights: {report.path} has {value.shape[0]} learned queries ({key}), the model"
            f" {shape[0]} (model.num_queries); model.extra_queries=first keeps the first {shape[0]}"
        )
    note = (
        f"kept the first {shape[0]} of the file's {value.shape[0]} learned queries"
        " (query_feat, query_embed; model.extra_queries=first)"
    )
    if note not in report.notes:
        report.notes.append(note)
    return value[: shape[0]]


def fit(key: str, value: Tensor, name: str, shape: torch.Size, extra_queries: str, report: LoadReport):
    """File tensor `value` of `key` made to fit model tensor `name` of `shape`, or None (reported)."""
    if value.shape == shape:
        return value
    if name.endswith(".relative_position_index") and value.numel() == shape.numel():
        return value.reshape(shape)  # Swin's (L, L) index is torchvision's flat (L * L,) one
    if name in LEARNED_QUERIES and value.shape[1:] == shape[1:] and value.shape[0] > shape[0]:
        return _fit_queries(value, key, shape, extra_queries, report)
    if name in CLASS_HEAD and value.shape[1:] == shape[1:]:
        reason = f"class head ({value.shape[0]} outputs in the file, {shape[0]} in the model)"
        report.skipped[key] = report.random[name] = reason
        return None
    report.mismatches.append(Mismatch(key, tuple(value.shape), name, tuple(shape)))
    return None


def load_weights(
    model: nn.Module,
    path: str | Path,
    ifr_init: str = "random",
    extra_queries: str = "first",
    quiet: bool = False,
) -> LoadReport:
    """Copy the matching tensors of `path` into `model` (cast to each model tensor's dtype and device;
    a model on the meta device only checks names and shapes), log the summary (unless `quiet`) and
    return the report.
    `ifr_init` ("random" | "checkpoint") and `extra_queries` ("first" | "error") as `model.ifr_init`
    and `model.extra_queries` (module docstring)."""
    if ifr_init not in IFR_INITS or extra_queries not in EXTRA_QUERIES:
        raise ValueError(f"ifr_init {ifr_init!r} / extra_queries {extra_queries!r}: not among the choices")
    target = model.state_dict()
    model_keys = set(target)
    report = LoadReport(path=str(path), model_keys=list(target))
    blocks = IFR_BLOCKS if any(ifr_block(k) for k in target) else BASELINE_BLOCKS
    state = read_checkpoint(path)
    mapped: dict[str, Tensor] = {}
    covered = set()  # top-level modules the file has tensors for
    for key, value in state.items():
        name, from_image_block = map_key(key, model_keys, blocks)
        if name is None and (key.endswith("num_batches_tracked") or key.startswith("criterion.")):
            continue  # BatchNorm bookkeeping and loss buffers: not weights
        if name is None:
            report.unexpected.append(key)
            continue
        covered.add(name.split(".")[0])
        if from_image_block and ifr_init == "random":
            report.skipped[key] = RECURRENT_RANDOM
            report.random[name] = RECURRENT_RANDOM
            continue
        value = fit(key, value, name, target[name].shape, extra_queries, report)
        if value is not None:
            mapped[name] = value.to(device=target[name].device, dtype=target[name].dtype)
    ifr_file = any(ifr_block(k) for k in state)
    mismatched = {m.name for m in report.mismatches}  # listed once: as mismatched, not also missing
    for key in target:
        if key.split(".")[0] in covered and key not in mapped | report.random.keys() | mismatched:
            if ifr_block(key) in IFR_CLIP_BLOCKS and not ifr_file:
                report.random[key] = CLIP_RANDOM
            else:
                report.missing.append(key)
    report.loaded = sorted(mapped)
    report.missing.sort()
    if not all(t.is_meta for t in target.values()):  # a meta model has nothing to copy into (and
        model.load_state_dict(mapped, strict=False)  # BatchNorm would warn about its missing counters)
    if not quiet:
        (log.info if report.complete else log.warning)(report.summary())
    return report
