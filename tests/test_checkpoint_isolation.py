"""Untrusted checkpoints are read in a child process with hard limits (ifrvis/modeling/isolated_read.py)
and their data is checked: one small generated file per way a file once crashed, hung, exhausted or
fooled the in-process reader, each read by the whole `ifrvis weights` path in the sandbox
(checkpoint_sandbox.py), ending in one line with its documented exit status, no signal in the process
that loads it, in bounded time and memory."""

from __future__ import annotations

import collections
import io
import pickle
import signal
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY_CONFIG
from test_checkpoint_fuzz import call, run_sandbox, small, text, verdict

from ifrvis.cli import main as cli_main
from ifrvis.config import load_config
from ifrvis.modeling import build_model, load_weights
from ifrvis.modeling.isolated_read import (
    CheckpointError,
    Limits,
    ending,
    limits_for,
    read_isolated,
    scratch_dir,
)
from ifrvis.modeling.weights import is_own_output, read_checkpoint

SHIPPED = ROOT / "checkpoints" / "synthetic_tiny_pretrained.pth"
STEM = "backbone.stem.0.weight"  # (32, 3, 3, 3) float32 in the tiny model
PROTOCOL_2 = pickle.PROTO + b"\x02"
# The reader's limits for a small file (limits_for): 10 s of CPU time, 30 s of wall clock; a refusal
# must come within them and the sandbox's fork and report.
MAX_SECONDS = 45


def deep_key(depth: int = 300_000) -> bytes:
    """Pickle ops leaving a dict key of tuples nested `depth` deep: hashing it recurses in C."""
    return pickle.EMPTY_TUPLE + pickle.TUPLE1 * depth


def exponential_key(levels: int = 100) -> bytes:
    """Pickle ops leaving t_levels, where t_0 = () and t_(i+1) = (t_i, t_i): 2 * levels + 1 bytes whose
    hash visits 2**levels tuples."""
    return pickle.EMPTY_TUPLE + (pickle.DUP + pickle.TUPLE2) * levels


def pickled_dict_with_key(key_ops: bytes) -> bytes:
    return PROTOCOL_2 + pickle.EMPTY_DICT + key_ops + pickle.NONE + pickle.SETITEM + pickle.STOP


def torch_zip(data_pkl: bytes, compression: int = zipfile.ZIP_STORED) -> bytes:
    """A torch zip file (as `torch.save` lays it out) whose data.pkl is `data_pkl`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl, compress_type=compression)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
    return buffer.getvalue()


def tiny_arrays() -> dict[str, np.ndarray]:
    """The tiny model's backbone as NumPy arrays (a detectron2-style file's content)."""
    model = build_model(load_config(TINY_CONFIG, ["model.weights="]).model)
    return {k: v.numpy() for k, v in model.state_dict().items() if k.startswith("backbone.")}


def with_nan() -> bytes:
    arrays = tiny_arrays()
    arrays[STEM] = arrays[STEM].copy()
    arrays[STEM].flat[[0, 5, 9]] = np.nan
    arrays[STEM].flat[20] = -np.inf
    return pickle.dumps({"model": arrays}, protocol=2)


def with_integer_weights() -> bytes:
    arrays = tiny_arrays()
    arrays[STEM] = arrays[STEM].astype(np.int8)
    arrays["backbone.stem.1.weight"] = arrays["backbone.stem.1.weight"] > 0
    return pickle.dumps({"model": arrays}, protocol=2)


def meta_pth() -> bytes:
    buffer = io.BytesIO()
    torch.save({"model": {STEM: torch.empty(32, 3, 3, 3, device="meta")}}, buffer)
    return buffer.getvalue()


def shadowing_ordered_dict() -> bytes:
    """An OrderedDict of the tiny backbone whose pickled state sets attributes `get` and `items` (set
    under other names: pickling would call them)."""
    ordered = collections.OrderedDict(model=tiny_arrays())
    ordered.gex, ordered.itemx = 1, 2
    data = pickle.dumps(ordered, protocol=2)
    return data.replace(b"\x03\x00\x00\x00gex", b"\x03\x00\x00\x00get").replace(b"itemx", b"items")


def integer_key(length: int = 100_000) -> bytes:
    """{"model": {<an integer of `length` bytes>: an array}}."""
    array_ops = pickle.dumps(np.zeros(1, np.float32), protocol=2)[2:-1]  # without PROTO and STOP
    key = pickle.LONG4 + length.to_bytes(4, "little") + b"\x01" * length
    model = pickle.EMPTY_DICT + key + array_ops + pickle.SETITEM
    return PROTOCOL_2 + pickle.EMPTY_DICT + text("model") + model + pickle.SETITEM + pickle.STOP


# name -> (suffix, contents, exit status, what the one stderr line says: none after a complete load)
CASES = {
    "a deep dict key in a .pth's data.pkl": (
        ".pth",
        torch_zip(pickled_dict_with_key(deep_key())),
        2,
        "reader process was killed by signal 11 (SIGSEGV)",
    ),
    "MARK then POP before a deep dict key": (
        ".pkl",
        PROTOCOL_2
        + pickle.EMPTY_DICT
        + pickle.MARK
        + pickle.POP
        + deep_key()
        + pickle.NONE
        + pickle.SETITEM
        + b".",
        2,
        "reader process was killed by signal 11 (SIGSEGV)",
    ),
    "bytearray(2**40) in a .pth": (
        ".pth",
        torch_zip(PROTOCOL_2 + call("builtins", "bytearray", small(1 << 40)) + pickle.STOP),
        2,
        "a call to builtins.bytearray",
    ),
    "a memo index far beyond the file": (
        ".pkl",
        PROTOCOL_2 + pickle.EMPTY_DICT + pickle.LONG_BINPUT + (1 << 28).to_bytes(4, "little") + pickle.STOP,
        2,
        "more than the reader's memory limit of",
    ),
    "a .pth's data.pkl deflated from 64 MB of no-ops": (
        ".pth",
        torch_zip(
            PROTOCOL_2 + (pickle.NONE + pickle.POP) * (32 << 20) + pickle.NONE + b".", zipfile.ZIP_DEFLATED
        ),
        2,
        "compressed records",
    ),
    "a dict key whose hash visits 2**100 tuples": (
        ".pkl",
        pickled_dict_with_key(exponential_key()),
        2,
        "more than the reader's CPU time limit of 10 s",
    ),
    "a tensor name of 100 000 dotted parts": (
        ".pkl",
        pickle.dumps({"model": {"a." * 50_000 + "w": np.zeros(1, np.float32)}}, protocol=2),
        2,
        "tensor name of 100001 characters (at most 256): 'a.a.a.",
    ),
    "a tensor under an integer key of 800 000 bits": (
        ".pkl",
        integer_key(),
        2,
        "has a tensor under an integer of 799993 bits, not under a name",
    ),
    "NaN and Inf weights": (".pkl", with_nan(), 2, f"NaN or Inf values in 1 tensors: {STEM} (4 of 864)"),
    "a tensor saved from the meta device": (
        ".pth",
        meta_pth(),
        2,
        f"1 tensors without data (saved from the meta device), e.g. '{STEM}'",
    ),
    "float parameters stored as int8 and bool": (".pkl", with_integer_weights(), 1, "2 mismatched"),
    "bytes after the pickle's STOP": (
        ".pkl",
        pickle.dumps({"model": tiny_arrays()}, protocol=2) + b"junk",
        2,
        "has 4 bytes after its pickle's end (STOP)",
    ),
    "an OrderedDict whose state shadows get and items": (".pkl", shadowing_ordered_dict(), 0, ""),
}


@pytest.fixture(scope="module")
def case_results(tmp_path_factory):
    """name -> how reading its file through `ifrvis weights`'s path ended (checkpoint_sandbox.py)."""
    folder = tmp_path_factory.mktemp("cases")
    files = []
    for index, (suffix, data, _, _) in enumerate(CASES.values()):
        files.append(folder / f"case{index}{suffix}")
        files[-1].write_bytes(data)
    results = run_sandbox(files, folder / "cwd")
    assert list((folder / "cwd").iterdir()) == []  # no file written where the reads ran
    return dict(zip(CASES, results))


@pytest.mark.parametrize("name", list(CASES))
def test_each_kind_of_hostile_file_ends_in_one_line_with_its_exit_status(case_results, name):
    result = case_results[name]
    _, _, status, expected = CASES[name]
    assert result["signal"] is None and result["exit"] == status, (name, result)
    assert verdict(result) == ("refused" if status == 2 else "loaded"), (name, result)
    lines = result["stderr"].splitlines()
    if status == 0:  # a complete load logs its summary at info level: nothing on stderr
        assert lines == [], (name, lines)
    else:
        assert len(lines) == 1 and expected in lines[0], (name, lines)
    assert result["seconds"] < MAX_SECONDS, (name, result["seconds"])


def test_an_integer_or_boolean_source_for_a_float_parameter_is_a_dtype_mismatch(tmp_path, capsys):
    path = tmp_path / "integers.pkl"
    path.write_bytes(with_integer_weights())
    report = load_weights(build_model(load_config(TINY_CONFIG, ["model.weights="]).model), path)
    found = {m.key: (m.dtype, m.model_dtype) for m in report.mismatches}
    assert found == {STEM: ("int8", "float32"), "backbone.stem.1.weight": ("bool", "float32")}
    assert not report.complete and STEM not in report.loaded and report.missing == []
    assert f"{STEM}: int8 vs {STEM}: float32" in report.mismatched
    assert cli_main(["weights", str(TINY_CONFIG), str(path)]) == 1
    out = capsys.readouterr().out
    assert "mismatched: 2" in out and "int8 in the file vs float32" in out


def test_the_wall_clock_limit_ends_a_reader_that_does_not_finish(tmp_path):
    path = tmp_path / "hang.pkl"
    path.write_bytes(pickled_dict_with_key(exponential_key()))
    start = time.monotonic()
    with pytest.raises(CheckpointError, match=rf"^model.weights: {path} refused: .*time limit of 2 s$"):
        read_isolated(path, Limits(memory_bytes=1 << 30, cpu_s=100, wall_s=2))
    assert time.monotonic() - start < 10


def test_the_limits_grow_with_the_file():
    small_file, large_file = limits_for(1000), limits_for(1 << 30)
    assert small_file.cpu_s == 10 and small_file.wall_s == 30 and small_file.memory_bytes < 1100 << 20
    assert large_file.cpu_s == 10 + 20 and large_file.memory_bytes == (1 << 30) + 4 * (1 << 30)


@pytest.mark.parametrize(
    "returncode, answer, expected",
    [
        (0, "", None),
        (2, "refused: its pickle has persistent ids\n", "refused: its pickle has persistent ids"),
        (3, "", "refused: reading it needs more than the reader's memory limit of 1024 MB"),
        (-signal.SIGXCPU, "", "refused: reading it takes more than the reader's CPU time limit of 10 s"),
        (-signal.SIGBUS, "", "refused: the reader process was killed by signal 7 (SIGBUS) while reading it"),
        (2, "a\x1b[2Jb\nc", "a\\x1b[2Jb c"),  # one line, no control character reaches the terminal
        (1, "", "refused: the reader process ended with status 1"),
    ],
)
def test_how_the_reader_ended_is_one_phrase(returncode, answer, expected):
    assert ending(returncode, answer, limits_for(0)) == expected


def test_the_shipped_checkpoint_loads_in_process_and_reads_the_same_in_the_child(tmp_path):
    """The project's own file (its provenance record names its sha256) takes the fast path; a copy
    without the record, or with a record of another sha256, is read by the child, which gives the
    same tensors as `torch.load`."""
    assert is_own_output(SHIPPED)
    copy = tmp_path / SHIPPED.name
    copy.write_bytes(SHIPPED.read_bytes())
    assert not is_own_output(copy)
    (tmp_path / f"{SHIPPED.name}.json").write_text('{"sha256": "0000"}')
    assert not is_own_output(copy)
    own, isolated = read_checkpoint(SHIPPED), read_isolated(copy)
    assert sorted(own) == sorted(isolated)
    for key, tensor in own.items():
        assert isolated[key].dtype == tensor.dtype and torch.equal(isolated[key], tensor), key


def test_a_torch_file_of_views_and_dtypes_reads_as_torch_reads_it(tmp_path):
    """Views (a transposed tensor sharing its storage), 0-d tensors, parameters, bfloat16 and every
    integer dtype: the child's torch-free reader gives what `torch.load` gives."""
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {
        "base": base,
        "transposed": base.t(),
        "row": base[2],
        "scalar": torch.tensor(7),
        "parameter": torch.nn.Parameter(torch.ones(3, dtype=torch.float64)),
        "bfloat16": torch.linspace(-2, 2, 5, dtype=torch.bfloat16),
        **{str(d): torch.arange(4).to(d) for d in (torch.int8, torch.int16, torch.int32, torch.uint8)},
        "bool": torch.tensor([True, False]),
        "half": torch.full((2, 2), 0.5, dtype=torch.float16),
    }
    path = tmp_path / "views.pth"
    torch.save({"state_dict": state}, path)
    read = read_isolated(path)
    assert sorted(read) == sorted(state)
    for key, tensor in state.items():
        assert read[key].dtype == tensor.dtype and read[key].shape == tensor.shape, key
        assert torch.equal(read[key], tensor.detach()), key


def test_a_file_rewritten_while_it_is_read_loads_or_is_refused_in_one_line(tmp_path):
    """A `cp` over the file during a read (truncated, then written again) once killed the in-process
    reader with SIGBUS through its memory map. The child reads through a plain handle: each read here,
    racing a writer that truncates and rewrites the file, gives the whole state or one CheckpointError
    line, and leaves no scratch folder behind."""
    arrays = {f"layer{i}.weight": np.full((1024, 1024), i, dtype=np.float32) for i in range(8)}
    whole = pickle.dumps({"model": arrays}, protocol=4)  # 32 MB: a read long enough to be raced
    path = tmp_path / "rewritten.pkl"
    path.write_bytes(whole)
    stop = threading.Event()

    def rewrite():
        cut = 0
        while not stop.is_set():
            cut = (cut + 7_654_321) % len(whole)
            with open(path, "r+b") as handle:
                handle.truncate(cut)
                handle.flush()
                time.sleep(0.01)
                handle.seek(cut)
                handle.write(whole[cut:])
            time.sleep(0.2)  # whole again for a while: some reads may finish

    scratch = Path(scratch_dir(len(whole)) or tempfile.gettempdir())
    scratch_before = set(scratch.glob("ifrvis-weights-*"))
    writer = threading.Thread(target=rewrite, daemon=True)
    writer.start()
    outcomes = []
    try:
        for _ in range(4):
            try:
                read = read_isolated(path)
            except CheckpointError as error:
                assert "\n" not in str(error) and str(error).startswith(f"model.weights: {path} "), error
                outcomes.append("refused")
            else:
                assert sorted(read) == sorted(arrays)
                for key, values in arrays.items():
                    assert torch.equal(read[key], torch.from_numpy(values)), key
                outcomes.append("loaded")
    finally:
        stop.set()
        writer.join()
    assert len(outcomes) == 4
    assert set(scratch.glob("ifrvis-weights-*")) == scratch_before
