"""The child process of `isolated_read`: reads one untrusted checkpoint file and writes its tensors as
safetensors. Run as a script, with nothing but the standard library and NumPy (no torch: a child starts
in a fraction of a second and its address space stays small enough to limit tightly):

    python -I checkpoint_reader.py FILE OUT MEMORY_BYTES CPU_SECONDS

It first limits itself (address space, CPU time, file size, no core file, recursion), then reads FILE
through a plain file handle (never mmap: a file truncated or rewritten during the read is a read error,
not a bus error) and writes OUT. Exit status: 0 written; 2 refused or unreadable, the reason as one line
on stdout (a phrase the parent puts after the file's name); MEMORY_STATUS when an allocation failed
under the memory limit. Whatever else happens (a crash in C, a hang) ends the process, which the parent
reports.

What is read:
- `.pkl` (detectron2 / Mask2Former): a pickle of containers, strings, numbers and NumPy arrays of plain
  numeric dtypes, built by `ArrayUnpickler` (NumPy's dtype, array and scalar constructors replaced by
  checked stand-ins; any other global is refused);
- any other suffix: a torch zip file (`torch.save`): its `data.pkl` read by the same unpickler with
  torch's tensor and storage names (`torch_globals`), each storage from its stored (uncompressed)
  record; `torch.save` writes no compressed record, so one is refused, and with it every
  decompression bomb. Tensors without data (the meta device) are refused.
The state dict is the file's dict, or its "model" / "state_dict" entry; values other than numeric
arrays are dropped; tensor names must be printable strings of at most MAX_KEY_CHARS; nothing may follow
the pickle's STOP. Messages never format a value from the file beyond `sketch`.
"""

from __future__ import annotations

import collections
import importlib
import io
import json
import math
import pickle
import resource
import struct
import sys
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

MEMORY_STATUS = 3
REFUSED_STATUS = 2
# Deep enough for this module's own calls; nothing it reads recurses in Python.
RECURSION_LIMIT = 400
# Longer than any real tensor name (Mask2Former's longest is ~90 characters); the report groups names
# by their dotted parts, which a name of 100 000 parts would make slow.
MAX_KEY_CHARS = 256
SHOWN_CHARS = 80  # of a string from the file, in a message


class Refused(pickle.UnpicklingError):
    """The pickle asks for something a checkpoint of arrays does not need, or is malformed: the message
    says what it has (read after "its pickle has"), built from `sketch`es, never from a whole value."""


class Unfit(Exception):
    """The file is not a checkpoint this reader takes: the message is a phrase read after its name."""


def sketch(value: object) -> str:
    """What `value` (from the file) is, in a few words, without formatting its structure: a string cut
    to SHOWN_CHARS, the size of an integer, bytes or a container, else its type's name."""
    if isinstance(value, str):
        cut = value[:SHOWN_CHARS]
        return repr(cut) + ("..." if len(value) > SHOWN_CHARS else "")
    if type(value) is int:
        return str(value) if value.bit_length() <= 64 else f"an integer of {value.bit_length()} bits"
    if value is None or type(value) in (bool, float):
        return repr(value)
    if isinstance(value, (bytes, bytearray)):
        return f"{type(value).__name__} of {len(value)} bytes"
    if type(value) in (tuple, list, dict, collections.OrderedDict):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__}"


def _latin1_bytes(text: object, encoding: object) -> bytes:
    """`_codecs.encode` as protocol-2 pickles use it for bytes (NumPy's array data), latin-1 only."""
    if not isinstance(text, str) or not isinstance(encoding, str):
        raise Refused("_codecs.encode of something else than text")
    if encoding.replace("-", "").lower() != "latin1":
        raise Refused(f"_codecs.encode with encoding {sketch(encoding)}")
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
        raise Refused(f"{word} {sketch(typestr)} (only plain numbers are read: {', '.join(PLAIN_DTYPES)})")
    if type(align) not in (bool, int) or align or type(copy) not in (bool, int) or not copy:
        raise Refused(f"dtype {typestr!r} with align={sketch(align)}, copy={sketch(copy)}")
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
        raise Refused(f"dtype {dtype.str!r} with byte order {sketch(order)}")
    return dtype if dtype.itemsize == 1 else dtype.newbyteorder(order)


def _checked_dtype(dtype: object) -> np.dtype:
    if not isinstance(dtype, PickledDtype):
        raise Refused(f"an array of {sketch(dtype)}, not of a dtype the pickle built")
    return dtype.dtype


def _checked_shape(shape: object) -> tuple[int, ...]:
    if not isinstance(shape, tuple) or len(shape) > 32 or not all(_is_int(n) and n >= 0 for n in shape):
        raise Refused(f"an array shape that is not a tuple of at most 32 sizes: {sketch(shape)}")
    if math.prod(max(n, 1) for n in shape) >= 2**48:  # NumPy refuses 2**63 bytes even with a 0 in shape
        raise Refused(f"an array shape of more than 2**48 elements: {shape}")
    return shape


def _checked_data(data: object, shape: tuple[int, ...], dtype: np.dtype) -> bytes | bytearray:
    """An array's raw bytes (Python 2 pickles give latin-1 text), exactly shape x itemsize of them."""
    if isinstance(data, str):
        data = data.encode("latin1")
    if not isinstance(data, (bytes, bytearray)):
        raise Refused(f"array data given as {sketch(data)}, not bytes (an object array)")
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
        if type(fortran) not in (bool, int) or fortran not in (True, False):
            raise Refused(f"an array state with fortran={sketch(fortran)}")
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
        raise Refused(f"_reconstruct of {what} with shape {sketch(shape)}, not of an empty numpy.ndarray")
    return np.ndarray.__new__(PickledArray, (0,), "b")


def _frombuffer(buffer: object, dtype: object, shape: object, order: object, axis_order: object = None):
    """`numpy.core.numeric._frombuffer` as NumPy's protocol-5 array pickles call it."""
    shape, dtype = _checked_shape(shape), _checked_dtype(dtype)
    data = _checked_data(buffer, shape, dtype)
    if order not in ("C", "F", "K") or (order == "K") != (axis_order is not None):
        raise Refused(f"an array of order {sketch(order)}")
    if axis_order is None:
        array = np.frombuffer(data, dtype).reshape(shape, order=order)
    elif not isinstance(axis_order, tuple) or sorted(axis_order) != list(range(len(shape))):
        raise Refused(f"an array of axis order {sketch(axis_order)}")
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


def numpy_globals() -> dict[tuple[str, str], object]:
    """Checked stand-ins for the NumPy callables a pickled array or scalar needs, under NumPy 1's
    `numpy.core` and NumPy 2's `numpy._core` names (either NumPy writes one, reads both), and the
    containers and byte constructors of detectron2's pickles."""
    allowed = {
        ("numpy", "ndarray"): NDARRAY,
        ("numpy", "dtype"): _sealed(pickled_dtype),
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("_codecs", "encode"): _sealed(_latin1_bytes),
        ("__builtin__", "bytes"): _sealed(_empty_bytes),  # Python 3 writes bytes under Python 2's name
        ("builtins", "bytes"): _sealed(_empty_bytes),
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = _sealed(_reconstruct)  # protocols 0-4
        allowed[(f"{package}.multiarray", "scalar")] = _sealed(_scalar)
        allowed[(f"{package}.numeric", "_frombuffer")] = _sealed(_frombuffer)  # protocol 5
    return allowed


class ArrayUnpickler(pickle.Unpickler):
    """Unpickles containers, strings, numbers and the objects of `allowed` (module, name) -> stand-in;
    any other global (a class or function the pickle would call, e.g. `os.system`) is refused, naming
    it. Persistent ids (torch's storages) go to `storage`, or are refused without one."""

    def __init__(self, handle, allowed: dict[tuple[str, str], object], storage=None):
        super().__init__(handle, encoding="latin1")  # latin1: Python 2 pickles' byte strings
        self.allowed = allowed
        self.storage = storage

    def find_class(self, module: str, name: str):
        if (module, name) not in self.allowed:
            what = f"{module[:SHOWN_CHARS]}.{name[:SHOWN_CHARS]}".encode("unicode_escape").decode()
            raise Refused(
                f"a call to {what}, which a checkpoint of arrays does not need (only containers, strings,"
                " numbers and arrays are read)"
            )
        return self.allowed[(module, name)]

    def persistent_load(self, pid):
        if self.storage is None:
            raise Refused("persistent ids")
        return self.storage(pid)


# --- torch zip files -------------------------------------------------------------------------------

# torch's storage types -> NumPy dtype and safetensors' name; bfloat16 (no NumPy dtype) travels as its
# 16 raw bits.
STORAGES = {
    "HalfStorage": ("f2", "F16"),
    "BFloat16Storage": ("u2", "BF16"),
    "FloatStorage": ("f4", "F32"),
    "DoubleStorage": ("f8", "F64"),
    "CharStorage": ("i1", "I8"),
    "ShortStorage": ("i2", "I16"),
    "IntStorage": ("i4", "I32"),
    "LongStorage": ("i8", "I64"),
    "ByteStorage": ("u1", "U8"),
    "BoolStorage": ("b1", "BOOL"),
}
TORCH_DTYPES = (
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "bool",
)


class StorageType(NamedTuple):
    name: str  # torch's, e.g. FloatStorage


class TorchDtype(NamedTuple):
    name: str  # e.g. float32


class Storage(NamedTuple):
    array: np.ndarray  # 1-D, the record's elements
    tag: str  # safetensors' dtype name


class Tensor(NamedTuple):
    """A tensor of a torch file: its elements, C-contiguous, and safetensors' dtype name."""

    array: np.ndarray
    tag: str


class MetaTensor:
    """A tensor saved from the meta device: a shape and a dtype, no data."""

    __slots__ = ()


META = MetaTensor()


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, metadata=None) -> Tensor:
    """`torch._utils._rebuild_tensor_v2`: the elements of `storage` that `offset`, `size` and `stride`
    select (every one inside the storage), copied into a C-contiguous array."""
    if not isinstance(storage, Storage):
        raise Refused(f"a tensor on {sketch(storage)}, not on a storage")
    size = _checked_shape(size)
    if (
        not isinstance(stride, tuple)
        or len(stride) != len(size)
        or not all(_is_int(s) and s >= 0 for s in stride)
    ):
        raise Refused(f"a tensor stride that is not {len(size)} sizes: {sketch(stride)}")
    if not _is_int(offset) or offset < 0:
        raise Refused(f"a tensor offset of {sketch(offset)}")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if math.prod(size) else offset - 1
    if last >= len(storage.array):
        raise Refused(f"a tensor reaching element {last} of a storage of {len(storage.array)}")
    itemsize = storage.array.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage.array[offset:], size, [s * itemsize for s in stride], writeable=False
    )
    return Tensor(view.copy(), storage.tag)  # C order; 0-d stays 0-d (ascontiguousarray: 1-d)


def _rebuild_parameter(data, requires_grad, hooks) -> Tensor:
    """`torch._utils._rebuild_parameter`: an `nn.Parameter`, as its tensor."""
    if not isinstance(data, (Tensor, MetaTensor)):
        raise Refused(f"a parameter of {sketch(data)}, not of a tensor")
    return data


def _rebuild_meta(dtype, size, stride, requires_grad) -> MetaTensor:
    """`torch._utils._rebuild_meta_tensor_no_storage`: a tensor without data (refused by `state_dict`)."""
    return META


def torch_globals() -> dict[tuple[str, str], object]:
    """What a `torch.save`d state dict's pickle names: tensors, parameters, meta tensors, storage types
    and dtypes (as markers), OrderedDict and the byte constructors of NumPy-free pickles."""
    allowed = {
        ("torch._utils", "_rebuild_tensor_v2"): _sealed(_rebuild_tensor_v2),
        ("torch._utils", "_rebuild_parameter"): _sealed(_rebuild_parameter),
        ("torch._utils", "_rebuild_meta_tensor_no_storage"): _sealed(_rebuild_meta),
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("_codecs", "encode"): _sealed(_latin1_bytes),
    }
    allowed.update({("torch", name): StorageType(name) for name in STORAGES})
    allowed.update({("torch", name): TorchDtype(name) for name in TORCH_DTYPES})
    return allowed


class TorchArchive:
    """The records of a torch zip file: `data.pkl`, the byte order, and each storage (`storage`, the
    unpickler's persistent_load), read once each; only stored (uncompressed) records are read."""

    def __init__(self, archive: zipfile.ZipFile):
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise Unfit(f"is not a torch file: {len(pickles)} data.pkl records (one expected)")
        compressed = [
            info.filename for info in archive.infolist() if info.compress_type != zipfile.ZIP_STORED
        ]
        if compressed:
            raise Unfit(
                f"has {len(compressed)} compressed records, e.g. {sketch(compressed[0])} (torch.save writes"
                " them stored: a compressed one can expand without bound)"
            )
        self.archive = archive
        self.prefix = pickles[0][: -len("data.pkl")]
        order = self.record("byteorder", optional=True) or b"little"
        if order not in (b"little", b"big"):
            raise Unfit(f"has a byte order of {sketch(order)}")
        self.order = "<" if order == b"little" else ">"
        self.storages: dict[str, Storage] = {}

    def record(self, name: str, optional: bool = False) -> bytes | None:
        try:
            return self.archive.read(self.prefix + name)
        except KeyError:
            if optional:
                return None
            raise Unfit(f"has no record {sketch(name)}") from None

    def storage(self, pid: object) -> Storage:
        """A persistent id ("storage", storage type, key, location, elements) as the record's array."""
        if not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage":
            raise Refused(f"a persistent id of {sketch(pid)}, not a storage")
        _, kind, key, _, count = pid
        if not isinstance(kind, StorageType) or not isinstance(key, str) or not _is_int(count):
            raise Refused(f"a storage of {sketch(kind)} under {sketch(key)}")
        if key not in self.storages:
            typestr, tag = STORAGES[kind.name]
            dtype = np.dtype(typestr).newbyteorder(self.order)
            data = self.record(f"data/{key}")
            if len(data) != count * dtype.itemsize:
                raise Refused(f"a storage of {count} elements in a record of {len(data)} bytes")
            self.storages[key] = Storage(np.frombuffer(data, dtype), tag)
        return self.storages[key]


def read_torch(handle) -> object:
    """The object a torch zip file holds, storages as NumPy arrays; nothing may follow data.pkl's STOP."""
    try:
        archive = zipfile.ZipFile(handle)
    except zipfile.BadZipFile as error:
        raise Unfit(f"is not a readable torch file: {error}") from None
    with archive:
        torch_file = TorchArchive(archive)
        pickled = io.BytesIO(torch_file.record("data.pkl"))
        data = ArrayUnpickler(pickled, torch_globals(), torch_file.storage).load()
        check_end(len(pickled.getbuffer()) - pickled.tell())
    return data


def read_pickle(handle) -> object:
    """The object a detectron2 pickle holds; nothing may follow its STOP."""
    data = ArrayUnpickler(handle, numpy_globals()).load()
    check_end(len(handle.read(1 << 20)))
    return data


def check_end(trailing: int) -> None:
    """Refuse bytes after the pickle's STOP: a file joined to another, or a pickle cut short by a forged
    STOP, is not a checkpoint whose other tensors can be trusted."""
    if trailing:
        raise Unfit(f"has {trailing}{'+' if trailing >= 1 << 20 else ''} bytes after its pickle's end (STOP)")


# --- the state dict --------------------------------------------------------------------------------

SAFETENSORS_DTYPES = {
    "f2": "F16", "f4": "F32", "f8": "F64", "i1": "I8", "i2": "I16", "i4": "I32", "i8": "I64",
    "u1": "U8", "u2": "U16", "u4": "U32", "u8": "U64", "b1": "BOOL",
}  # fmt: skip


def as_tensor(value: object) -> Tensor | None:
    """A checkpoint value as a tensor (a NumPy array of plain numbers keeps its shape, 0-d included), or
    None for anything else (a number, a string, a container)."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        tag = SAFETENSORS_DTYPES.get(f"{value.dtype.kind}{value.dtype.itemsize}")
        return None if tag is None else Tensor(value, tag)
    return None


def check_key(key: object) -> str:
    """A tensor's name, which must be a printable string of at most MAX_KEY_CHARS (it is printed)."""
    if not isinstance(key, str):
        raise Unfit(f"has a tensor under {sketch(key)}, not under a name")
    if len(key) > MAX_KEY_CHARS:
        raise Unfit(f"has a tensor name of {len(key)} characters (at most {MAX_KEY_CHARS}): {sketch(key)}")
    if not key.isprintable():
        raise Unfit(f"has a tensor name with unprintable characters: {sketch(key)}")
    return key


def state_dict(data: object) -> dict[str, Tensor]:
    """The tensors of a checkpoint: the file's dict, or its "model" / "state_dict" entry. Dict methods are
    called on the class (a pickled OrderedDict's state may shadow `get` or `items`)."""
    if not isinstance(data, dict):
        raise Unfit(f"holds {sketch(data)}, expected a state dict")
    for wrapper in ("model", "state_dict"):
        inner = dict.get(data, wrapper)
        if isinstance(inner, dict):
            data = inner
    tensors, meta = {}, []
    for key, value in dict.items(data):
        if isinstance(value, MetaTensor):
            meta.append(check_key(key))
        tensor = as_tensor(value)
        if tensor is not None:
            tensors[check_key(key)] = tensor
    if meta:
        raise Unfit(
            f"has {len(meta)} tensors without data (saved from the meta device), e.g. {sketch(meta[0])}"
        )
    if not tensors:
        raise Unfit("holds no tensors")
    return tensors


def read_tensors(path: Path) -> dict[str, Tensor]:
    """The tensors of checkpoint `path` (`.pkl`: a detectron2 pickle; else a torch zip file), read
    through a plain file handle."""
    with path.open("rb") as handle:
        if path.suffix == ".pkl":
            data = read_pickle(handle)
        else:
            data = read_torch(handle)
    return state_dict(data)


def write_safetensors(path: str, tensors: dict[str, Tensor]) -> None:
    """`tensors` as a safetensors file (an 8-byte header length, a JSON header of dtypes, shapes and
    offsets, then each tensor's little-endian bytes): each array is written from its own buffer,
    where safetensors' NumPy writer would first copy all of them into bytes."""
    arrays = [np.require(t.array, t.array.dtype.newbyteorder("<"), ["C"]) for t in tensors.values()]
    header, offset = {}, 0
    for key, tensor, array in zip(tensors, tensors.values(), arrays):
        header[key] = {
            "dtype": tensor.tag,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)  # the format aligns the data to 8 bytes
    with open(path, "xb") as out:
        out.write(struct.pack("<Q", len(text)) + text)
        for array in arrays:
            out.write(memoryview(array.reshape(-1)).cast("B"))


def check_size(tensors: dict[str, Tensor], limit: int) -> None:
    """Refuse tensors whose bytes exceed `limit` (one array under many names is written once per name)."""
    total = sum(t.array.nbytes for t in tensors.values())
    if total > limit:
        raise Unfit(f"has tensors of {total} bytes in all, more than the reader's limit of {limit}")


def apply_limits(memory: int, cpu_s: int) -> None:
    """This process's hard limits: address space `memory`, CPU time `cpu_s` (SIGXCPU, then SIGKILL a
    second later), written files `memory`, no core file, and the recursion limit."""
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.setrecursionlimit(RECURSION_LIMIT)


def main(argv: list[str]) -> int:
    """Read argv's FILE into OUT under its limits; the exit status and stdout line as the module says."""
    source, out, memory, cpu_s = argv[0], argv[1], int(argv[2]), int(argv[3])
    apply_limits(memory, cpu_s)
    try:
        tensors = read_tensors(Path(source))
        check_size(tensors, memory)
        write_safetensors(out, tensors)
    except MemoryError:
        return MEMORY_STATUS
    except Refused as error:
        print(f"refused: its pickle has {error}")
        return REFUSED_STATUS
    except Unfit as error:
        print(error)
        return REFUSED_STATUS
    except Exception as error:  # a truncated or corrupt file fails in many ways
        kind = "pickle" if source.endswith(".pkl") else "torch file"
        reason = str(error)[:300]
        print(f"is not a readable {kind}: {type(error).__name__}" + (f": {reason}" if reason else ""))
        return REFUSED_STATUS
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
