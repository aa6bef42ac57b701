"""Where a trained model loses AP: classes, masks, or identities.

    .venv/bin/python benchmarks/quality_diagnostics.py CONFIG.yaml [key=value ...] [--checkpoint PATH]

Loads the run's checkpoint (by default the one `ifrvis train CONFIG` writes) and reports on its
validation split:
- AP / AP50 / AR10 as `ifrvis eval` computes them;
- the same with every category merged into one (class-agnostic): the gap to the line above is what
  wrong classes cost;
- oracle mask quality over ALL queries, scores ignored: for each ground-truth instance, the best
  per-frame mask IoU of any query (mean over frames where it is visible), and the best video IoU of
  any single query over the whole video. A high per-frame but low video figure means the queries do
  not keep one identity across the video;
- AP with every frame decoded alone and the queries linked frame to frame by Hungarian matching on
  the cosine similarity of their mask embeddings (MinVIS-style): what whole-video decoding gains or
  loses against linking by appearance.
"""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import torch
import torch.nn.functional as F

from ifrvis import run_folder
from ifrvis.cli import ArgumentParser
from ifrvis.config import load_config
from ifrvis.data.datasets import VideoFrames
from ifrvis.data.splits import load_splits
from ifrvis.evaluation import evaluate_ytvis
from ifrvis.evaluation.results import encode_video_predictions
from ifrvis.inference import (
    QueryResult,
    load_chunk,
    padded_size,
    postprocess,
    run_frames,
    run_inference,
)
from ifrvis.modeling import build_model
from ifrvis.modeling.matcher import hungarian

KEYS = ("AP", "AP50", "AR10")


def class_agnostic(gt: dict, results: list[dict]) -> tuple[dict, list[dict]]:
    """Ground truth and results with every category id replaced by 1."""
    merged = copy.deepcopy(gt)
    merged["categories"] = [{"id": 1, "name": "object", "supercategory": "object"}]
    for ann in merged["annotations"]:
        ann["category_id"] = 1
    return merged, [dict(r, category_id=1) for r in results]


def all_query_masks(model, frames, cfg) -> np.ndarray:
    """Every query's binary masks at the original size: `(Q, T, H0, W0)` bool."""
    result = run_frames(model, frames, range(len(frames)), cfg.inference.chunk_frames)
    num_queries = result.probs.shape[0]
    one_class = dataclasses.replace(result, probs=torch.ones(num_queries, 1))
    top_all = dataclasses.replace(cfg.inference, top_k=num_queries, score_with_mask=False)
    return np.stack([p.masks for p in postprocess(one_class, tuple(frames.orig_size), top_all)])


def oracle_ious(queries: np.ndarray, gt_masks: np.ndarray) -> tuple[float, float]:
    """`queries (Q, T, H, W)`, one instance's `gt_masks (T, H, W)` -> (mean over its visible frames of
    the best per-frame IoU, best video IoU of a single query)."""
    q = queries.reshape(*queries.shape[:2], -1)
    g = gt_masks.reshape(gt_masks.shape[0], -1)[None]
    inter = (q & g).sum(-1).astype(float)  # (Q, T)
    union = (q | g).sum(-1).astype(float)
    visible = g[0].any(-1)
    per_frame = (inter[:, visible] / np.maximum(union[:, visible], 1)).max(0).mean()
    video = (inter.sum(1) / np.maximum(union.sum(1), 1)).max()
    return float(per_frame), float(video)


@torch.no_grad()
def linked_frames(model, frames) -> QueryResult:
    """Every frame decoded as a one-frame clip; frame t's queries matched to frame t-1's linked queries
    by Hungarian matching on the cosine similarity of their mask embeddings; class probabilities
    averaged over the frames."""
    embeddings = []  # the decoders do not return query embeddings: read the last mask-embedding call
    hook = model.decoder.heads_out.mask_embed.register_forward_hook(lambda m, i, out: embeddings.append(out))
    num_frames = len(frames)
    features = model.encode(load_chunk(frames, range(num_frames), False, model.pixel_mean))
    outputs = model.decode(features, num_frames, 1)
    hook.remove()
    emb = F.normalize(embeddings[-1].reshape(num_frames, -1, embeddings[-1].shape[-1]), dim=-1)  # (T, Q, D)
    probs = model.class_probabilities(outputs["pred_logits"])  # (T, Q, K), the head's sigmoid or softmax
    masks = outputs["pred_masks"][:, :, 0]  # (T, Q, h, w)
    orders = [torch.arange(emb.shape[1])]
    for t in range(1, num_frames):
        rows, cols = hungarian(-(emb[t] @ emb[t - 1, orders[-1]].T))
        order = torch.empty_like(rows)
        order[cols] = rows  # track j continues with frame t's query order[j]
        orders.append(order)
    return QueryResult(
        probs=torch.stack([probs[t, o] for t, o in enumerate(orders)]).mean(0),
        mask_logits=torch.stack([masks[t, o] for t, o in enumerate(orders)], dim=1),
        image_size=tuple(frames.size),
        padded_size=padded_size(tuple(frames.size)),
    )


def diagnose(model, valid, cfg) -> dict:
    """The figures of the module docstring for `model` (eval mode) on the annotated split `valid`."""
    results = run_inference(model, valid, cfg)
    ap = evaluate_ytvis(valid.raw, results)
    agnostic = evaluate_ytvis(*class_agnostic(valid.raw, results))
    per_frame, video, linked = [], [], []
    with torch.no_grad():
        for item in valid.videos:
            frames = VideoFrames(valid, item, cfg.data.test_short_side, cfg.data.max_long_side)
            predictions = postprocess(linked_frames(model, frames), tuple(frames.orig_size), cfg.inference)
            linked.extend(encode_video_predictions(int(item["id"]), predictions, valid.category_ids))
            queries = all_query_masks(model, frames, cfg)
            for ann in valid.annotations_of(item["id"]):
                best_frame, best_video = oracle_ious(queries, valid.decode_instance(ann)[0])
                per_frame.append(best_frame)
                video.append(best_video)
    return {
        "AP": {k: round(ap[k], 4) for k in KEYS},
        "class_agnostic": {k: round(agnostic[k], 4) for k in KEYS},
        "frames_linked_by_embedding": {
            k: round(v, 4) for k, v in evaluate_ytvis(valid.raw, linked).items() if k in KEYS
        },
        "oracle_per_frame_iou": round(float(np.mean(per_frame)), 3),
        "oracle_per_frame_iou_over_0.5": round(float(np.mean(np.array(per_frame) > 0.5)), 3),
        "oracle_video_iou": round(float(np.mean(video)), 3),
        "oracle_video_iou_over_0.5": round(float(np.mean(np.array(video) > 0.5)), 3),
        "instances": len(video),
    }


def load_trained(cfg, checkpoint) -> torch.nn.Module:
    """The model of `cfg` with the weights of a run checkpoint, in eval mode."""
    model = build_model(cfg.model, cfg.loss.class_loss)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["model"])
    return model.eval()


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--checkpoint", help="default: the run's own checkpoint")
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    model = load_trained(cfg, args.checkpoint or run_folder.checkpoint_path(cfg))
    _, valid = load_splits(cfg.data)
    if valid is None or not valid.has_annotations:
        raise SystemExit("the config has no validation split with ground truth")
    print(json.dumps(diagnose(model, valid, cfg), indent=2))


if __name__ == "__main__":
    main()
