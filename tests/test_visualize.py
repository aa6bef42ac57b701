"""`ifrvis visualize` on a hand-made 3-frame YouTube-VIS folder: sizes, GIF, identity colours on pixels."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from ifrvis.cli import main as cli_main
from ifrvis.commands.visualize import main
from ifrvis.data.masks import encode_rle
from ifrvis.visualize import assign_colours, draw_video_strip, palette, video_iou

H, W, T = 40, 64, 3
A = (slice(4, 27), slice(4, 27))  # ground-truth instance 1 (person), left
B = (slice(4, 27), slice(36, 59))  # ground-truth instance 2 (cow), right
CENTRE_A, CENTRE_B = (22, 15), (22, 47)  # (y, x) inside the squares, below the labels
CORNER, CORNER_PIXEL = (slice(28, 39), slice(26, 35)), (33, 30)  # a prediction matching no ground truth


def square(where) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[where] = True
    return mask


def tube(places) -> list[dict]:
    return [encode_rle(square(p)) for p in places]


@pytest.fixture()
def data_dir(tmp_path) -> Path:
    """3 grey frames, two ground-truth instances, and predictions where track 1 switches from A to B at
    frame 2 (and track 2 from B to A), one low-score prediction, and one matching nothing."""
    root = tmp_path / "data"
    (root / "JPEGImages" / "v1").mkdir(parents=True)
    names = [f"v1/{t:05d}.jpg" for t in range(T)]
    for name in names:
        Image.fromarray(np.full((H, W, 3), 128, np.uint8)).save(root / "JPEGImages" / name, quality=95)
    gt = {
        "videos": [{"id": 1, "width": W, "height": H, "length": T, "file_names": names}],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "cow"}],
        "annotations": [
            {"id": 10, "video_id": 1, "category_id": 1, "segmentations": [encode_rle(square(A), False)] * T},
            {"id": 11, "video_id": 1, "category_id": 2, "segmentations": [encode_rle(square(B), False)] * T},
        ],
    }
    (root / "valid.json").write_text(json.dumps(gt))
    results = [
        {"video_id": 1, "category_id": 1, "score": 0.9, "segmentations": tube([A, A, B])},
        {"video_id": 1, "category_id": 2, "score": 0.8, "segmentations": tube([B, B, A])},
        {"video_id": 1, "category_id": 2, "score": 0.6, "segmentations": tube([CORNER] * T)},
        {"video_id": 1, "category_id": 1, "score": 0.1, "segmentations": tube([B] * T)},  # below 0.3
    ]
    (root / "results.json").write_text(json.dumps(results))
    return root


def test_video_iou_and_colour_assignment():
    a = np.stack([square(A)] * T)
    b = np.stack([square(B)] * T)
    switched = np.stack([square(A), square(A), square(B)])
    assert video_iou(switched, a) == pytest.approx(2 / 4)  # 2 frames shared, 4 frames of union area
    assert video_iou(switched, b) == pytest.approx(1 / 5)  # 1 frame shared, 5 of union
    nothing = np.zeros_like(a)
    gt_colours, pred_colours, matches = assign_colours([a, b], [switched, b, nothing])
    assert matches == [0, 1, None]
    assert pred_colours[0] == gt_colours[0] and pred_colours[1] == gt_colours[1]
    assert pred_colours[2] not in gt_colours and len(set(palette(8))) == 8


def pixel(image: Image.Image, row: int, column: int, y: int, x: int) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=int)[row * H + y, column * W + x]


def test_cli_writes_strip_and_gif_with_identity_colours(data_dir, tmp_path, capsys):
    out = tmp_path / "vis"
    assert (
        main(["--results", str(data_dir / "results.json"), "--data", str(data_dir), "--out", str(out)]) == 0
    )
    strip = Image.open(out / "video1.png")
    assert strip.size == (T * W, 2 * H)
    gif = Image.open(out / "video1.gif")
    assert gif.size == (W, 2 * H) and gif.n_frames == T

    colour_a, colour_b = palette(2)
    expected_a = 0.5 * 128 + 0.5 * np.asarray(colour_a)
    gt_a = pixel(strip, 0, 0, *CENTRE_A)
    assert np.abs(gt_a - expected_a).max() <= 3  # GT instance 1 blended in its colour
    assert np.abs(pixel(strip, 1, 0, *CENTRE_A) - gt_a).max() <= 3  # track 1 coloured like GT 1
    # frame 2: track 1 has switched onto the cow, so the cow's place shows the person's colour below
    assert np.abs(pixel(strip, 1, 2, *CENTRE_B) - gt_a).max() <= 3
    assert np.abs(pixel(strip, 0, 2, *CENTRE_B) - (0.5 * 128 + 0.5 * np.asarray(colour_b))).max() <= 3
    # the unmatched prediction has a colour of its own; the low-score one over B is not drawn at frame 0
    own = pixel(strip, 1, 0, *CORNER_PIXEL)
    assert np.abs(own - gt_a).max() > 20 and np.abs(own - pixel(strip, 0, 0, *CENTRE_B)).max() > 20
    assert np.abs(pixel(strip, 0, 0, *CORNER_PIXEL) - 128).max() <= 3  # no GT there


def test_draw_video_strip_accepts_prediction_objects_and_downscales(tmp_path):
    @dataclass
    class Prediction:
        label: int
        score: float
        masks: np.ndarray

    frames = [np.full((H, W, 3), 128, np.uint8) for _ in range(5)]
    gt = [{"label": 0, "masks": np.stack([square(A)] * 5)}]
    preds = [Prediction(0, 0.7, np.stack([square(A)] * 5))]
    paths = draw_video_strip(
        frames, gt, preds, tmp_path / "s.png", {0: "person"}, max_frames=2, max_height=16
    )
    assert Image.open(paths["png"]).size == (2 * 26, 2 * 16)  # 64x40 scaled to 16 high
    larger = draw_video_strip(
        frames, gt, preds, tmp_path / "l.png", {0: "person"}, max_frames=2, min_height=120, gif=False
    )
    assert Image.open(larger["png"]).size == (2 * 192, 2 * 120)  # 64x40 scaled up to 120 high
    with pytest.raises(ValueError, match="ground truth instance 0 has masks of shape"):
        draw_video_strip(frames, [{"label": 0, "masks": np.zeros((2, H, W), bool)}], [], tmp_path / "x.png")


def test_cli_from_mlflow_run(data_dir, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("ifrvis", artifact_location=str(tmp_path / "artifacts"))
    run_id = client.create_run(experiment).info.run_id
    config = tmp_path / "config.yaml"
    data = {"root": str(data_dir), "valid_json": "valid.json", "valid_images": "JPEGImages"}
    config.write_text(yaml.safe_dump({"data": data}))
    client.log_artifact(run_id, str(config))
    client.log_artifact(run_id, str(data_dir / "results.json"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "vis"
    assert main(["--run", run_id, "--video", "1", "--out", str(out)]) == 0
    assert Image.open(out / "video1.png").size == (T * W, 2 * H)
    assert cli_main(["visualize", "--run", run_id, "--video", "7", "--out", str(out)]) == 2
    assert cli_main(["visualize", "--run", "deadbeef", "--out", str(out)]) == 2  # no such MLflow run


def test_cli_results_with_config(data_dir, tmp_path):
    """--config names the split's files as a run reads them; --data replaces only its root."""
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"data": {"root": "elsewhere", "valid_images": "JPEGImages"}}))
    out = tmp_path / "vis"
    results = str(data_dir / "results.json")
    args = ["--results", results, "--config", str(config), "--out", str(out)]
    assert cli_main(["visualize", *args]) == 2  # elsewhere/valid.json does not exist
    assert main([*args, "--data", str(data_dir)]) == 0
    assert Image.open(out / "video1.png").size == (T * W, 2 * H)
    held_out = {"root": str(data_dir), "valid_json": "", "valid_images": "JPEGImages", "holdout_videos": 1}
    config.write_text(yaml.safe_dump({"data": held_out}))  # validation carved out of train.json
    assert cli_main(["visualize", "--results", results, "--config", str(config), "--out", str(out)]) == 2
    gt = str(data_dir / "valid.json")
    assert main(["--results", results, "--config", str(config), "--gt", gt, "--out", str(out)]) == 0
    config.write_text(yaml.safe_dump({"data": {"root": str(data_dir), "valid_imgs": "JPEGImages"}}))
    assert cli_main(["visualize", "--results", results, "--config", str(config)]) == 2  # unknown key
