"""SAM prompt encoder: clicks, box corners and a low-res mask -> sparse and dense prompt embeddings.

Points are encoded with random Fourier features (a fixed Gaussian frequency matrix stored in the
checkpoint) plus one learned embedding per label. A mask prompt (logits on the 4g x 4g grid) is
downscaled by two stride-2 convolutions to the g x g feature grid; without one, a learned
``no_mask_embed`` fills the grid.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sam3.config import Sam3Config
from sam3.modeling.layers.norm import LayerNorm2d


class RandomFourierEncoding(nn.Module):
    """Encode (x, y) in [0, 1]^2 as [sin(2 pi (2p - 1) G), cos(2 pi (2p - 1) G)].

    ``positional_encoding_gaussian_matrix`` G (2, F) is a persistent buffer: it is random at
    construction and the checkpoint's copy must be loaded. Output has 2F channels.
    """

    def __init__(self, num_feats: int):
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_feats))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) normalised (x, y) -> (..., 2F)."""
        proj = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        proj = 2 * math.pi * proj
        return torch.cat([proj.sin(), proj.cos()], dim=-1)

    def grid(self, h: int, w: int) -> torch.Tensor:
        """Encoding of the centres of an h x w grid of cells: (2F, h, w)."""
        g = self.positional_encoding_gaussian_matrix
        ys = (torch.arange(h, device=g.device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=g.device, dtype=torch.float32) + 0.5) / w
        xy = torch.stack([xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w)], dim=-1)
        return self.encode(xy).permute(2, 0, 1)


class PromptEncoder(nn.Module):
    """Sparse (points, box corners) and dense (mask) prompt embeddings for the SAM mask decoder.

    Point labels: 1 positive click, 0 negative click, 2 / 3 top-left / bottom-right box corner,
    -1 padding (its Fourier code is replaced by ``not_a_point_embed``).
    """

    num_point_embeddings = 4

    def __init__(self, embed_dim: int, image_size: int, grid_size: int, mask_in_chans: int = 16):
        super().__init__()
        self.embed_dim = embed_dim
        self.image_size = image_size
        self.grid_size = grid_size
        self.pe_layer = RandomFourierEncoding(embed_dim // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.no_mask_embed = nn.Embedding(1, embed_dim)
        # 4g -> 2g -> g, widening 1 -> c/4 -> c, then a 1x1 projection to the embedding width.
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )

    @classmethod
    def from_config(cls, cfg: Sam3Config) -> "PromptEncoder":
        return cls(cfg.d_model, cfg.image_size, cfg.feature_size, cfg.tracker.mask_in_chans)

    @property
    def mask_input_size(self) -> int:
        """Side of the mask prompt grid (4g; 288 for the released model)."""
        return 4 * self.grid_size

    def get_dense_pe(self) -> torch.Tensor:
        """Fourier encoding of the g x g feature grid: (1, C, g, g)."""
        return self.pe_layer.grid(self.grid_size, self.grid_size).unsqueeze(0)

    def _embed_points(self, coords: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """coords (B, N, 2) model-input pixels (x, y), labels (B, N) -> (B, N (+1 if pad), C)."""
        coords = coords + 0.5  # pixel index -> pixel centre
        if pad:
            # A "not a point" token stands in for the absent box, as in SAM's training.
            b = coords.shape[0]
            coords = torch.cat([coords, coords.new_zeros(b, 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((b, 1), -1)], dim=1)
        embedding = self._encode_pixels(coords)
        labels = labels.unsqueeze(-1)
        embedding = torch.where(labels == -1, self.not_a_point_embed.weight.expand_as(embedding), embedding)
        for value, table in enumerate(self.point_embeddings):
            embedding = torch.where(labels == value, embedding + table.weight, embedding)
        return embedding

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """boxes (B, 4) xyxy model-input pixels -> corner tokens (B, 2, C)."""
        corners = self._encode_pixels(boxes.reshape(-1, 2, 2) + 0.5)
        corner_tables = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight])
        return corners + corner_tables

    def _encode_pixels(self, coords: torch.Tensor) -> torch.Tensor:
        """(B, N, 2) pixel (x, y) -> (B, N, C) Fourier code of the position normalised by the input size."""
        return self.pe_layer.encode(coords.float() / self.image_size)

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed the prompts of a batch.

        points: (coords (B, N, 2) in model-input pixels (x, y), labels (B, N)) or None
        boxes:  (B, 4) xyxy model-input pixels or None; without boxes a padding point is appended
        masks:  (B, 1, 4g, 4g) mask logits or None
        Returns sparse (B, N', C) and dense (B, C, g, g) embeddings.
        """
        if points is not None:
            bs = points[0].shape[0]
        elif boxes is not None:
            bs = boxes.shape[0]
        elif masks is not None:
            bs = masks.shape[0]
        else:
            bs = 1
        weight = self.no_mask_embed.weight
        sparse = [weight.new_zeros(bs, 0, self.embed_dim)]
        if points is not None:
            sparse.append(self._embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            sparse.append(self._embed_boxes(boxes))
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = weight.reshape(1, -1, 1, 1).expand(bs, -1, self.grid_size, self.grid_size)
        return torch.cat(sparse, dim=1), dense
