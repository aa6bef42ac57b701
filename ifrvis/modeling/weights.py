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
not report the decoder as missing). Tensors of the wrong shape or dtype are skipped and reported as
mismatched (not also as missing). NumPy arrays keep their shape, 0-d ones (`num_batches_tracked`) included.

A checkpoint is data, never code, and no file can crash, hang or exhaust the process that loads it:
every file but the project's own is read in a child process with hard limits (`read_isolated`,
isolated_read.py: address space, CPU and wall-clock time sized from the file, no inherited descriptors,
no mmap), which builds plain numeric arrays only (checkpoint_reader.py: a .pkl's NumPy arrays through
checked stand-ins for NumPy's constructors, a .pth's tensors from its zip records, any other global
refused) and hands them back as safetensors; a crash, a hang or an allocation past the limit is one
line naming the file. The project's own files, those whose provenance record (`<file>.json`, written
by `ifrvis pretrain`, as for the shipped checkpoints/synthetic_tiny_pretrained.pth) names their sha256,
load in this process with `torch.load(..., weights_only=True)`. Every load then checks the data
(`check_values`): tensors without data (meta) and NaN or Inf values are refused, naming the tensors and
counts; integer or boolean tensors for floating-point model tensors are mismatches (`Mismatch`, by
dtype). Bytes after the pickle's end are refused. A refused, corrupt, truncated or unsafe file is one
CheckpointError line (`ifrvis weights`: exit status 2, as any user error).

`ifrvis weights` exit status: 0 when the file gives the model every tensor of the modules it covers
(or leaves it random by design); 1 when tensors are left missing or mismatched (by shape or dtype), so
that a script can gate on it; 2 on an error.
"""

from __future__ import annotations

import json
import logging
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ifrvis.config import ExtraQueries, IfrInit
from ifrvis.modeling.isolated_read import CheckpointError, one_line, read_isolated

log = logging.getLogger(__name__)

IFR_INITS = typing.get_args(IfrInit)
EXTRA_QUERIES = typing.get_args(ExtraQueries)


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


def is_own_output(path: Path) -> bool:
    """Whether torch file `path` is one `ifrvis pretrain` wrote: its provenance record beside it
    (`<file>.json`, as for the shipped checkpoints/synthetic_tiny_pretrained.pth) names its sha256. The
    record is the whole trust: one put beside another file makes that file load in this process too."""
    from ifrvis.engine.provenance import provenance_path, sha256_file  # provenance imports this module

    record = provenance_path(path)
    if path.suffix == ".pkl" or not record.is_file() or record.stat().st_size > 1 << 20:
        return False
    try:
        expected = json.loads(record.read_text()).get("sha256")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(expected, str) and expected == sha256_file(path)


# What a tensor of the project's own files may be (real numbers, as the model's parameters and buffers).
TENSOR_DTYPES = (
    torch.float16, torch.bfloat16, torch.float32, torch.float64,
    torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool,
)  # fmt: skip


def read_own(path: Path) -> dict[str, Tensor]:
    """The tensors of the project's own torch file `path` (`is_own_output`), read in this process with
    `weights_only=True`: the dict, or its "model" / "state_dict" entry; values other than real-number
    tensors dropped."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = torch_reason(error)
        message = one_line(f"{type(error).__name__}: {reason}" if reason else type(error).__name__)
        raise CheckpointError(
            f"model.weights: {path} is not a readable or safe torch file: {message}"
        ) from None
    for wrapper in ("model", "state_dict"):
        if isinstance(data, dict) and isinstance(data.get(wrapper), dict):
            data = data[wrapper]
    if not isinstance(data, dict):
        raise CheckpointError(f"model.weights: {path} holds a {type(data).__name__}, expected a state dict")
    return {
        key: value
        for key, value in data.items()
        if torch.is_tensor(value) and value.layout == torch.strided and value.dtype in TENSOR_DTYPES
    }


def nonfinite_count(tensor: Tensor) -> int:
    """How many NaN and Inf values `tensor` holds (none for integers). A sum is finite only when every
    value is (NaN and Inf carry through it), so the values are counted only when it is not."""
    if not tensor.is_floating_point() or bool(torch.isfinite(tensor.sum())):
        return 0
    return tensor.numel() - int(torch.isfinite(tensor).sum())


SHOWN_TENSORS = 3


def check_values(state: dict[str, Tensor], path: Path) -> None:
    """Refuse tensors without data (the meta device) and NaN or Inf values, naming the tensors (their
    names cut to 80 characters) and the count in each."""
    meta = [key for key, tensor in state.items() if tensor.is_meta]
    if meta:
        raise CheckpointError(
            f"model.weights: {path} has {len(meta)} tensors without data (meta device), e.g. {meta[0][:80]}"
        )
    counts = {key: count for key, tensor in state.items() if (count := nonfinite_count(tensor))}
    if counts:
        named = [
            f"{key[:80]} ({n} of {state[key].numel()})" for key, n in list(counts.items())[:SHOWN_TENSORS]
        ]
        more = ", ..." if len(counts) > SHOWN_TENSORS else ""
        raise CheckpointError(
            f"model.weights: {path} refused: NaN or Inf values in {len(counts)} tensors:"
            f" {', '.join(named)}{more}"
        )


def read_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The tensors in `path` (.pkl detectron2 pickle, or a torch file): the project's own files
    (`is_own_output`) read in this process, every other file in a child process (`read_isolated`);
    then `check_values`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"model.weights: no such file {path} (for the tiny configs, `ifrvis pretrain CONFIG` writes it)"
        )
    state = read_own(path) if is_own_output(path) else read_isolated(path)
    if not state:
        raise CheckpointError(f"model.weights: {path} holds no tensors")
    check_values(state, path)
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
    # the published COCO files name the learned query features `static_query` (Mask2Former's decoders
    # rename it to `query_feat` on loading); later files, and this project's, say `query_feat`
    (r"^sem_seg_head\.predictor\.static_query\.(.+)$", r"decoder.query_feat.\1"),
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
    """A file tensor that does not fit its model tensor: by shape, or by dtype (integers or booleans for
    a floating-point model tensor: `dtype`, `model_dtype` set)."""

    key: str  # in the file
    shape: tuple[int, ...]
    name: str  # in the model
    model_shape: tuple[int, ...]
    dtype: str = ""
    model_dtype: str = ""

    @property
    def found(self) -> str:
        """What the file has: its dtype for a dtype mismatch, else its shape."""
        return self.dtype or str(self.shape)

    @property
    def expected(self) -> str:
        return self.model_dtype or str(self.model_shape)

    def __str__(self) -> str:
        return f"{self.key}: {self.found} vs {self.name}: {self.expected}"


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


# File keys (this project's names and detectron2's) of the modules whose extra tensors mean another model.
FOREIGN_PREFIXES = ("backbone.", "pixel_decoder.", "sem_seg_head.pixel_decoder.")


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
        by design: nothing missing, nothing of the wrong shape, and no backbone or pixel-decoder tensor
        the model has no place for (`foreign`)."""
        return bool(self.loaded) and not self.missing and not self.mismatches and not self.foreign

    @property
    def foreign(self) -> list[str]:
        """Unexpected file keys of the backbone or pixel decoder: the file is another model's. A ResNet-101
        file has every key of a ResNet-50 at its shape, a Swin-S every key of a Swin-T; only their extra
        blocks tell. (Decoder layers beyond the model's are only unused: the model takes the first ones.)"""
        return [key for key in self.unexpected if key.startswith(FOREIGN_PREFIXES)]

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
            lines.append(f"  {group.pattern}{count}: e.g. {first.found} in the file vs {first.expected}")
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
    rows = value.dim() == len(shape) and value.shape[1:] == shape[1:]  # another count of the same rows
    if name in LEARNED_QUERIES and rows and value.shape[0] > shape[0]:
        return _fit_queries(value, key, shape, extra_queries, report)
    if name in CLASS_HEAD and rows:
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
        if target[name].is_floating_point() and not value.is_floating_point():
            dtypes = (str(value.dtype).removeprefix("torch."), str(target[name].dtype).removeprefix("torch."))
            report.mismatches.append(
                Mismatch(key, tuple(value.shape), name, tuple(target[name].shape), *dtypes)
            )
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
