"""SAM 3.1's tracker: the multiplexed propagation heads and the per-object interactive (click) heads.

The checkpoint holds it at ``tracker.model.*`` (upstream wraps the tracking model in a predictor object
whose ``model`` it is; :class:`MultiplexTrackerHolder` keeps that name). Two sets of SAM heads:

* interactive (``interactive_sam_prompt_encoder``, ``interactive_sam_mask_decoder``,
  ``interactivity_no_mem_embed``, ``interactive_obj_ptr_proj``, ``interactive_mask_downsample``): SAM 3's
  prompt encoder and mask decoder (same modules, same sizes; the IoU head has no sigmoid here), one object at
  a time, on the interactive neck's features: clicks and boxes on an image or a video frame;
* propagation (``sam_mask_decoder``: :class:`MultiplexMaskDecoder`, ``transformer.encoder``:
  :class:`DecoupledMemoryAttention`, ``maskmem_backbone``: :class:`MultiplexMemoryEncoder`, ...): whole
  buckets of objects per pass, on the propagation neck's features.
"""

from __future__ import annotations

import torch
from torch import nn

from sam3.config_multiplex import Sam31Config
from sam3.modeling.interactive.mask_decoder import MaskDecoder
from sam3.modeling.interactive.prompt_encoder import PromptEncoder, RandomFourierEncoding
from sam3.modeling.layers.mlp import MLP
from sam3.modeling.multiplex.mask_decoder import MultiplexMaskDecoder
from sam3.modeling.multiplex.memory_attention import DecoupledMemoryAttention
from sam3.modeling.multiplex.memory_encoder import MultiplexMemoryEncoder


def interactive_mask_decoder(config: Sam31Config) -> MaskDecoder:
    """SAM 3's mask decoder at the 3.1 sizes, with the IoU head returning logits (no sigmoid), as released."""
    decoder = MaskDecoder.from_config(config.detector_config())
    decoder.iou_prediction_head.sigmoid_output = False
    return decoder


class MultiplexTracker(nn.Module):
    """The parameters and heads of SAM 3.1's tracker (``tracker.model.*`` in ``sam3.1_multiplex.pt``)."""

    def __init__(self, config: Sam31Config):
        super().__init__()
        c, t = config.d_model, config.tracker
        self.config = config
        self.hidden_dim = c
        self.multiplex_count = t.multiplex_count
        self.num_maskmem = t.num_maskmem
        self.grid_size = config.feature_size
        # interactive heads (one object per call)
        self.interactive_sam_prompt_encoder = PromptEncoder(c, config.image_size, config.feature_size, t.mask_in_chans)
        self.interactive_sam_mask_decoder = interactive_mask_decoder(config)
        self.interactivity_no_mem_embed = nn.Parameter(torch.zeros(1, 1, c))
        self.interactive_obj_ptr_proj = MLP(c, c, c, 3)
        self.interactive_mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        # propagation heads (a bucket of objects per call)
        self.image_pe_layer = RandomFourierEncoding(c // 2)
        self.sam_mask_decoder = MultiplexMaskDecoder(
            c,
            t.multiplex_count,
            t.num_multimask_outputs,
            t.mask_decoder_depth,
            t.mask_decoder_heads,
            t.mask_decoder_mlp_dim,
        )
        self.transformer = nn.ModuleDict({"encoder": DecoupledMemoryAttention(config)})
        self.maskmem_backbone = MultiplexMemoryEncoder(config)
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(t.num_maskmem, 1, 1, t.mem_dim))
        self.no_obj_embed_spatial = nn.Parameter(torch.zeros(t.multiplex_count, t.mem_dim))
        self.output_valid_embed = nn.Parameter(torch.zeros(t.multiplex_count, c))
        self.output_invalid_embed = nn.Parameter(torch.zeros(t.multiplex_count, c))
        self.obj_ptr_proj = MLP(c, c, c, 3)
        self.no_obj_ptr_linear = nn.Linear(c, c)
        self.obj_ptr_tpos_proj = nn.Linear(c, t.mem_dim)
        self._init_embeddings()

    def _init_embeddings(self) -> None:
        # Random init (upstream: truncated normal, std 0.02); the checkpoint overwrites them.
        for p in (
            self.interactivity_no_mem_embed,
            self.maskmem_tpos_enc,
            self.no_obj_embed_spatial,
            self.output_valid_embed,
            self.output_invalid_embed,
        ):
            if not p.is_meta:
                nn.init.trunc_normal_(p, std=0.02)

    @property
    def memory_attention(self) -> DecoupledMemoryAttention:
        return self.transformer["encoder"]

    def get_dense_pe(self) -> torch.Tensor:
        """Fourier encoding of the g x g grid for the propagation decoder: (1, C, g, g)."""
        return self.image_pe_layer.grid(self.grid_size, self.grid_size).unsqueeze(0)

    def slot_embeddings(self, valid: torch.Tensor) -> torch.Tensor:
        """valid (buckets, M) bool -> (buckets, M, C): the embedding added to each slot's mask tokens."""
        v = valid.to(self.output_valid_embed.dtype).unsqueeze(-1)
        return v * self.output_valid_embed + (1 - v) * self.output_invalid_embed


class MultiplexTrackerHolder(nn.Module):
    """``tracker``: holds :class:`MultiplexTracker` as ``model`` (the checkpoint's ``tracker.model.*``) and offers
    the interactive heads under the names the click predictor reads (``sam3.inference.interactive.SamHeads``)."""

    def __init__(self, config: Sam31Config):
        super().__init__()
        self.model = MultiplexTracker(config)

    @property
    def sam_prompt_encoder(self) -> PromptEncoder:
        return self.model.interactive_sam_prompt_encoder

    @property
    def sam_mask_decoder(self) -> MaskDecoder:
        return self.model.interactive_sam_mask_decoder

    @property
    def no_mem_embed(self) -> nn.Parameter:
        return self.model.interactivity_no_mem_embed
