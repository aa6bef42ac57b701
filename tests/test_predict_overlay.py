"""The overlay's drawing (`ifrvis.visualize.render_tracks`, as `ifrvis predict` calls it): labels inside
the frame and clear of each other, the best track drawn over the others."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ifrvis.visualize import ALPHA, LABEL_PAD, _font, label_boxes, render_tracks

WIDTH, HEIGHT = 96, 64


def overlap(a, b) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def inside(box, frame=(WIDTH, HEIGHT)) -> bool:
    return 0 <= box[0] < box[2] <= frame[0] and 0 <= box[1] < box[3] <= frame[1]


def test_labels_stay_inside_the_frame_and_clear_of_each_other():
    """Anchors at the bottom-right corner (a mask there: its label was clipped), two on one spot, one
    at the top edge, an empty mask (no label); the best keeps the place nearest its anchor."""
    anchors = [(90, 60), (88, 58), (0, 0), None, (60, 2)]
    sizes = [(40, 12), (30, 12), (20, 12), (20, 12), (50, 12)]
    boxes = label_boxes(anchors, sizes, (WIDTH, HEIGHT))
    assert boxes[0] == (56, 52, 96, 64)  # moved in from the corner, no further
    assert boxes[3] is None
    placed = [box for box in boxes if box is not None]
    assert all(inside(box) for box in placed)
    assert [(box[2] - box[0], box[3] - box[1]) for box in placed] == [(40, 12), (30, 12), (20, 12), (50, 12)]
    assert all(overlap(a, b) == 0 for i, a in enumerate(placed) for b in placed[i + 1 :])


def test_more_labels_than_fit_stay_inside_and_the_best_are_clear():
    """Ten 30 x 12 labels on one spot (10, 30) of a 96 x 64 frame: eight places clear of each other
    on the grid from the spot (x 10 or 40, y 6, 18, 30 or 42), the best eight get them; all are inside."""
    boxes = label_boxes([(10, 30)] * 10, [(30, 12)] * 10, (WIDTH, HEIGHT))
    assert boxes[:3] == [(10, 30, 40, 42), (10, 18, 40, 30), (10, 42, 40, 54)]  # up, then down
    assert all(inside(box) for box in boxes)
    assert all(overlap(a, b) == 0 for i, a in enumerate(boxes[:8]) for b in boxes[i + 1 : 8])


@pytest.mark.parametrize("cell", [(WIDTH, HEIGHT), (192, 128)])
def test_the_best_track_is_drawn_last_and_its_label_is_whole(cell):
    """Two overlapping masks in the bottom-right corner, the best first: where they overlap the frame
    shows the best's colour over the grey, and both label boxes lie whole inside the frame, apart."""
    frame = np.full((HEIGHT, WIDTH, 3), 128, np.uint8)
    masks = np.zeros((2, HEIGHT, WIDTH), bool)
    masks[0, 44:, 70:] = True  # the best: its corner is the frame's
    masks[1, 36:60, 56:90] = True
    colours, labels = [(255, 0, 0), (0, 0, 255)], ["#1 square 0.90", "#2 cross 0.60"]
    image = np.asarray(render_tracks(frame, list(masks), colours, labels, cell)).astype(int)
    scale = cell[0] // WIDTH
    font = _font(cell)
    extents = [ImageDraw.Draw(Image.new("RGB", cell)).textbbox((0, 0), label, font=font) for label in labels]
    sizes = [(r - left + 2 * LABEL_PAD, b - top + 2 * LABEL_PAD) for left, top, r, b in extents]
    boxes = label_boxes([(70 * scale, 44 * scale), (56 * scale, 36 * scale)], sizes, cell)
    assert all(inside(box, cell) for box in boxes) and overlap(*boxes) == 0
    for box, colour in zip(boxes, colours):  # the box's top row is its padding: all in its colour
        assert (image[box[1], box[0] : box[2]] == colour).all()
    covered = np.zeros(image.shape[:2], bool)
    for box in boxes:
        covered[box[1] : box[3], box[0] : box[2]] = True
    both = np.zeros(image.shape[:2], bool)  # inside both masks, away from their outlines
    both[44 * scale + 1 : 60 * scale - 1, 70 * scale + 1 : 90 * scale - 1] = True
    under = (1 - ALPHA) * 128 + ALPHA * np.asarray(colours[1])
    best_on_top = np.round((1 - ALPHA) * under + ALPHA * np.asarray(colours[0]))  # the other way: 96, 32, 160
    pixels = image[both & ~covered]
    assert len(pixels) and (np.abs(pixels - best_on_top) <= 1).all()
