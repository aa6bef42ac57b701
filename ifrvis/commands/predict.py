"""`ifrvis predict`: a trained model on your own videos (ifrvis.predict).

    ifrvis predict CONFIG CHECKPOINT INPUT... --out DIR [key=value ...]
    ifrvis predict RUN_FOLDER INPUT... --out DIR [key=value ...]

INPUT: a video file (mp4, avi, webm, mkv, mov, ...) or a folder of frames (jpg/png, in natural order:
2.jpg before 10.jpg; hidden files skipped).
RUN_FOLDER: a training run's folder (outputs/<name>-<identity>/), for its config.yaml and checkpoint.pt.
key=value: dotted config overrides (e.g. inference.clip_frames=20); the options below set some.
Writes DIR/<stem>/results.json, overlay.<ext> and strip.png per input (ifrvis.predict).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import signal
import sys
import typing
from pathlib import Path

from ifrvis import predict, run_folder
from ifrvis.cli import ArgumentParser
from ifrvis.config import Config, InferenceMode, load_config
from ifrvis.errors import UserError

# A dotted config key, then "=": an override, unless a file of that name exists.
OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*=")


class Terminated(BaseException):
    """SIGTERM, raised wherever the process is (as Ctrl-C raises KeyboardInterrupt), so that the
    input in progress removes its temporary folder on the way out (`predict.predict`)."""


def _raise_terminated(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
    raise Terminated


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="ifrvis predict",
        description="Run a trained model on your own videos: tracks, an overlay video and a strip each.",
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="ifrvis predict (CONFIG CHECKPOINT | RUN_FOLDER) INPUT... --out DIR [key=value ...] [options]",
    )
    parser.add_argument("paths", nargs="+", metavar="ARG", help="CONFIG CHECKPOINT or RUN_FOLDER, INPUT...")
    parser.add_argument("--out", required=True, help="output folder (one sub-folder per input)")
    parser.add_argument(
        "--mode",
        choices=typing.get_args(InferenceMode),
        help="inference.mode (default clip: memory bounded whatever the video's length; video and tta "
        "hold the whole video)",
    )
    parser.add_argument("--clip-frames", type=int, help="inference.clip_frames: T frames per clip")
    parser.add_argument("--clip-overlap", type=int, help="inference.clip_overlap: frames clips share")
    parser.add_argument("--top-k", type=int, help="inference.top_k: (query, class) pairs kept")
    parser.add_argument(
        "--score-threshold", type=float, default=0.5, help="tracks kept and drawn: score >= this"
    )
    parser.add_argument("--fps", type=float, default=10.0, help="overlay frame rate for a folder of frames")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="device (default: the config's)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--no-overlay", action="store_true", help="results.json alone: no overlay video or strip (faster)"
    )
    parser.add_argument("--start", type=int, default=0, help="first frame predicted (0: the first)")
    parser.add_argument("--end", type=int, help="frame the prediction stops before (default: the last)")
    parser.add_argument("--stride", type=int, default=1, help="predict every n-th frame from --start")
    parser.add_argument(
        "--classes", help="keep tracks of these classes only: names or ids, comma-separated (e.g. person,car)"
    )
    return parser


def split_paths(paths: list[str]) -> tuple[list[str], list[str]]:
    """Positional arguments -> (CONFIG CHECKPOINT INPUT..., a run folder standing for its config and
    checkpoint; the key=value overrides)."""
    overrides = [p for p in paths if OVERRIDE.match(p) and not Path(p).exists()]
    rest = [p for p in paths if p not in overrides]
    if rest and (Path(rest[0]) / run_folder.CONFIG).is_file():
        folder = Path(rest[0])
        rest = [str(folder / run_folder.CONFIG), str(folder / run_folder.CHECKPOINT), *rest[1:]]
    return rest, overrides


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """The options that stand for config keys, as overrides."""
    keys = {
        "inference.mode": args.mode,
        "inference.clip_frames": args.clip_frames,
        "inference.clip_overlap": args.clip_overlap,
        "inference.top_k": args.top_k,
        "device": args.device,
    }
    return [f"{key}={value}" for key, value in keys.items() if value is not None]


def command_options(args: argparse.Namespace) -> predict.Options:
    """The command line's settings beside the config (all classes); a UserError naming the option for a
    value out of its range."""
    try:
        return predict.Options(
            score_threshold=args.score_threshold,
            fps=args.fps,
            progress=not args.no_progress,
            overlay=not args.no_overlay,
            start=args.start,
            end=args.end,
            stride=args.stride,
        )
    except predict.OptionError as error:
        flag = "--" + error.name.replace("_", "-")
        raise UserError(f"{flag} {error.shown}: {error.advice}") from None


def summary_line(summary: dict, score_threshold: float) -> str:
    """One input's line on stdout when its folder is complete; when no track reached the threshold,
    the best score seen and the option that lowers the bar."""
    tracks = f"{summary['tracks']} tracks"
    if not summary["tracks"] and summary["best_score"] is not None:
        tracks += (
            f" (none scored {score_threshold:g} or more; the best {summary['best_score']:.3f}: "
            "--score-threshold lowers the bar)"
        )
    return f"{summary['input']}: {summary['frames']} frames, {tracks} -> {summary['out']}"


def status_table(summaries: list[dict]) -> str:
    """The inputs of a batch, one row each: ok or damaged (frames, tracks, folder), or failed (why)."""
    rows = [("input", "status", "frames", "tracks", "output or error")]
    for summary in summaries:
        if summary["error"]:
            rows.append((summary["input"], "failed", "-", "-", summary["error"]))
        else:
            status = "damaged" if summary["warning"] else "ok"  # frames skipped or the file cut short
            rows.append(
                (summary["input"], status, str(summary["frames"]), str(summary["tracks"]), summary["out"])
            )
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    return "\n".join(
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[4]]) for row in rows
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    options = command_options(args)
    files, overrides = split_paths(args.paths)
    if len(files) < 3:
        parser.error("give CONFIG CHECKPOINT (or a run folder) and at least one INPUT")
    config, checkpoint, *inputs = files
    # per clip unless the command line says otherwise: a user's video may be of any length
    cfg = load_config(config, ["inference.mode=clip", *overrides, *flag_overrides(args)])
    if args.classes is not None:  # resolved against the run's classes (a UserError for one it lacks)
        requested = [c.strip() for c in args.classes.split(",")]
        classes = predict.class_ids(requested, *predict.categories(cfg, checkpoint))
        options = dataclasses.replace(options, classes=classes)
    return run(cfg, checkpoint, inputs, args.out, options)


def run(cfg: Config, checkpoint: str, inputs: list[str], out: str, options: predict.Options) -> int:
    """Predict every input, one line each as it completes (errors and warnings on stderr), a table at
    the end of a batch -> the exit status: 0, 1 if an input failed, 143 or 130 when SIGTERM or Ctrl-C
    stopped the run (the input in progress removed, those complete kept)."""
    summaries, previous = [], signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        for summary in predict.predict(cfg, checkpoint, inputs, out, options):
            summaries.append(summary)
            if summary["error"]:
                print(f"ifrvis predict: error: {summary['error']}", file=sys.stderr)
                continue
            if summary["warning"]:
                print(f"ifrvis predict: warning: {summary['warning']}", file=sys.stderr)
            print(summary_line(summary, options.score_threshold))
    except (KeyboardInterrupt, Terminated) as stop:
        name, signum = (
            ("SIGTERM", signal.SIGTERM) if isinstance(stop, Terminated) else ("Ctrl-C", signal.SIGINT)
        )
        print(
            f"ifrvis predict: stopped by {name}: {len(summaries)} of {len(inputs)} inputs done, "
            "no unfinished folder left",
            file=sys.stderr,
        )
        return 128 + signum  # the shell's status for a process a signal ended
    finally:
        signal.signal(signal.SIGTERM, previous)
    if len(summaries) > 1:
        print(status_table(summaries))
    return 1 if any(summary["error"] for summary in summaries) else 0
