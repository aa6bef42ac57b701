"""Masks <-> YouTube-VIS segmentations, checked against hand-computed run lengths and pycocotools."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from ifrvis.data.masks import decode_segmentation, encode_rle, mask_area, mask_bbox


def test_uncompressed_rle_counts_by_hand():
    # column-major: column 0 = [0, 1], column 1 = [1, 1], column 2 = [0, 0] -> 0 1 1 1 0 0
    mask = np.array([[0, 1, 0], [1, 1, 0]], dtype=bool)
    assert encode_rle(mask, compressed=False) == {"size": [2, 3], "counts": [1, 3, 2]}
    # a mask starting with a foreground pixel starts with a zero-length background run
    starts_on = np.array([[1, 0], [1, 0]], dtype=bool)
    assert encode_rle(starts_on, compressed=False)["counts"] == [0, 2, 2]


@pytest.mark.parametrize("compressed", [True, False])
def test_round_trip_random_masks(compressed):
    rng = np.random.default_rng(0)
    for shape in [(5, 7), (16, 9), (1, 1)]:
        mask = rng.random(shape) < 0.4
        rle = encode_rle(mask, compressed=compressed)
        assert isinstance(rle["counts"], str if compressed else list)
        np.testing.assert_array_equal(decode_segmentation(rle, *shape), mask)
        reference = mask_utils.decode(
            mask_utils.frPyObjects(rle, *shape)
            if not compressed
            else {"size": rle["size"], "counts": rle["counts"].encode()}
        )
        np.testing.assert_array_equal(reference.astype(bool), mask)


def test_polygon_and_null():
    square = [[2.0, 1.0, 6.0, 1.0, 6.0, 4.0, 2.0, 4.0]]  # x from 2 to 6, y from 1 to 4
    decoded = decode_segmentation(square, 8, 10)
    assert decoded.shape == (8, 10)
    ys, xs = np.nonzero(decoded)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (2, 5, 1, 3)  # pycocotools' half-open raster
    assert not decode_segmentation(None, 3, 4).any()


def test_size_mismatch_raises():
    rle = encode_rle(np.ones((4, 5), dtype=bool))
    with pytest.raises(ValueError, match="4x5 differs from the video's 5x4"):
        decode_segmentation(rle, 5, 4)


def test_area_and_bbox():
    mask = np.zeros((6, 8), dtype=bool)
    mask[2:5, 3:7] = True
    mask[1, 3] = True
    assert mask_area(mask) == 13
    assert mask_bbox(mask) == [3.0, 1.0, 4.0, 4.0]
    assert mask_bbox(np.zeros((3, 3), dtype=bool)) is None
