"""Read an untrusted checkpoint file in a child process with hard limits (`read_isolated`), so that no
file can crash, hang or exhaust the process that loads it.

The child (`checkpoint_reader.py`, run as a script with `python -I`: no user site, no PYTHON*
variables, nothing of this package imported) limits its own address space, CPU time and written file
size, disables core files and sets a recursion limit before it reads a byte of the file; it inherits no
file descriptor but a pipe for its one-line answer (`close_fds`, stdin and stderr on /dev/null), runs in
a private temporary folder, and reads the file through a plain handle (no mmap). The parent kills it
after a wall-clock limit. It hands the tensors back as a safetensors file in that folder, which the
parent reads with the safetensors library (a bounded JSON header and raw buffers): the parent never
unpickles a byte of the file.

However the child ends, the parent raises one CheckpointError line naming the file and what happened:
the child's own refusal, over the memory limit, over the CPU or wall-clock limit, killed by signal N.
The limits are sized from the file (`limits_for`): real checkpoints read in about the time of a plain
`pickle.load` (benchmarks/README.md, "Checkpoint loading in isolation").
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
from torch import Tensor

from ifrvis.errors import UserError
from ifrvis.modeling import checkpoint_reader

# What the child may use: its interpreter and NumPy take ~100 MB of address space; reading a file holds
# its arrays, the bytes of the one being built and the write buffers: a few times the file's size.
BASE_MEMORY = 1 << 30
MEMORY_PER_FILE_BYTE = 4
# CPU time: a real checkpoint reads at hundreds of MB/s; the base covers the interpreter's start on a
# loaded machine, and is what a file that makes the reader spin costs before it is stopped.
BASE_CPU_S = 10
FILE_BYTES_PER_CPU_S = 50 << 20
WALL_FACTOR = 3  # a child starved of CPU by other processes still gets its CPU time
MESSAGE_CHARS = 400
# Where the child writes its tensors: memory-backed when there is room (writing and reading back are
# then copies in memory), else the system's temporary folder.
SHARED_MEMORY = Path("/dev/shm")


class CheckpointError(UserError):
    """A checkpoint file is missing, unreadable, unsafe or does not fit the model."""


@dataclass(frozen=True)
class Limits:
    memory_bytes: int  # the child's address space (RLIMIT_AS), and the most it may write
    cpu_s: int  # the child's CPU time (RLIMIT_CPU)
    wall_s: float  # then the parent kills it


def limits_for(size: int) -> Limits:
    """The child's limits for a file of `size` bytes: a fixed allowance plus what reading it needs."""
    cpu_s = BASE_CPU_S + size // FILE_BYTES_PER_CPU_S
    return Limits(BASE_MEMORY + MEMORY_PER_FILE_BYTE * size, cpu_s, WALL_FACTOR * cpu_s)


def scratch_dir(size: int) -> str | None:
    """SHARED_MEMORY when it has room for twice `size` and a margin, else None (the system default)."""
    try:
        stats = os.statvfs(SHARED_MEMORY)
    except OSError:
        return None
    room = stats.f_bavail * stats.f_frsize
    return str(SHARED_MEMORY) if room > 2 * size + (256 << 20) and os.access(SHARED_MEMORY, os.W_OK) else None


def one_line(text: str, limit: int = MESSAGE_CHARS) -> str:
    """`text` as one line of at most about `limit` characters, control characters escaped."""
    text = " ".join(text[: 4 * limit].split())
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    return text if len(text) <= limit else text[:limit] + "..."


def ending(returncode: int, answer: str, limits: Limits) -> str | None:
    """What the child's end says about the file, as a phrase after its name; None when it wrote the
    tensors. `answer`: its stdout."""
    if returncode == 0:
        return None
    if returncode == checkpoint_reader.REFUSED_STATUS and answer.strip():
        return one_line(answer)
    if returncode == checkpoint_reader.MEMORY_STATUS:
        return (
            f"refused: reading it needs more than the reader's memory limit of {limits.memory_bytes >> 20} MB"
        )
    if returncode == -signal.SIGXCPU:
        return f"refused: reading it takes more than the reader's CPU time limit of {limits.cpu_s} s"
    if returncode < 0:
        number = -returncode
        name = signal.Signals(number).name if number in signal.valid_signals() else "unknown"
        return f"refused: the reader process was killed by signal {number} ({name}) while reading it"
    return f"refused: the reader process ended with status {returncode}"


def child_command(path: Path, out: Path, limits: Limits) -> list[str]:
    return [
        sys.executable, "-I", checkpoint_reader.__file__, str(path.resolve()), str(out),
        str(limits.memory_bytes), str(limits.cpu_s),
    ]  # fmt: skip


def run_child(path: Path, out: Path, limits: Limits) -> str | None:
    """Run the reader on `path` (writing `out`) and return `ending`'s phrase, or the wall-clock one."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with subprocess.Popen(
        child_command(path, out, limits),
        cwd=out.parent,
        env=env,  # one thread: no per-thread stacks and arenas in the limited address space
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        close_fds=True,
    ) as child:
        try:
            answer, _ = child.communicate(timeout=limits.wall_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            return f"refused: reading it takes more than the reader's time limit of {limits.wall_s:g} s"
        except BaseException:  # an interrupt: the child goes too
            child.kill()
            raise
    return ending(child.returncode, answer[: 4 * MESSAGE_CHARS].decode(errors="replace"), limits)


def read_isolated(path: str | Path, limits: Limits | None = None) -> dict[str, Tensor]:
    """The tensors of checkpoint `path` (`.pkl`: a detectron2 pickle; else a torch file), read in a
    child process under `limits` (default: `limits_for` the file's size); CheckpointError otherwise."""
    path = Path(path)
    size = path.stat().st_size
    limits = limits or limits_for(size)
    folder = Path(tempfile.mkdtemp(prefix="ifrvis-weights-", dir=scratch_dir(size)))  # private: 0700
    try:
        out = folder / "tensors.safetensors"
        problem = run_child(path, out, limits)
        if problem is not None:
            raise CheckpointError(f"model.weights: {path} {problem}")
        try:
            return safetensors.torch.load_file(out)
        except Exception as error:  # a child cut short by an outside signal after writing part of it
            raise CheckpointError(
                f"model.weights: {path}: the reader's output is unreadable: {error}"
            ) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
