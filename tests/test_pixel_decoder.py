import math

import torch

from ifrvis.modeling.backbone import TinyBackbone
from ifrvis.modeling.pixel_decoder import MSDeformAttn, MSDeformAttnPixelDecoder, ms_deform_attn_sample


def naive_bilinear(feature: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Sample `feature (C, h, w)` at normalised (x, y): pixel centres at (i + 0.5) / size, zeros outside."""
    _, h, w = feature.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(feature.shape[0], dtype=feature.dtype)
    for xi, yi in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
        if 0 <= xi < w and 0 <= yi < h:
            out += (1 - abs(px - xi)) * (1 - abs(py - yi)) * feature[:, yi, xi]
    return out


def naive_deform_attn(value, shapes, locations, weights):
    """Loop over batch, query, head, level and point: the definition of multi-scale deformable attention."""
    n, _, heads, head_dim = value.shape
    _, num_queries, _, levels, points, _ = locations.shape
    out = torch.zeros(n, num_queries, heads * head_dim, dtype=value.dtype)
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    for b in range(n):
        for q in range(num_queries):
            for m in range(heads):
                acc = torch.zeros(head_dim, dtype=value.dtype)
                for level, (h, w) in enumerate(shapes):
                    feature = value[b, starts[level] : starts[level + 1], m].T.reshape(head_dim, h, w)
                    for p in range(points):
                        x, y = locations[b, q, m, level, p].tolist()
                        acc += weights[b, q, m, level, p] * naive_bilinear(feature, x, y)
                out[b, q, m * head_dim : (m + 1) * head_dim] = acc
    return out


def test_deformable_sampling_matches_naive_loop():
    torch.manual_seed(0)
    shapes = [(3, 5), (6, 4), (2, 2)]
    n, heads, head_dim, num_queries, points = 2, 2, 3, 4, 3
    value = torch.randn(n, sum(h * w for h, w in shapes), heads, head_dim, dtype=torch.float64)
    # Locations spill beyond [0, 1] so that zero padding is exercised too.
    locations = torch.rand(n, num_queries, heads, len(shapes), points, 2, dtype=torch.float64) * 1.4 - 0.2
    weights = torch.rand(n, num_queries, heads, len(shapes), points, dtype=torch.float64)
    fast = ms_deform_attn_sample(value, shapes, locations, weights)
    slow = naive_deform_attn(value, shapes, locations, weights)
    assert fast.shape == (n, num_queries, heads * head_dim)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)


def test_msdeformattn_module_matches_naive_with_random_weights():
    torch.manual_seed(1)
    dim, heads, levels, points = 8, 2, 2, 2
    attn = MSDeformAttn(dim, levels, heads, points).double()
    for param in attn.parameters():
        torch.nn.init.normal_(param, std=0.5)
    shapes = [(4, 3), (2, 2)]
    query = torch.randn(1, 5, dim, dtype=torch.float64)
    value = torch.randn(1, 16, dim, dtype=torch.float64)
    ref = torch.rand(1, 5, levels, 2, dtype=torch.float64)
    out = attn(query, ref, value, shapes)
    # Independent recomputation of the module's locations and weights, then the naive sampler.
    v = attn.value_proj(value).view(1, 16, heads, dim // heads)
    offsets = attn.sampling_offsets(query).view(1, 5, heads, levels, points, 2)
    w = (
        attn.attention_weights(query)
        .view(1, 5, heads, levels * points)
        .softmax(-1)
        .view(1, 5, heads, levels, points)
    )
    locations = torch.empty_like(offsets)
    for level, (h, wd) in enumerate(shapes):
        locations[:, :, :, level, :, 0] = ref[:, :, None, level, None, 0] + offsets[:, :, :, level, :, 0] / wd
        locations[:, :, :, level, :, 1] = ref[:, :, None, level, None, 1] + offsets[:, :, :, level, :, 1] / h
    expected = attn.output_proj(naive_deform_attn(v, shapes, locations, w))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_initial_offsets_point_in_head_directions():
    attn = MSDeformAttn(dim=16, levels=3, heads=8, points=4)
    bias = attn.sampling_offsets.bias.view(8, 3, 4, 2)
    # Head 0 looks right (+x), head 2 down (+y); point k at distance k + 1.
    torch.testing.assert_close(bias[0, 0, :, 0], torch.tensor([1.0, 2.0, 3.0, 4.0]))
    torch.testing.assert_close(bias[2, 1, :, 1], torch.tensor([1.0, 2.0, 3.0, 4.0]))


def test_pixel_decoder_shapes_and_gradients():
    torch.manual_seed(0)
    backbone = TinyBackbone()
    decoder = MSDeformAttnPixelDecoder(
        backbone.out_channels, dim=32, mask_dim=24, layers=2, heads=4, points=2, ffn_dim=64
    )
    # At Deformable DETR's initialisation offsets and attention weights ignore the query (zero weights),
    # so the positional/level embeddings get no gradient: perturb them to check every path.
    for layer in decoder.layers:
        torch.nn.init.normal_(layer.self_attn.sampling_offsets.weight, std=0.1)
        torch.nn.init.normal_(layer.self_attn.attention_weights.weight, std=0.1)
    images = torch.randn(2, 3, 64, 96)
    mask_features, multi_scale = decoder(backbone(images))
    assert mask_features.shape == (2, 24, 16, 24)
    assert [tuple(m.shape) for m in multi_scale] == [(2, 32, 2, 3), (2, 32, 4, 6), (2, 32, 8, 12)]
    (mask_features.square().mean() + sum(m.square().mean() for m in multi_scale)).backward()
    for name, param in decoder.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_pixel_decoder_is_per_frame():
    """Frames are independent: a frame's output does not depend on the other frames of the batch."""
    torch.manual_seed(0)
    backbone = TinyBackbone().eval()  # BatchNorm in training mode mixes the frames of a batch
    decoder = MSDeformAttnPixelDecoder(
        backbone.out_channels, dim=32, mask_dim=32, layers=1, heads=4, points=2, ffn_dim=64
    ).eval()
    images = torch.randn(3, 3, 64, 64)
    together, _ = decoder(backbone(images))
    alone, _ = decoder(backbone(images[1:2]))
    torch.testing.assert_close(together[1:2], alone, atol=1e-5, rtol=1e-5)
