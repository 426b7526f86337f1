"""Text encoder (tiny preset): shapes, padding mask, causality; tokenizer framing; the state-dict layout
of the released language backbone (built on the meta device)."""

from __future__ import annotations

import pytest
import torch

from sam3.config import get_config
from sam3.modeling.text.text_encoder import TextEncoder
from sam3.modeling.text.tokenizer import Tokenizer
from sam3.modeling.vl_backbone import VisionLanguageBackbone
from tests.conftest import checkpoint_entries


@pytest.fixture(scope="module")
def encoder(tiny):
    torch.manual_seed(0)
    return TextEncoder(tiny.text, tiny.d_model).eval()


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer()


def test_features_and_mask(tiny, encoder, tokenizer):
    ids = tokenizer(["a red cat", "visual", "a person riding a bicycle on a sunny street"])
    assert ids.shape == (3, tiny.text.context_length) and ids.dtype == torch.long
    with torch.no_grad():
        out = VisionLanguageBackbone(None, encoder).forward_text(ids)
    assert out.features.shape == (3, tiny.text.context_length, tiny.d_model)
    assert torch.isfinite(out.features).all()
    assert torch.equal(out.mask, ids == 0)
    assert out.mask.dtype == torch.bool
    assert out.mask[0].tolist() == [False] * 5 + [True] * 27  # SOT a red cat EOT, then padding


def test_attention_is_causal(encoder, tokenizer):
    ids = tokenizer(["a red cat sitting on a mat"])
    changed = ids.clone()
    j = 4
    changed[0, j] = 2368 if ids[0, j] != 2368 else 320
    with torch.no_grad():
        a, b = encoder(ids).features, encoder(changed).features
    assert torch.equal(a[:, :j], b[:, :j])  # earlier tokens never see later ones
    assert not torch.allclose(a[:, j:], b[:, j:])
    # so padding after the end token cannot change the real tokens either
    padded = ids.clone()
    padded[padded == 0] = 7
    with torch.no_grad():
        c = encoder(padded).features
    n = int((ids != 0).sum())
    assert torch.equal(a[:, :n], c[:, :n])


def test_batch_rows_are_independent(encoder, tokenizer):
    ids = tokenizer(["a red cat", "two dogs"])
    with torch.no_grad():
        both = encoder(ids).features
        second = encoder(ids[1:]).features
    assert torch.allclose(both[1:], second, atol=1e-5)


def test_random_init_is_sane(encoder, tiny):
    text = encoder.encoder
    assert 0.005 < text.positional_embedding.std().item() < 0.02
    assert torch.isfinite(text.text_projection).all()
    assert text.text_projection.shape == (tiny.text.width, tiny.text.output_dim)


def test_too_many_tokens_rejected(encoder):
    with pytest.raises(ValueError):
        encoder(torch.ones(1, 33, dtype=torch.long))


def test_tokenizer_framing(tokenizer):
    ids = tokenizer(["a red cat", ""])
    assert ids[0, :5].tolist() == [49406, 320, 736, 2368, 49407] and not ids[0, 5:].any()
    assert ids[1, :2].tolist() == [49406, 49407] and not ids[1, 2:].any()
    long = tokenizer(" ".join(["cat"] * 50))[0]
    assert long[0] == 49406 and long[-1] == 49407 and (long[1:-1] == 2368).all()  # cut, end token kept last
    assert torch.equal(tokenizer("visual"), tokenizer(["visual"]))
    assert torch.equal(tokenizer(["  Visual&amp;amp;  "]), tokenizer(["visual&"]))


def test_text_without_language_backbone_raises():
    with pytest.raises(RuntimeError):
        VisionLanguageBackbone(None, None).forward_text(torch.zeros(1, 32, dtype=torch.long))


def test_state_dict_matches_checkpoint_layout():
    expected = checkpoint_entries("detector.backbone.language_backbone.")
    cfg = get_config("sam3")
    with torch.device("meta"):
        encoder = TextEncoder(cfg.text, cfg.d_model)
    ours = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in encoder.state_dict().items()}
    assert ours == expected
    assert len(expected) == 24 * 12 + 7


def test_meta_construction_then_assign_load(tiny, encoder, tokenizer):
    with torch.device("meta"):
        lazy = TextEncoder(tiny.text, tiny.d_model)
    lazy.load_state_dict(encoder.state_dict(), strict=True, assign=True)
    ids = tokenizer(["a red cat"])
    with torch.no_grad():
        assert torch.equal(lazy.eval()(ids).features, encoder(ids).features)
