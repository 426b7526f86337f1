"""PromptEncoder: checkpoint names, padding point, label embeddings, Fourier PE, mask path."""

from __future__ import annotations

import math

import pytest
import torch

from sam3.config import get_config
from sam3.modeling.interactive.prompt_encoder import PromptEncoder
from tests.conftest import checkpoint_shapes


@pytest.fixture()
def encoder() -> PromptEncoder:
    torch.manual_seed(0)
    enc = PromptEncoder.from_config(get_config("tiny")).eval()
    with torch.no_grad():  # distinct, non-trivial embeddings so the label tables are tell-apart
        for p in enc.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return enc


def test_state_dict_matches_checkpoint_layout_on_meta():
    with torch.device("meta"):
        enc = PromptEncoder.from_config(get_config("sam3"))
    ours = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    assert ours == checkpoint_shapes("tracker.sam_prompt_encoder.")


def test_points_get_a_padding_point_and_label_embeddings(encoder):
    coords = torch.tensor([[[10.0, 20.0], [100.0, 50.0], [0.0, 0.0]]])
    labels = torch.tensor([[1, 0, -1]])
    sparse, dense = encoder((coords, labels), None, None)
    g = get_config("tiny").feature_size
    assert sparse.shape == (1, 4, 256) and dense.shape == (1, 256, g, g)
    # padding tokens (the given -1 and the appended one) are exactly not_a_point_embed
    assert torch.equal(sparse[0, 2], encoder.not_a_point_embed.weight[0])
    assert torch.equal(sparse[0, 3], encoder.not_a_point_embed.weight[0])
    # a positive click = Fourier code of its pixel centre + point_embeddings[1]
    code = encoder.pe_layer.encode((coords[0, 0] + 0.5) / encoder.image_size)
    torch.testing.assert_close(sparse[0, 0], code + encoder.point_embeddings[1].weight[0])
    code = encoder.pe_layer.encode((coords[0, 1] + 0.5) / encoder.image_size)
    torch.testing.assert_close(sparse[0, 1], code + encoder.point_embeddings[0].weight[0])
    # no mask -> no_mask_embed everywhere
    assert torch.equal(dense[0, :, 3, 5], encoder.no_mask_embed.weight[0])


def test_box_as_corner_points_equals_box_tokens(encoder):
    box = torch.tensor([[30.0, 40.0, 150.0, 170.0]])
    as_box, _ = encoder(None, box, None)  # no padding point when boxes are given
    as_points, _ = encoder((box.view(1, 2, 2), torch.tensor([[2, 3]])), None, None)
    assert as_box.shape == (1, 2, 256) and as_points.shape == (1, 3, 256)
    torch.testing.assert_close(as_box, as_points[:, :2])


def test_fourier_code_formula_and_dense_grid(encoder):
    gmat = encoder.pe_layer.positional_encoding_gaussian_matrix
    assert gmat.shape == (2, 128)
    xy = torch.tensor([0.25, 0.75])
    angle = 2 * math.pi * ((2 * xy - 1) @ gmat)
    torch.testing.assert_close(encoder.pe_layer.encode(xy), torch.cat([angle.sin(), angle.cos()]))
    pe = encoder.get_dense_pe()
    g = encoder.grid_size
    assert pe.shape == (1, 256, g, g)
    # cell (row i, col j) is encoded at its centre ((j + .5)/g, (i + .5)/g)
    i, j = 3, 11
    centre = torch.tensor([(j + 0.5) / g, (i + 0.5) / g])
    torch.testing.assert_close(pe[0, :, i, j], encoder.pe_layer.encode(centre))


def test_mask_prompt_goes_to_the_feature_grid(encoder):
    s = encoder.mask_input_size
    masks = torch.randn(2, 1, s, s)
    sparse, dense = encoder(None, None, masks)
    assert sparse.shape == (2, 0, 256)
    assert dense.shape == (2, 256, encoder.grid_size, encoder.grid_size)
    assert not torch.allclose(dense[0], dense[1])


def test_nothing_gives_batch_one(encoder):
    sparse, dense = encoder(None, None, None)
    assert sparse.shape == (1, 0, 256) and dense.shape[0] == 1
