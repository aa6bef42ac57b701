"""`ifrvis visualize`: the strip of one video, ground truth above predictions (ifrvis.visualize).

    ifrvis visualize --run RUN_ID --video VIDEO_ID [--out vis/]
    ifrvis visualize --results results.json --config CONFIG [--data DIR] [--video VIDEO_ID]
    ifrvis visualize --results results.json --data DIR [--gt DIR/valid.json] [--video VIDEO_ID]

Writes `<out>/video<ID>.png` (the strip) and `<out>/video<ID>.gif` (all frames, animated).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from mlflow.exceptions import MlflowException

from ifrvis import run_folder, runstore, visualize
from ifrvis.cli import ArgumentParser, positive_int
from ifrvis.config import DataConfig, load_config
from ifrvis.errors import UserError
from ifrvis.visualize import draw_video_strip, load_predictions, load_video


def _split_paths(data: DataConfig, data_root: str | None) -> tuple[Path | None, Path]:
    """(ground-truth json or None without `valid_json`, frame folder) of a config's validation split.
    A relative `data.root` is read from the current folder, else from the project folder."""
    root = Path(data_root or data.root)
    if not root.is_absolute() and not root.exists() and (runstore.PROJECT_ROOT / root).exists():
        root = runstore.PROJECT_ROOT / root
    return (root / data.valid_json if data.valid_json else None), root / data.valid_images


def _from_run(run_id: str, work: Path, data_root: str | None) -> tuple[Path, Path | None, Path]:
    """(results.json, ground-truth json, image root) of an MLflow run of the store ($MLFLOW_TRACKING_URI),
    from its artifacts and config."""
    if not runstore.store_exists():  # reading would make an empty store
        raise ValueError(f"no run store at {runstore.resolve_uri()}: is MLFLOW_TRACKING_URI right?")
    runstore.check_store()
    client = runstore.client()
    results = Path(client.download_artifacts(run_id, run_folder.RESULTS, str(work)))
    config_path = Path(client.download_artifacts(run_id, run_folder.CONFIG, str(work)))
    return (results, *_split_paths(load_config(config_path).data, data_root))


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="ifrvis visualize", description=visualize.__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="MLflow run id: its results.json and config.yaml artifacts")
    source.add_argument("--results", help="a results.json in the official format")
    parser.add_argument(
        "--data",
        help="YouTube-VIS folder: replaces the config's data.root (with --results alone: holds "
        "valid.json and --image-dir)",
    )
    parser.add_argument(
        "--config", help="with --results: the run's YAML config, whose data.* name the split's files"
    )
    parser.add_argument("--gt", help="ground-truth json (default: <data>/valid.json, or the config's)")
    parser.add_argument("--image-dir", default="JPEGImages", help="frames folder inside --data")
    parser.add_argument("--video", type=int, help="video id (default: the first video)")
    parser.add_argument("--out", default="vis", help="output folder")
    parser.add_argument("--score-threshold", type=float, default=0.3)
    parser.add_argument(
        "--top-n", type=positive_int, default=10, help="at most this many predictions, best first"
    )
    parser.add_argument("--max-frames", type=positive_int, default=8, help="frames in the PNG strip")
    parser.add_argument(
        "--max-height", type=positive_int, default=240, help="cell height in pixels (at most)"
    )
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory() as work:
            if args.run:
                results_path, gt_path, image_root = _from_run(args.run, Path(work), args.data)
            else:
                results_path = Path(args.results)
                if args.config:
                    gt_path, image_root = _split_paths(load_config(args.config).data, args.data)
                elif args.data:
                    gt_path, image_root = Path(args.data) / "valid.json", Path(args.data) / args.image_dir
                else:
                    parser.error("--results needs --config CONFIG or --data DIR")
            gt_path = Path(args.gt) if args.gt else gt_path
            if gt_path is None:
                raise ValueError("the run's config has no data.valid_json (a held-out split?); pass --gt")
            video, frames, gt_instances, categories = load_video(gt_path, image_root, args.video)
            try:
                results = json.loads(results_path.read_text())
            except (OSError, json.JSONDecodeError) as error:
                raise ValueError(f"{results_path}: cannot read results: {error}") from None
            predictions = load_predictions(results, video, args.score_threshold, args.top_n)
        paths = draw_video_strip(
            frames,
            gt_instances,
            predictions,
            Path(args.out) / f"video{video['id']}.png",
            categories,
            args.max_frames,
            args.max_height,
        )
    except (ValueError, MlflowException) as error:  # a wrong run, video or file: the user's to fix
        raise UserError(str(error).splitlines()[0]) from error
    print(f"wrote {paths['png']} and {paths['gif']}")
    return 0
