"""MaskDecoder: checkpoint names, output shapes, token selection and the stability fallback."""

from __future__ import annotations

import pytest
import torch

from sam3.config import get_config
from sam3.modeling.interactive.mask_decoder import MaskDecoder
from sam3.modeling.interactive.prompt_encoder import PromptEncoder
from tests.conftest import checkpoint_shapes

CFG = get_config("tiny")
G = CFG.feature_size
C = CFG.d_model


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    enc = PromptEncoder.from_config(CFG).eval()
    dec = MaskDecoder.from_config(CFG).eval()
    with torch.no_grad():
        for p in list(enc.parameters()) + list(dec.parameters()):
            p.add_(torch.randn_like(p) * (0.05 if p.dim() > 1 else 0.2))
    b = 2
    coords = torch.rand(b, 2, 2) * CFG.image_size
    labels = torch.tensor([[1, 0], [1, 1]])
    sparse, dense = enc((coords, labels), None, None)
    inputs = dict(
        image_embeddings=torch.randn(b, C, G, G),
        image_pe=enc.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        repeat_image=False,
        high_res_features=[torch.randn(b, C // 8, 4 * G, 4 * G), torch.randn(b, C // 4, 2 * G, 2 * G)],
    )
    return dec, inputs


def _scaled(dec: MaskDecoder, scale: float) -> MaskDecoder:
    """A copy whose single-mask token produces logits scaled by ``scale`` (controls its stability)."""
    other = MaskDecoder.from_config(CFG).eval()
    other.load_state_dict(dec.state_dict())
    with torch.no_grad():
        last = other.output_hypernetworks_mlps[0].layers[-1]
        last.weight.mul_(scale)
        last.bias.mul_(scale)
    return other


def test_state_dict_matches_checkpoint_layout_on_meta():
    with torch.device("meta"):
        dec = MaskDecoder.from_config(get_config("sam3"))
    ours = {k: tuple(v.shape) for k, v in dec.state_dict().items()}
    assert ours == checkpoint_shapes("tracker.sam_mask_decoder.")


@torch.no_grad()
def test_multimask_outputs_three_candidates_and_their_tokens(parts):
    dec, inputs = parts
    masks, iou, tokens, obj = dec(multimask_output=True, **inputs)
    assert masks.shape == (2, 3, 4 * G, 4 * G)
    assert iou.shape == (2, 3) and torch.all((iou > 0) & (iou < 1))  # sigmoid head
    assert tokens.shape == (2, 3, C)
    assert obj.shape == (2, 1)
    all_masks, all_iou, all_tokens, _ = dec._predict_all(
        inputs["image_embeddings"], inputs["image_pe"], inputs["sparse_prompt_embeddings"],
        inputs["dense_prompt_embeddings"], False, inputs["high_res_features"],
    )  # fmt: skip
    torch.testing.assert_close(masks, all_masks[:, 1:])
    torch.testing.assert_close(tokens, all_tokens[:, 1:])


@torch.no_grad()
def test_single_mask_stable_keeps_token_zero(parts):
    dec, inputs = parts
    dec = _scaled(dec, 100.0)  # large logits: almost no pixel within +-delta -> stable
    all_masks, all_iou, all_tokens, _ = dec._predict_all(
        inputs["image_embeddings"], inputs["image_pe"], inputs["sparse_prompt_embeddings"],
        inputs["dense_prompt_embeddings"], False, inputs["high_res_features"],
    )  # fmt: skip
    assert torch.all(dec.stability_scores(all_masks[:, 0]) >= dec.stability_thresh)
    masks, iou, tokens, _ = dec(multimask_output=False, **inputs)
    assert masks.shape == (2, 1, 4 * G, 4 * G) and iou.shape == (2, 1) and tokens.shape == (2, 1, C)
    torch.testing.assert_close(masks, all_masks[:, :1])
    torch.testing.assert_close(iou, all_iou[:, :1])
    torch.testing.assert_close(tokens, all_tokens[:, :1])


@torch.no_grad()
def test_single_mask_unstable_falls_back_to_best_candidate(parts):
    dec, inputs = parts
    dec = _scaled(dec, 1e-3)  # tiny logits: area(> .05) / area(> -.05) ~ 0 -> unstable
    all_masks, all_iou, all_tokens, _ = dec._predict_all(
        inputs["image_embeddings"], inputs["image_pe"], inputs["sparse_prompt_embeddings"],
        inputs["dense_prompt_embeddings"], False, inputs["high_res_features"],
    )  # fmt: skip
    assert torch.all(dec.stability_scores(all_masks[:, 0]) < dec.stability_thresh)
    masks, iou, tokens, _ = dec(multimask_output=False, **inputs)
    best = all_iou[:, 1:].argmax(-1) + 1
    rows = torch.arange(2)
    torch.testing.assert_close(masks[:, 0], all_masks[rows, best])
    torch.testing.assert_close(iou[:, 0], all_iou[rows, best])
    # the pointer token stays the single-mask token even after the fallback
    torch.testing.assert_close(tokens, all_tokens[:, :1])
    # in training mode there is no fallback
    dec.train()
    masks_train, _, _, _ = dec(multimask_output=False, **inputs)
    torch.testing.assert_close(masks_train, all_masks[:, :1])


def test_stability_score_of_empty_mask_is_one():
    dec = MaskDecoder.from_config(CFG)
    logits = torch.full((1, 1, 4, 4), -1.0)
    assert dec.stability_scores(logits).item() == 1.0
    logits[0, 0, 0, :2] = torch.tensor([0.0, 1.0])  # 1 px above +delta, 2 px above -delta
    assert dec.stability_scores(logits).item() == pytest.approx(0.5)


@torch.no_grad()
def test_repeat_image_equals_explicit_batch(parts):
    dec, inputs = parts
    one = {**inputs, "image_embeddings": inputs["image_embeddings"][:1]}
    one["high_res_features"] = [h[:1] for h in inputs["high_res_features"]]
    repeated = dec(multimask_output=True, **{**one, "repeat_image": True})
    explicit = dec(
        multimask_output=True,
        **{
            **inputs,
            "image_embeddings": one["image_embeddings"].expand(2, -1, -1, -1),
            "high_res_features": [h.expand(2, -1, -1, -1) for h in one["high_res_features"]],
        },
    )
    for a, b in zip(repeated, explicit):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="repeat_image"):
        dec(multimask_output=True, **one)


@torch.no_grad()
@pytest.mark.parametrize("repeat", [False, True])
def test_fast_upscale_is_the_plain_upscaling_to_fp32_round_off(parts, repeat):
    """The click path's per-pixel upscaling (skips in block order, each transposed conv as one matmul)
    against the NCHW modules, for B prompts on B images and on one image (skips of batch 1 broadcast)."""
    dec, inputs = parts
    if repeat:
        inputs = dict(inputs, image_embeddings=inputs["image_embeddings"][:1], repeat_image=True)
        inputs["high_res_features"] = [t[:1] for t in inputs["high_res_features"]]
    plain = dec(**inputs, multimask_output=True)
    skips = dec.block_skips(inputs["high_res_features"])
    fast = dec(**dict(inputs, high_res_features=skips), multimask_output=True, fast_upscale=True)
    assert plain[0].shape == fast[0].shape == (2, 3, 4 * G, 4 * G)
    torch.testing.assert_close(fast[0], plain[0], atol=1e-4, rtol=1e-5)
    assert ((fast[0] > 0) != (plain[0] > 0)).float().mean() < 1e-4
    for a, b in zip(fast[1:], plain[1:]):
        assert torch.equal(a, b)  # IoU, tokens and object score come before the upscaling
