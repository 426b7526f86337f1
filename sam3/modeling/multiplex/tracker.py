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
import torch.nn.functional as F
from torch import nn

from sam3.config_multiplex import Sam31Config
from sam3.modeling.interactive.mask_decoder import MaskDecoder
from sam3.modeling.interactive.prompt_encoder import PromptEncoder, RandomFourierEncoding
from sam3.modeling.layers.mlp import MLP
from sam3.modeling.multiplex.frames import HeadFeatures, MaskOutput, MultiplexFeatures, PropagationOutput
from sam3.modeling.multiplex.mask_decoder import MultiplexMaskDecoder
from sam3.modeling.multiplex.memory_attention import DecoupledMemoryAttention
from sam3.modeling.multiplex.memory_encoder import MultiplexMemoryEncoder
from sam3.modeling.multiplex.memory_gather import gather_memory
from sam3.modeling.multiplex.multiplex_state import MultiplexState
from sam3.modeling.tracker.state import MemoryBank, PointInputs

NO_OBJ_SCORE = -1024.0  # the logit of an object predicted absent
MASK_INPUT_SCALE, MASK_INPUT_BIAS = 20.0, -10.0  # a binary mask taken as the prediction: logits +-10


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

    @property
    def image_size(self) -> int:
        return self.config.image_size

    # ------------------------------------------------------------------ features
    def prepare_features(
        self, interactive: list[torch.Tensor], propagation: list[torch.Tensor], pos: list[torch.Tensor]
    ) -> MultiplexFeatures:
        """The interactive and propagation heads' levels [(1,C,4g,4g), (1,C,2g,2g), (1,C,g,g)] and their sine
        encodings -> :class:`MultiplexFeatures` (levels 0 and 1 through each head's decoder projections)."""
        i_dec, p_dec = self.interactive_sam_mask_decoder, self.sam_mask_decoder
        return MultiplexFeatures(
            interactive=HeadFeatures(
                interactive[2], pos[2], [i_dec.conv_s0(interactive[0]), i_dec.conv_s1(interactive[1])]
            ),
            propagation=HeadFeatures(
                propagation[2], pos[2], [p_dec.conv_s0(propagation[0]), p_dec.conv_s1(propagation[1])]
            ),
        )

    # ------------------------------------------------------------------ pointers
    def _gate_pointer(self, obj_ptr: torch.Tensor, appearing: torch.Tensor) -> torch.Tensor:
        """(K, C) pointers, (K, 1) 0/1 -> the pointer where the object appears, else its no-object projection."""
        return appearing * obj_ptr + (1 - appearing) * self.no_obj_ptr_linear(obj_ptr)

    def interactive_heads(
        self,
        feats: MultiplexFeatures,
        point_inputs: PointInputs | None,
        mask_prompt: torch.Tensor | None,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The interactive heads for K objects on one frame: clicks (or one padding point) and an optional mask
        prompt (K, 1, 4g, 4g) -> best low-res logits (K, 1, 4g, 4g) (-1024 where absent), predicted IoUs
        (K, k), the gated pointer (K, C) and object-score logits (K, 1)."""
        head = feats.interactive
        pix = head.image + self.interactivity_no_mem_embed.view(1, -1, 1, 1)
        k = mask_prompt.shape[0] if point_inputs is None else point_inputs.coords.shape[0]
        if point_inputs is None:
            coords = torch.zeros(k, 1, 2, device=pix.device)
            labels = -torch.ones(k, 1, dtype=torch.int32, device=pix.device)
        else:
            coords, labels = point_inputs.coords, point_inputs.labels
        encoder = self.interactive_sam_prompt_encoder
        if mask_prompt is not None and tuple(mask_prompt.shape[-2:]) != (encoder.mask_input_size,) * 2:
            size = (encoder.mask_input_size,) * 2
            mask_prompt = F.interpolate(
                mask_prompt.float(), size=size, mode="bilinear", align_corners=False, antialias=True
            )
        sparse, dense = encoder(points=(coords, labels), boxes=None, masks=mask_prompt)
        masks, ious, tokens, scores = self.interactive_sam_mask_decoder(
            image_embeddings=pix,
            image_pe=encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            repeat_image=True,
            high_res_features=head.high_res,
        )
        appearing = scores > 0
        masks = torch.where(appearing[:, None, None], masks, NO_OBJ_SCORE).float()
        token = tokens[:, 0]
        if multimask_output:
            best = torch.argmax(ious, dim=-1)
            rows = torch.arange(k, device=pix.device)
            masks = masks[rows, best].unsqueeze(1)
            if tokens.shape[1] > 1:
                token = tokens[rows, best]
        ptr = self._gate_pointer(self.interactive_obj_ptr_proj(token), appearing.float())
        return masks, ious, ptr, scores

    def mask_as_output(self, feats: MultiplexFeatures, masks: torch.Tensor) -> MaskOutput:
        """K binary masks (K, 1, S_in, S_in) taken as the prediction; their pointers come from the interactive
        heads prompted with the masks (4x smaller through ``interactive_mask_downsample``), gated by the
        heads' object score and then by the mask being non-empty."""
        mask = masks.float()
        high = mask * MASK_INPUT_SCALE + MASK_INPUT_BIAS
        h, w = high.shape[-2:]
        low = F.interpolate(high, size=(h // 4, w // 4), mode="bilinear", align_corners=False, antialias=True)
        _, _, ptr, _ = self.interactive_heads(feats, None, self.interactive_mask_downsample(mask), False)
        appearing = torch.any(mask.flatten(1) > 0.0, dim=1)[:, None].float()
        return MaskOutput(low, high, MASK_INPUT_SCALE * appearing + MASK_INPUT_BIAS, self._gate_pointer(ptr, appearing))

    # ------------------------------------------------------------------ propagation
    def propagate(
        self,
        frame_idx: int,
        feats: MultiplexFeatures,
        state: MultiplexState,
        bank: MemoryBank,
        num_frames: int,
        reverse: bool,
    ) -> PropagationOutput:
        """Decode every object of a tracker state on ``frame_idx`` from its memory bank (one pass per bucket)."""
        p = feats.propagation
        b = state.num_buckets
        c, g = self.hidden_dim, p.image.shape[-1]
        src = p.image.expand(b, -1, -1, -1)
        mem = gather_memory(self, frame_idx, bank, num_frames, reverse)
        if mem is not None:
            tok = lambda x: x.flatten(2).transpose(1, 2)  # noqa: E731
            out = self.memory_attention(
                tok(p.image), tok(src), tok(p.pos.expand(b, -1, -1, -1)), mem.memory_image, mem.memory_image_pos,
                mem.memory, mem.memory_pos, (g, g), num_obj_ptr_tokens=mem.num_ptr_tokens,
            )  # fmt: skip
            src = out.transpose(1, 2).reshape(b, c, g, g)
        valid = state.valid_mask().to(src.device)
        dec = self.sam_mask_decoder(src, self.get_dense_pe().to(src.dtype), p.high_res, self.slot_embeddings(valid))
        masks, ious = state.demux(dec.masks), state.demux(dec.iou)
        tokens, scores = state.demux(dec.sam_tokens), state.demux(dec.object_score_logits)
        appearing = scores > 0
        masks = torch.where(appearing[:, None, None], masks, NO_OBJ_SCORE).float()
        rows = torch.arange(masks.shape[0], device=masks.device)
        best = torch.argmax(ious, dim=-1)
        low = masks[rows, best].unsqueeze(1)
        high = F.interpolate(low, size=(self.image_size,) * 2, mode="bilinear", align_corners=False)
        ptr = self._gate_pointer(self.obj_ptr_proj(tokens[rows, best]), appearing.float())
        return PropagationOutput(low, high, scores, ptr)

    # ------------------------------------------------------------------ memory
    def encode_memory(
        self,
        head: HeadFeatures,
        state: MultiplexState,
        high_res_masks: torch.Tensor,
        object_score_logits: torch.Tensor,
        conditioning: frozenset[int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 1, H, W) mask logits of a state's objects -> spatial memory (buckets, C, g, g) and its encoding.

        Each bucket's masks (sigmoid, scaled to -1..1) enter as M channels with M conditioning channels (1 for
        the objects of ``conditioning``); slots whose object is absent (or empty) add ``no_obj_embed_spatial``."""
        t = self.config.tracker
        mask = torch.sigmoid(high_res_masks) * t.sigmoid_scale_for_mem_enc + t.sigmoid_bias_for_mem_enc
        cond = torch.zeros(mask.shape[0], device=mask.device, dtype=mask.dtype)
        if conditioning:
            cond[sorted(conditioning)] = 1.0
        cond = cond.view(-1, 1, 1, 1).expand_as(mask)
        channels = torch.cat([state.mux(mask).squeeze(2), state.mux(cond).squeeze(2)], dim=1)
        features, pos = self.maskmem_backbone(head.image, channels)
        absent = 1 - (state.mux(object_score_logits) > 0).to(features.dtype)  # (B, M, 1); empty slots count as absent
        features = features + (absent * self.no_obj_embed_spatial).sum(dim=1)[..., None, None]
        return features, pos


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
