"""Geometry (point / box) prompt encoder of the detector.

Every point and box becomes one token, the sum of up to three encodings plus a label embedding:

* direct:  a linear map of the raw normalised coordinates,
* pooled:  image features read at the prompt (bilinear sample for a point, 7x7 RoI-align followed
           by a 7x7 convolution for a box) from the LayerNormed stride-14 map,
* sine:    a projection of the sine encoding of the location ([x | y] for points,
           [y | x | h | w] for boxes -- the two orders differ, as in the released weights).

Point tokens come first, then box tokens, then one CLS token placed right after the last valid token
of each batch element (so a prompt with no geometry still yields one token). The sequence is projected,
normalised, refined by pre-norm layers that cross-attend to the raw image features (+ position
encoding on the keys), and normalised again.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from sam3.device import upload
from sam3.config import GeometryConfig
from sam3.modeling.detector.fusion_encoder import FusionEncoderLayer
from sam3.modeling.layers.position_encoding import PositionEmbeddingSine
from sam3.modeling.outputs import GeometricPrompt
from sam3.ops.boxes import box_cxcywh_to_xyxy


def concat_right_padded(
    a: torch.Tensor, a_mask: torch.Tensor, b: torch.Tensor, b_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Join two right-padded sequences so that the valid tokens of ``b`` follow those of ``a``.

    a (B, Na, C), b (B, Nb, C), masks (B, Na) / (B, Nb) bool with True = padding.
    Returns (B, Na + Nb, C) and its mask; the result is right-padded again. Slots past the valid
    tokens keep whatever lands there (padding of ``a`` or ``b``, or zeros); they are masked out.
    """
    bsz, n_a, c = a.shape
    n_b = b.shape[1]
    len_a = (~a_mask).sum(dim=1)
    len_b = (~b_mask).sum(dim=1)
    out = torch.cat([a, a.new_zeros(bsz, n_b, c)], dim=1)
    index = torch.arange(n_b, device=a.device)[None, :] + len_a[:, None]  # (B, Nb)
    out = out.scatter(1, index[:, :, None].expand(-1, -1, c), b.to(out.dtype))
    positions = torch.arange(n_a + n_b, device=a.device)[None, :]
    mask = positions >= (len_a + len_b)[:, None]
    return out, mask


class GeometryEncoder(nn.Module):
    """Points and boxes -> prompt tokens.

    forward(prompt, img_feat (B, g*g, C) stride-14 features, img_pos (B, g*g, C), feat_hw (g, g))
    -> tokens (B, Np + Nb + 1, C), mask (B, Np + Nb + 1) bool, True = padding.
    """

    def __init__(self, cfg: GeometryConfig, d_model: int = 256):
        super().__init__()
        self.d_model = d_model
        self.roi_size = roi_size = cfg.roi_size
        self.pos_enc = PositionEmbeddingSine(d_model)
        self.label_embed = nn.Embedding(2, d_model)  # 0 negative, 1 positive
        self.cls_embed = nn.Embedding(1, d_model)

        self.points_direct_project = nn.Linear(2, d_model)
        self.points_pool_project = nn.Linear(d_model, d_model)
        self.points_pos_enc_project = nn.Linear(d_model, d_model)

        self.boxes_direct_project = nn.Linear(4, d_model)
        self.boxes_pool_project = nn.Conv2d(d_model, d_model, roi_size)
        self.boxes_pos_enc_project = nn.Linear(d_model + 2, d_model)  # sine(cy), sine(cx), h, w

        self.final_proj = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.img_pre_norm = nn.LayerNorm(d_model)

        self.encode = nn.ModuleList(
            FusionEncoderLayer(d_model, cfg.num_heads, cfg.dim_feedforward) for _ in range(cfg.num_layers)
        )
        self.encode_norm = nn.LayerNorm(d_model)

    def _encode_points(self, points: torch.Tensor, labels: torch.Tensor, fmap: torch.Tensor) -> torch.Tensor:
        """points (B, Np, 2) normalised xy, labels (B, Np), fmap (B, C, H, W) -> (B, Np, C)."""
        bsz, n = points.shape[:2]
        if n == 0:  # grid_sample / the sine encoding have nothing to do; keep the op graph trivial
            return fmap.new_zeros(bsz, 0, self.d_model)
        emb = self.points_direct_project(points)

        grid = points[:, :, None, :] * 2 - 1  # (B, Np, 1, 2) in [-1, 1]
        sampled = F.grid_sample(fmap, grid, mode="bilinear", align_corners=False)  # (B, C, Np, 1)
        emb = emb + self.points_pool_project(sampled.squeeze(-1).transpose(1, 2))

        pos_x, pos_y = self.pos_enc.encode_xy(points[..., 0].flatten(), points[..., 1].flatten())
        sine = torch.cat([pos_x, pos_y], dim=-1).view(bsz, n, -1)
        emb = emb + self.points_pos_enc_project(sine)
        return emb + self.label_embed(labels.long())

    def _encode_boxes(self, boxes: torch.Tensor, labels: torch.Tensor, fmap: torch.Tensor) -> torch.Tensor:
        """boxes (B, Nb, 4) normalised cxcywh, labels (B, Nb), fmap (B, C, H, W) -> (B, Nb, C)."""
        bsz, n = boxes.shape[:2]
        if n == 0:
            return fmap.new_zeros(bsz, 0, self.d_model)
        emb = self.boxes_direct_project(boxes)

        h, w = fmap.shape[-2:]
        scale = upload([w, h, w, h], boxes.device, boxes.dtype)
        xyxy = (box_cxcywh_to_xyxy(boxes) * scale).float()  # feature-map pixels
        # One (Nb, 4) box list per image; roi_align returns them image-major: (B*Nb, C, r, r).
        pooled = roi_align(fmap, list(xyxy.unbind(0)), self.roi_size)
        emb = emb + self.boxes_pool_project(pooled).view(bsz, n, self.d_model)

        cx, cy, bw, bh = boxes.unbind(-1)
        sine = self.pos_enc.encode_boxes(cx.flatten(), cy.flatten(), bw.flatten(), bh.flatten())
        emb = emb + self.boxes_pos_enc_project(sine.view(bsz, n, -1))
        return emb + self.label_embed(labels.long())

    def forward(
        self,
        prompt: GeometricPrompt,
        img_feat: torch.Tensor,
        img_pos: torch.Tensor,
        feat_hw: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        bsz, hw, c = img_feat.shape
        h, w = feat_hw
        if h * w != hw:
            raise ValueError(f"feat_hw {feat_hw} does not match {hw} image tokens")
        # Pooling reads a normalised copy of the map; the layers below attend to the raw features.
        fmap = self.img_pre_norm(img_feat).transpose(1, 2).reshape(bsz, c, h, w)

        tokens, mask = concat_right_padded(
            self._encode_points(prompt.points, prompt.point_labels, fmap),
            prompt.point_mask,
            self._encode_boxes(prompt.boxes, prompt.box_labels, fmap),
            prompt.box_mask,
        )
        cls = self.cls_embed.weight.view(1, 1, c).expand(bsz, 1, c)
        cls_mask = torch.zeros(bsz, 1, dtype=torch.bool, device=img_feat.device)
        tokens, mask = concat_right_padded(tokens, mask, cls, cls_mask)

        tokens = self.norm(self.final_proj(tokens))
        for layer in self.encode:
            tokens = layer(tokens, img_feat, memory_pos=img_pos, x_mask=mask)
        return self.encode_norm(tokens), mask
