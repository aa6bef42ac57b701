"""A checkpoint reader that no file can crash, tested as attackers work: hand-made attack pickles (code,
forged NumPy dtypes, object arrays, bad array states, pickles that crash or exhaust the reader) and
mutations (byte flips, truncations, opcode swaps) of a detectron2-style .pkl and a torch .pth (its
data.pkl and its zip records): 150 and 75 in `make test`, as many as asked for a longer fuzz
(`IFRVIS_FUZZ_MUTANTS=3000` takes the .pkl to 3000 and the .pth to 1500; about 0.3 s a file). Every
file is read by the whole `ifrvis weights` path in a forked child of one sandbox process
(checkpoint_sandbox.py), so that a segmentation fault of that path is one failed result: each must load
or be refused with one line (exit status 2), with no signal, no traceback and no file written. The
reader's own process (isolated_read.py) may crash: that is one refusal line."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import pickletools
import random
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY_CONFIG

SANDBOX = ROOT / "tests" / "checkpoint_sandbox.py"
ERROR_PREFIX = "ifrvis weights: error: model.weights: "
SEED = 22


def run_sandbox(files: list[Path], workdir: Path, cli: bool = False) -> list[dict]:
    """How reading each of `files` ended (checkpoint_sandbox.py), the children running in `workdir`."""
    workdir.mkdir(exist_ok=True)
    args = [sys.executable, str(SANDBOX), *(["--cli"] if cli else []), str(TINY_CONFIG), str(workdir)]
    done = subprocess.run([*args, *map(str, files)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


MAX_GROWTH_MB = 256  # the largest array here is 1 kB; a file must not make the reader allocate more


def verdict(result: dict) -> str:
    """ "loaded", "refused", or what is wrong: a signal, a traceback, more than one line, memory."""
    lines = result["stderr"].splitlines()
    if result["signal"] is not None:
        return f"signal {result['signal']}"
    if result["grown_mb"] > MAX_GROWTH_MB:
        return f"grew by {result['grown_mb']} MB"
    if "Traceback" in result["stderr"] or result["exit"] not in (0, 1, 2):
        return f"exit {result['exit']}: {result['stderr'][-2000:]}"
    if result["exit"] == 2:
        return "refused" if len(lines) == 1 and lines[0].startswith(ERROR_PREFIX) else f"refused: {lines}"
    # loaded (0: complete, 1: tensors missing or mismatched): at most the logged summary line
    return "loaded" if len(lines) <= 1 else f"loaded, but stderr: {lines}"


# --- hand-made pickles, opcode by opcode -----------------------------------------------------------


def text(value: str) -> bytes:
    data = value.encode()
    return pickle.SHORT_BINUNICODE + bytes([len(data)]) + data


def raw(data: bytes) -> bytes:
    return pickle.SHORT_BINBYTES + bytes([len(data)]) + data


def small(n: int) -> bytes:
    if 0 <= n < 256:
        return pickle.BININT1 + bytes([n])
    if -(2**31) <= n < 2**31:
        return pickle.BININT + struct.pack("<i", n)
    data = n.to_bytes(n.bit_length() // 8 + 1, "little", signed=True)
    return pickle.LONG1 + bytes([len(data)]) + data


def glob(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def call(module: str, name: str, *args: bytes) -> bytes:
    return glob(module, name) + pickle.MARK + b"".join(args) + pickle.TUPLE + pickle.REDUCE


def build(*state: bytes) -> bytes:
    return pickle.MARK + b"".join(state) + pickle.TUPLE + pickle.BUILD


def dtype(typestr: str, order: str = "<", names=pickle.NONE, fields=pickle.NONE, sizes=(-1, -1), flags=0):
    """`numpy.dtype(typestr, False, True)` and its BUILD state as NumPy writes it (defaults: plain)."""
    made = call("numpy", "dtype", text(typestr), pickle.NEWFALSE, pickle.NEWTRUE)
    return made + build(small(3), text(order), pickle.NONE, names, fields, *map(small, sizes), small(flags))


def array(dtype_ops: bytes, shape: tuple[int, ...], data: bytes) -> bytes:
    """`_reconstruct(ndarray, (0,), b'b')` and its BUILD state (1, shape, dtype, fortran, data)."""
    made = call(
        "numpy._core.multiarray",
        "_reconstruct",
        glob("numpy", "ndarray"),
        small(0) + pickle.TUPLE1,
        raw(b"b"),
    )
    shape_ops = pickle.MARK + b"".join(map(small, shape)) + pickle.TUPLE
    return made + build(small(1), shape_ops, dtype_ops, pickle.NEWFALSE, raw(data))


def checkpoint(value: bytes) -> bytes:
    """A protocol-3 pickle of {"model": {"w": value}}."""
    inner = pickle.EMPTY_DICT + text("w") + value + pickle.SETITEM
    return pickle.PROTO + b"\x03" + pickle.EMPTY_DICT + text("model") + inner + pickle.SETITEM + pickle.STOP


class RunsCommand:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def attacks(marker: Path) -> dict[str, tuple[str, bytes, str]]:
    """name -> (file suffix, file contents, what the one-line error says); those that run code would
    create `marker`."""
    touch = f"touch {marker}"
    plain_f4 = dtype("f4")
    # a V8 dtype with one object field whose flags (1: holds references, without 2: "pickled as a list")
    # make NumPy copy the file's 8 bytes in as a PyObject pointer, then follow it (a segmentation fault
    # before structured dtypes were refused)
    object_field = dtype("O8", order="|", flags=63)
    forged = dtype(
        "V8",
        order="|",
        names=text("f0") + pickle.TUPLE1,
        fields=pickle.EMPTY_DICT + text("f0") + object_field + small(0) + pickle.TUPLE2 + pickle.SETITEM,
        sizes=(8, 1),
        flags=1,
    )
    saved = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(2)}, "x": RunsCommand(touch)}, saved)
    good_pth = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(2)}}, good_pth)
    reconstruct = ("numpy._core.multiarray", "_reconstruct")
    empty = (small(0) + pickle.TUPLE1, raw(b"b"))
    list_state = build(small(1), small(1) + pickle.TUPLE1, plain_f4, pickle.NEWFALSE, pickle.EMPTY_LIST)
    plain_state = (small(3), text("<"), *[pickle.NONE] * 3, small(-1), small(-1), small(0))
    nine_by_nine = small(9) + small(9) + pickle.TUPLE2
    protocol_2 = pickle.PROTO + b"\x02"
    slots = pickle.EMPTY_DICT + text("__defaults__") + text("C") + pickle.TUPLE1 + pickle.SETITEM
    return {
        "os.system via __reduce__": (
            ".pkl",
            pickle.dumps({"model": RunsCommand(touch)}, protocol=2),
            "system",
        ),
        "INST": (".pkl", f"(S'{touch}'\nios\nsystem\n.".encode(), "a call to os.system"),
        "builtins.eval": (
            ".pkl",
            protocol_2 + call("builtins", "eval", text("1")) + pickle.STOP,
            "builtins.eval",
        ),
        "copyreg": (
            ".pkl",
            b"ccopyreg\n_reconstructor\n(c__builtin__\nobject\nc__builtin__\nobject\nNtR.",
            "a call to copyreg._reconstructor",
        ),
        "_reconstruct with a foreign subtype": (
            ".pkl",
            checkpoint(call(*reconstruct, glob("collections", "OrderedDict"), *empty)),
            "_reconstruct of OrderedDict with shape a tuple of 1 items",
        ),
        "EXT1": (".pkl", protocol_2 + pickle.EXT1 + b"\x01" + pickle.STOP, "not a readable pickle"),
        "persistent id": (".pkl", protocol_2 + text("x") + pickle.BINPERSID + pickle.STOP, "persistent ids"),
        "_codecs.encode other than latin-1": (
            ".pkl",
            checkpoint(call("_codecs", "encode", text("x"), text("zlib"))),
            "encoding 'zlib'",
        ),
        "forged V8 dtype with an object field": (
            ".pkl",
            checkpoint(array(forged, (1,), b"A" * 8)),
            "structured dtype 'V8'",
        ),
        "object dtype": (
            ".pkl",
            checkpoint(array(dtype("O8", order="|", flags=63), (1,), b"A" * 8)),
            "object dtype 'O8'",
        ),
        "flags on a float dtype": (".pkl", checkpoint(array(dtype("f8", flags=63), (1,), b"A" * 8)), "flags"),
        "fields on a float dtype": (
            ".pkl",
            checkpoint(array(dtype("f4", names=text("a") + pickle.TUPLE1), (1,), b"A" * 4)),
            "fields or flags",
        ),
        "a dtype built twice": (
            ".pkl",
            checkpoint(array(plain_f4 + build(*plain_state), (1,), b"A" * 4)),
            "state twice",
        ),
        "array data shorter than its shape": (
            ".pkl",
            checkpoint(array(plain_f4, (1000, 1000), b"A" * 8)),
            "array data of 8 bytes",
        ),
        "array data as a list": (
            ".pkl",
            checkpoint(call(*reconstruct, glob("numpy", "ndarray"), *empty) + list_state),
            "not bytes",
        ),
        "_frombuffer of the wrong length": (
            ".pkl",
            checkpoint(
                call("numpy._core.numeric", "_frombuffer", raw(b"A" * 4), plain_f4, nine_by_nine, text("C"))
            ),
            "array data of 4 bytes",
        ),
        "scalar of the wrong length": (
            ".pkl",
            checkpoint(call("numpy._core.multiarray", "scalar", dtype("f8"), raw(b"A" * 3))),
            "array data of 3 bytes",
        ),
        "NEWOBJ of numpy.ndarray": (
            ".pkl",
            checkpoint(glob("numpy", "ndarray") + small(1 << 30) + pickle.TUPLE1 + pickle.NEWOBJ),
            "not a readable pickle",
        ),
        "a dict key of tuples nested 300000 deep": (  # hashing it overflows the reader's C stack
            ".pkl",
            checkpoint(array(plain_f4, (1,), b"A" * 4))[:-2]
            + pickle.EMPTY_TUPLE
            + pickle.TUPLE1 * 300_000
            + raw(b"v")
            + pickle.SETITEM * 2
            + pickle.STOP,
            "killed by signal 11 (SIGSEGV)",
        ),
        "a memo index far beyond the file": (  # the memo grows to the index: 4.9 GB for 9 bytes
            ".pkl",
            protocol_2 + pickle.EMPTY_DICT + pickle.LONG_BINPUT + struct.pack("<I", 1 << 28) + pickle.STOP,
            "memory limit",
        ),
        "a frame longer than the file": (
            ".pkl",
            pickle.PROTO + b"\x04" + pickle.FRAME + struct.pack("<Q", 1 << 40) + pickle.STOP,
            "memory limit",
        ),
        "BUILD setting _frombuffer's defaults": (  # they stayed set for the rest of the process
            ".pkl",
            checkpoint(glob("numpy._core.numeric", "_frombuffer") + build(pickle.NONE, slots)),
            "no attribute '__defaults__'",
        ),
        "an empty array of 2**62 columns": (
            ".pkl",
            checkpoint(array(plain_f4, (0, 2**62), b"")),
            "more than 2**48 elements",
        ),
        ".pth calling os.system": (".pth", saved.getvalue(), "a call to posix.system"),
        "truncated .pth": (".pth", good_pth.getvalue()[:300], "is not a readable torch file"),
    }


@pytest.fixture(scope="module")
def attack_results(tmp_path_factory):
    """name -> (how reading it ended through the whole `ifrvis weights` command, the attack), and the
    marker a code-running attack would create."""
    folder = tmp_path_factory.mktemp("attacks")
    marker = folder / "pwned"
    named = attacks(marker)
    files = []
    for index, (suffix, data, _) in enumerate(named.values()):
        files.append(folder / f"attack{index}{suffix}")
        files[-1].write_bytes(data)
    results = run_sandbox(files, folder / "cwd", cli=True)
    return dict(zip(named, zip(results, named.values()))), marker, folder / "cwd"


def test_the_forged_dtype_pickle_is_as_small_as_the_reported_one(tmp_path):
    data = attacks(tmp_path / "pwned")["forged V8 dtype with an object field"][1]
    assert len(data) < 200  # the file: 191 bytes
    assert b"numpy\ndtype\n" in data and b"V8" in data and b"O8" in data


@pytest.mark.parametrize("name", list(attacks(Path("pwned"))))
def test_attack_pickles_are_refused_with_one_line(attack_results, name):
    results, marker, workdir = attack_results
    result, (_, _, expected) = results[name]
    assert verdict(result) == "refused", (name, result)
    assert expected in result["stderr"], (name, result["stderr"])
    assert not marker.exists() and list(workdir.iterdir()) == []


# --- fuzzing real-looking checkpoints --------------------------------------------------------------


def small_state(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A few tensors of the tiny model under this project's and Mask2Former's names: the stem (a
    BatchNorm with its 0-d counter), the queries, a pixel decoder embedding, a 3-class COCO-style head
    (random by design) and an unexpected key; float32, float16 and int64 as in real files."""
    return {
        "backbone.stem.0.weight": rng.standard_normal((32, 3, 3, 3)).astype(np.float32),
        "backbone.stem.1.weight": np.ones(32, np.float32),
        "backbone.stem.1.bias": np.zeros(32, np.float32),
        "backbone.stem.1.running_mean": rng.standard_normal(32).astype(np.float32),
        "backbone.stem.1.running_var": np.ones(32, np.float64),
        "backbone.stem.1.num_batches_tracked": np.array(7, np.int64),
        "sem_seg_head.predictor.query_feat.weight": rng.standard_normal((16, 64)).astype(np.float16),
        "sem_seg_head.pixel_decoder.transformer.level_embed": rng.standard_normal((3, 64)).astype(np.float32),
        "sem_seg_head.predictor.class_embed.bias": np.zeros(4, np.float32),
        "pixel_mean": np.array([123.675, 116.28, 103.53]),
    }


def mutations(data: bytes, pickle_at: int, pickle_size: int, count: int, rng: random.Random) -> list[bytes]:
    """`count` distinct mutants of `data` whose pickle is `data[pickle_at:pickle_at + pickle_size]`: 2/5
    byte flips (1-4 bytes anywhere), 1/5 truncations, 2/5 opcode swaps (an opcode of the pickle
    replaced by another, or two exchanged: lengths and arguments then read differently)."""
    pickled = data[pickle_at : pickle_at + pickle_size]
    opcodes = [pickle_at + pos for _, _, pos in pickletools.genops(pickled)]
    codes = [op.code.encode("latin1") for op in pickletools.opcodes]
    seen, mutants = {hashlib.sha1(data).digest()}, []
    while len(mutants) < count:
        kind, mutant = rng.random(), bytearray(data)
        if kind < 0.4:
            for _ in range(rng.randint(1, 4)):
                mutant[rng.randrange(len(data))] = rng.randrange(256)
        elif kind < 0.6:
            del mutant[rng.randrange(len(data)) :]
        elif kind < 0.8:
            mutant[rng.choice(opcodes)] = rng.choice(codes)[0]
        else:
            a, b = rng.sample(opcodes, 2)
            mutant[a], mutant[b] = mutant[b], mutant[a]
        digest = hashlib.sha1(mutant).digest()
        if digest not in seen:
            seen.add(digest)
            mutants.append(bytes(mutant))
    return mutants


def fuzz(tmp_path: Path, name: str, data: bytes, pickle_at: int, pickle_size: int, count: int) -> dict:
    """Read `count` mutants of checkpoint `data` in the sandbox; verdict -> how many, and the files."""
    folder = tmp_path / "mutants"
    folder.mkdir()
    files = []
    for index, mutant in enumerate(mutations(data, pickle_at, pickle_size, count, random.Random(SEED))):
        files.append(folder / f"{index:03d}_{name}")
        files[-1].write_bytes(mutant)
    results = run_sandbox([tmp_path / name, *files], tmp_path / "cwd")
    assert verdict(results[0]) == "loaded" and results[0]["exit"] == 1  # the original: the stem, ...
    verdicts: dict[str, list[str]] = {}
    for result in results[1:]:
        verdicts.setdefault(verdict(result), []).append(Path(result["file"]).name)
    assert list((tmp_path / "cwd").iterdir()) == []  # no file written
    assert sorted(path.name for path in folder.iterdir()) == sorted(f.name for f in files)
    return verdicts


def check_fuzz(verdicts: dict[str, list[str]], count: int) -> None:
    bad = {v: files[:3] for v, files in verdicts.items() if v not in ("loaded", "refused")}
    assert bad == {}, bad
    # the mutants reach both ends: some still load, most are refused
    assert len(verdicts.get("loaded", [])) >= count // 50 and len(verdicts.get("refused", [])) >= count // 2


PKL_MUTANTS = int(os.environ.get("IFRVIS_FUZZ_MUTANTS", 150))
PTH_MUTANTS = PKL_MUTANTS // 2


def test_mutated_detectron2_pickles_load_or_are_refused_in_one_line(tmp_path):
    payload = {"model": small_state(np.random.default_rng(0)), "__author__": "Mask2Former"}
    payload["matching_heuristics"] = True
    data = pickle.dumps(payload, protocol=2)  # as detectron2 writes its model zoo files
    (tmp_path / "model_final.pkl").write_bytes(data)
    verdicts = fuzz(tmp_path, "model_final.pkl", data, 0, len(data), PKL_MUTANTS)
    check_fuzz(verdicts, PKL_MUTANTS)


def test_mutated_torch_files_load_or_are_refused_in_one_line(tmp_path):
    state = {key: torch.from_numpy(value) for key, value in small_state(np.random.default_rng(0)).items()}
    buffer = io.BytesIO()
    torch.save({"model": state}, buffer)
    data = buffer.getvalue()
    (tmp_path / "model.pth").write_bytes(data)
    with zipfile.ZipFile(buffer) as archive:
        name = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
        pickled = archive.read(name)
    verdicts = fuzz(tmp_path, "model.pth", data, data.index(pickled), len(pickled), PTH_MUTANTS)
    check_fuzz(verdicts, PTH_MUTANTS)


def test_training_from_the_forged_pickle_is_refused_before_anything_exists(tmp_path):
    """`ifrvis train` with `model.weights` at the forged-dtype pickle once ended in a segmentation fault:
    its preflight now refuses the file in one line (exit 2) before any run, folder or store exists."""
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(attacks(tmp_path / "pwned")["forged V8 dtype with an object field"][1])
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "ifrvis.cli", "train", str(TINY_CONFIG), f"model.weights={evil}",
         f"logging.output_dir={work / 'outputs'}", f"logging.mlflow_uri=sqlite:///{work / 'mlflow.db'}"],
        capture_output=True, text=True, cwd=work, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.count("\n") == 1 and "structured dtype 'V8'" in done.stderr
    assert list(work.iterdir()) == [] and not (tmp_path / "pwned").exists()
