"""SAM mask decoder with high-resolution skips, an object-score token and multimask selection.

Output tokens [object score, IoU, 4 mask tokens] are prepended to the prompt tokens and run through
the two-way transformer with the image embedding. The image side is upsampled 4x with the
stride-4 / stride-8 backbone skips added on the way; each mask token is mapped by its own
hypernetwork MLP to a 1x1 filter over the upsampled map. Token 0 predicts the single-mask answer,
tokens 1..3 the three ambiguity-resolving candidates.
"""

from __future__ import annotations

import torch
from torch import nn

from sam3.config import Sam3Config
from sam3.modeling.layers.norm import LayerNorm2d
from sam3.modeling.interactive.two_way_transformer import ImageTokens, TwoWayTransformer
from sam3.modeling.layers.mlp import MLP


def output_upscaling(c: int) -> nn.Sequential:
    """The 4x upscaling of the g x g decoder map, C -> C/4 -> C/8 channels (checkpoint names ``0``..``4``).

    Indices 2 and 4 are parameter-free GELUs; :func:`upscale` applies the stages one by one so that the skips
    can be added between them."""
    return nn.Sequential(
        nn.ConvTranspose2d(c, c // 4, kernel_size=2, stride=2),
        LayerNorm2d(c // 4),
        nn.GELU(),
        nn.ConvTranspose2d(c // 4, c // 8, kernel_size=2, stride=2),
        nn.GELU(),
    )


def upscale(stages: nn.Sequential, src: torch.Tensor, high_res_features: list[torch.Tensor]) -> torch.Tensor:
    """src (B, C, g, g) -> (B, C/8, 4g, 4g), adding the skips [(B, C/8, 4g, 4g), (B, C/4, 2g, 2g)] (after
    ``conv_s0`` / ``conv_s1``) after each transposed convolution."""
    feat_s0, feat_s1 = high_res_features
    up1, norm1, act1, up2, act2 = stages
    return act2(up2(act1(norm1(up1(src) + feat_s1))) + feat_s0)


class MaskDecoder(nn.Module):
    """Predict mask logits on the 4g x 4g grid from image and prompt embeddings.

    With ``multimask_output`` the three candidate masks are returned; otherwise the single-mask
    output, unless its stability score (IoU of the masks thresholded at +delta and -delta) is below
    ``stability_thresh`` at inference, in which case the candidate with the highest predicted IoU
    replaces it.
    """

    def __init__(
        self,
        transformer_dim: int = 256,
        num_multimask_outputs: int = 3,
        depth: int = 2,
        num_heads: int = 8,
        mlp_dim: int = 2048,
        stability_delta: float = 0.05,
        stability_thresh: float = 0.98,
    ):
        super().__init__()
        c = transformer_dim
        self.num_mask_tokens = num_multimask_outputs + 1
        self.stability_delta = stability_delta
        self.stability_thresh = stability_thresh
        self.transformer = TwoWayTransformer(depth, c, num_heads, mlp_dim, attention_downsample_rate=2)
        self.iou_token = nn.Embedding(1, c)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, c)
        self.obj_score_token = nn.Embedding(1, c)
        self.output_upscaling = output_upscaling(c)
        # Projections of the stride-4 / stride-8 backbone levels. Callers apply them once per image
        # (not on every click) and pass the results as ``high_res_features``.
        self.conv_s0 = nn.Conv2d(c, c // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(c, c // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(c, c, c // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(c, c, self.num_mask_tokens, 3, sigmoid_output=True)
        self.pred_obj_score_head = MLP(c, c, 1, 3)

    @classmethod
    def from_config(cls, cfg: Sam3Config) -> "MaskDecoder":
        t = cfg.tracker
        return cls(
            transformer_dim=cfg.d_model,
            num_multimask_outputs=t.num_multimask_outputs,
            depth=t.mask_decoder_depth,
            num_heads=t.mask_decoder_heads,
            mlp_dim=t.mask_decoder_mlp_dim,
            stability_delta=t.dynamic_multimask_stability_delta,
            stability_thresh=t.dynamic_multimask_stability_thresh,
        )

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        repeat_image: bool,
        high_res_features: list[torch.Tensor],
        image_tokens: ImageTokens | None = None,
        fast_upscale: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode masks for a batch of B prompts.

        image_embeddings:  (B, C, g, g), or (1, C, g, g) with ``repeat_image`` (one image, B prompts)
        image_pe:          (1, C, g, g) from ``PromptEncoder.get_dense_pe()``
        sparse_prompt_embeddings (B, N, C); dense_prompt_embeddings (B, C, g, g)
        high_res_features: [(B or 1, C/8, 4g, 4g), (B or 1, C/4, 2g, 2g)] after ``conv_s0`` / ``conv_s1``
        image_tokens: for B prompts on one image without a mask prompt, the image side precomputed by
                      ``transformer.precompute_image(image_embeddings + no_mask_embed, image_pe)``;
                      then ``image_pe`` and ``dense_prompt_embeddings`` are not read (may be None).
        fast_upscale: ``high_res_features`` are as :meth:`block_skips` makes them, and the upscaling runs per
                      pixel, channels-last, each transposed convolution as one matmul
                      (:meth:`_upscale_blocked`): the same maths to fp32 round-off, with no layout
                      conversion of the 4g x 4g map (the click path; the tracker keeps the plain path).
        Returns masks (B, K, 4g, 4g) logits, iou (B, K), sam_tokens_out (B, K', C),
        object_score_logits (B, 1), with K = 3 for multimask output, else 1. ``sam_tokens_out`` is
        the token the tracker turns into an object pointer: the three candidate tokens (K' = 3) with
        multimask output, else the single-mask token (K' = 1) even when the stability fallback
        replaced the single mask.
        """
        masks, iou, mask_tokens, object_score_logits = self._predict_all(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
            repeat_image, high_res_features, image_tokens, fast_upscale,
        )  # fmt: skip
        if multimask_output:
            masks, iou, tokens = masks[:, 1:], iou[:, 1:], mask_tokens[:, 1:]
        else:
            tokens = mask_tokens[:, 0:1]
            if self.training:
                masks, iou = masks[:, 0:1], iou[:, 0:1]
            else:
                masks, iou = self._stability_fallback(masks, iou)
        return masks, iou, tokens, object_score_logits

    def _predict_all(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        repeat_image: bool,
        high_res_features: list[torch.Tensor],
        image_tokens: ImageTokens | None = None,
        fast_upscale: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """All 4 masks (B, 4, 4g, 4g), all 4 IoUs (B, 4), the 4 mask tokens (B, 4, C), object logit (B, 1)."""
        hs, src = self._transformer(image_embeddings, image_pe, sparse, dense, repeat_image, image_tokens)
        object_token, iou_token = hs[:, 0], hs[:, 1]
        mask_tokens = hs[:, 2 : 2 + self.num_mask_tokens]
        masks = self._masks(mask_tokens, src, image_embeddings.shape, high_res_features, fast_upscale)
        return masks, self.iou_prediction_head(iou_token), mask_tokens, self.pred_obj_score_head(object_token)

    def candidate_masks(
        self,
        image_embeddings: torch.Tensor,
        sparse: torch.Tensor,
        high_res_features: list[torch.Tensor],
        image_tokens: ImageTokens,
        iou_floor: float,
        fast_upscale: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The multimask output only where it can matter: the IoU head reads the transformer's tokens alone, so
        the upscaling (the decoder's largest cost) runs only for the prompts with a candidate scoring above
        ``iou_floor`` (the automatic mask generator drops every other mask before looking at it).

        B prompts on one image without a mask prompt (``image_tokens`` as in :meth:`forward`).
        Returns rows (R,) int64 (the prompts kept, ascending), masks (R, 3, 4g, 4g) logits of those rows, and the
        candidates' IoUs (B, 3) of every prompt. A kept row's masks are :meth:`forward`'s (``multimask_output``)
        for that prompt, computed in a smaller batch (equal to fp32 round-off).
        """
        hs, src = self._transformer(image_embeddings, None, sparse, None, False, image_tokens)
        iou = self.iou_prediction_head(hs[:, 1])[:, 1:]
        rows = (iou > iou_floor).any(dim=1).nonzero()[:, 0]
        if rows.numel() == 0:
            _, _, h, w = image_embeddings.shape
            return rows, iou.new_zeros(0, self.num_mask_tokens - 1, 4 * h, 4 * w), iou
        mask_tokens = hs.index_select(0, rows)[:, 2 : 2 + self.num_mask_tokens]
        b = sparse.shape[0]
        skips = [f.index_select(0, rows) if f.shape[0] == b and b > 1 else f for f in high_res_features]
        shape = (rows.shape[0], *image_embeddings.shape[1:])
        masks = self._masks(mask_tokens, src.index_select(0, rows), shape, skips, fast_upscale)
        return rows, masks[:, 1:], iou

    def _transformer(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor | None,
        sparse: torch.Tensor,
        dense: torch.Tensor | None,
        repeat_image: bool,
        image_tokens: ImageTokens | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (hs (B, 2 + 4 + N, C) output tokens, src (B, g*g, C) image tokens) of the two-way transformer."""
        b = sparse.shape[0]
        output_tokens = torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight])
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
        if image_tokens is not None:
            if image_embeddings.shape[0] != 1:
                raise ValueError("precomputed image tokens describe one image; got a batch of image embeddings")
            hs, src = self.transformer(None, None, tokens, image_tokens=image_tokens)
        else:
            if repeat_image:
                src = torch.repeat_interleave(image_embeddings, b, dim=0)
            elif image_embeddings.shape[0] != b:
                raise ValueError(
                    f"{image_embeddings.shape[0]} image embeddings for {b} prompts; pass repeat_image=True"
                )
            else:
                src = image_embeddings
            src = src + dense
            pos = torch.repeat_interleave(image_pe, b, dim=0)
            hs, src = self.transformer(src, pos, tokens)
        return hs, src

    def _masks(
        self, mask_tokens: torch.Tensor, src: torch.Tensor, embed_shape: torch.Size | tuple,
        high_res_features: list[torch.Tensor], fast_upscale: bool,
    ) -> torch.Tensor:  # fmt: skip
        """mask tokens (B, 4, C) and image tokens (B, g*g, C) -> the 4 masks (B, 4, 4g, 4g) logits."""
        b = mask_tokens.shape[0]
        _, c, h, w = embed_shape
        hyper = torch.stack([mlp(mask_tokens[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        if fast_upscale:
            return self._upscale_blocked(src.reshape(b, h, w, c), high_res_features, hyper)
        upscaled = upscale(self.output_upscaling, src.transpose(1, 2).reshape(b, c, h, w), high_res_features)
        _, cu, hu, wu = upscaled.shape
        return (hyper @ upscaled.view(b, cu, hu * wu)).view(b, -1, hu, wu)

    def block_skips(self, high_res_features: list[torch.Tensor]) -> list[torch.Tensor]:
        """The skips [(B, C/8, 4g, 4g), (B, C/4, 2g, 2g)] (after ``conv_s0`` / ``conv_s1``) as ``fast_upscale``
        reads them: in its pixel order, [(B, g, g, 2, 2, 2, 2, C/8), (B, g, g, 2, 2, C/4)] with output pixel
        (4i + 2a + c, 4j + 2b + d) at index (i, j, a, b, c, d), and each plus the bias of the transposed
        convolution it is added to. Made once per image."""
        s0, s1 = high_res_features
        up1, up2 = self.output_upscaling[0], self.output_upscaling[3]
        b0, c0, h0, w0 = s0.shape
        b1, c1, h1, w1 = s1.shape
        s0 = s0.view(b0, c0, h0 // 4, 2, 2, w0 // 4, 2, 2).permute(0, 2, 5, 3, 6, 4, 7, 1)
        s1 = s1.view(b1, c1, h1 // 2, 2, w1 // 2, 2).permute(0, 2, 4, 3, 5, 1)
        return [s0.contiguous() + up2.bias, s1.contiguous() + up1.bias]

    def _upscale_blocked(self, src: torch.Tensor, skips: list[torch.Tensor], hyper: torch.Tensor) -> torch.Tensor:
        """The upscaling and the hypernetwork product per pixel, channels-last and never shuffled until the
        masks: src (B, g, g, C), skips from :meth:`block_skips` (batch B or 1), hyper (B, K, C/8)
        -> masks (B, K, 4g, 4g).

        Every stage after the first transposed convolution is per pixel (the LayerNorm2d over channels,
        the GELUs, the skips, the second transposed convolution, the hypernetwork product), so the pixels
        stay in the order the two 2x2 transposed convolutions make them, and only the K masks are
        rearranged at the end. Same maths as the NCHW path in another summation order.
        """
        s0, s1 = skips
        up1, norm1, act1, up2, act2 = self.output_upscaling
        b, gh, gw, _ = src.shape
        x = _per_pixel_2x2(src, up1) + s1  # (B, g, g, 2, 2, C/4); the skips carry the biases
        x = act1(norm1.forward_channels_last(x))
        x = act2(_per_pixel_2x2(x, up2) + s0)  # (B, g, g, 2, 2, 2, 2, C/8)
        masks = hyper @ x.reshape(b, -1, x.shape[-1]).transpose(1, 2)  # (B, K, g*g*16), block order
        k = masks.shape[1]
        masks = masks.view(b, k, gh, gw, 2, 2, 2, 2).permute(0, 1, 2, 4, 6, 3, 5, 7)  # (B, K, i, a, c, j, b, d)
        return masks.reshape(b, k, 4 * gh, 4 * gw)

    def stability_scores(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """(..., H, W) logits -> (...) area(logit > delta) / area(logit > -delta), 1 where both are empty."""
        flat = mask_logits.flatten(-2)
        inner = (flat > self.stability_delta).sum(-1).float()
        outer = (flat > -self.stability_delta).sum(-1).float()
        return torch.where(outer > 0, inner / outer, 1.0)

    def _stability_fallback(self, masks: torch.Tensor, iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Single-mask output, or the best candidate by predicted IoU where the single mask is unstable."""
        rows = torch.arange(masks.shape[0], device=masks.device)
        best = iou[:, 1:].argmax(dim=-1)
        best_mask = masks[:, 1:][rows, best].unsqueeze(1)
        best_iou = iou[:, 1:][rows, best].unsqueeze(1)
        stable = self.stability_scores(masks[:, 0:1]) >= self.stability_thresh  # (B, 1)
        out_masks = torch.where(stable[..., None, None], masks[:, 0:1], best_mask)
        out_iou = torch.where(stable, iou[:, 0:1], best_iou)
        return out_masks, out_iou


def _per_pixel_2x2(x: torch.Tensor, conv: nn.ConvTranspose2d) -> torch.Tensor:
    """``conv`` (kernel 2, stride 2) without its bias on channels-last pixels, unshuffled: x (..., Cin) ->
    (..., 2, 2, Cout), where [..., a, b, :] is the output pixel at offset (a, b) of the input pixel's 2x2 block.

    Each input pixel makes its block independently, so the layer is one matmul (N, Cin) @ (Cin, 4*Cout).
    """
    cin, cout = conv.in_channels, conv.out_channels
    weight = conv.weight.permute(0, 2, 3, 1).reshape(cin, 4 * cout)  # (Cin, Cout, kh, kw) -> (Cin, kh*kw*Cout)
    return (x.reshape(-1, cin) @ weight).view(*x.shape[:-1], 2, 2, cout)
