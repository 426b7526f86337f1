"""SAM-2 style tracker: one step segments B objects on one frame, conditioned on their memory bank.

Per frame (``track_step``):
1. A mask input is taken as the output (logits +-10) and only run through the SAM heads to get an
   object pointer; otherwise the level-2 features attend to the memory bank (``MemoryAttention``)
   -- or, on an initial conditioning frame, just get ``no_mem_embed`` added -- and the SAM prompt
   encoder + mask decoder predict the masks from the clicks (or none, when tracking).
2. The memory encoder turns the chosen high-res mask and the raw level-2 features into the frame's
   spatial memory; the mask decoder's output token becomes the frame's object pointer.

The memory fed to the attention is: the spatial memories of up to ``max_cond_frames_in_attn``
conditioning frames and of ``num_maskmem - 1`` recent frames (each with a learned temporal
embedding), then up to ``max_obj_ptrs_in_encoder`` object pointers, each split into
``C / mem_dim`` tokens and tagged with a sine encoding of its temporal distance.
Everything follows the device and dtype of the inputs; no device is named here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sam3.config import Sam3Config
from sam3.modeling.interactive.mask_decoder import MaskDecoder
from sam3.modeling.interactive.prompt_encoder import PromptEncoder
from sam3.modeling.layers.mlp import MLP
from sam3.modeling.tracker.memory_attention import MemoryAttention
from sam3.modeling.tracker.memory_encoder import MemoryEncoder
from sam3.modeling.tracker.memory_gather import assemble_memory, plan_memory
from sam3.modeling.tracker.state import (
    MemoryBank,
    PointInputs,
    SamHeadsOutput,
    TrackerFeatures,
    TrackStepOutput,
)

# Mask logit for "object absent" (far below any real logit).
NO_OBJ_SCORE = -1024.0
# A binary mask input becomes logits -10 / +10 (sigmoid(-10) = 4.5e-5).
MASK_INPUT_SCALE, MASK_INPUT_BIAS = 20.0, -10.0


class Sam3Tracker(nn.Module):
    """All tracker weights (``tracker.*`` in ``sam3.pt``) and the per-frame tracking step."""

    def __init__(self, config: Sam3Config):
        super().__init__()
        t = config.tracker
        c = config.d_model
        self.config = config
        self.hidden_dim = c
        self.mem_dim = t.mem_dim
        self.num_maskmem = t.num_maskmem
        self.image_size = config.image_size
        self.backbone_stride = config.vision.patch_size
        self.max_cond_frames_in_attn = t.max_cond_frames_in_attn
        self.max_obj_ptrs_in_encoder = t.max_obj_ptrs_in_encoder
        self.use_memory_selection = t.use_memory_selection
        self.memory_selection_threshold = t.memory_selection_threshold

        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(t.num_maskmem, 1, 1, t.mem_dim))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, c))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, c))  # in the checkpoint, unused at inference
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, c))
        self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, t.mem_dim))
        # Brings a full-size (input-mask) mask to the low-res mask grid for the SAM mask prompt.
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.transformer = nn.ModuleDict({"encoder": MemoryAttention(config)})
        self.maskmem_backbone = MemoryEncoder(config)
        self.sam_prompt_encoder = PromptEncoder.from_config(config)
        self.sam_mask_decoder = MaskDecoder.from_config(config)
        self.obj_ptr_proj = MLP(c, c, c, 3)
        self.obj_ptr_tpos_proj = nn.Linear(c, t.mem_dim)
        self._init_embeddings()

    def _init_embeddings(self) -> None:
        embeddings = (self.maskmem_tpos_enc, self.no_mem_embed, self.no_mem_pos_enc, self.no_obj_ptr)
        for p in (*embeddings, self.no_obj_embed_spatial):
            if not p.is_meta:
                nn.init.trunc_normal_(p, std=0.02)

    @property
    def memory_attention(self) -> MemoryAttention:
        return self.transformer["encoder"]

    # ------------------------------------------------------------------ features
    def prepare_features(self, fpn: list[torch.Tensor], pos: list[torch.Tensor]) -> TrackerFeatures:
        """Tracker-neck levels [(B,C,4g,4g), (B,C,2g,2g), (B,C,g,g)] and their PEs -> ``TrackerFeatures``."""
        high_res = [self.sam_mask_decoder.conv_s0(fpn[0]), self.sam_mask_decoder.conv_s1(fpn[1])]
        return TrackerFeatures(image_embed=fpn[2], image_pos=pos[2], high_res=high_res)

    # ------------------------------------------------------------------ SAM heads
    def forward_sam_heads(
        self,
        image_embed: torch.Tensor,
        point_inputs: PointInputs | None = None,
        mask_inputs: torch.Tensor | None = None,
        high_res: list[torch.Tensor] | None = None,
        multimask_output: bool = False,
    ) -> SamHeadsOutput:
        """Prompt encoder + mask decoder on (B, C, g, g) features.

        point_inputs: clicks, or None (a single padding point is used).
        mask_inputs:  (B, 1, H, W) mask prompt logits, resized to the prompt grid (4g) if needed.
        """
        b = image_embed.shape[0]
        device = image_embed.device
        if point_inputs is not None:
            coords, labels = point_inputs.coords, point_inputs.labels
        else:
            coords = torch.zeros(b, 1, 2, device=device)
            labels = -torch.ones(b, 1, dtype=torch.int32, device=device)

        mask_prompt = None
        if mask_inputs is not None:
            size = self.sam_prompt_encoder.mask_input_size
            mask_prompt = mask_inputs
            if tuple(mask_inputs.shape[-2:]) != (size, size):
                mask_prompt = F.interpolate(
                    mask_inputs.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True
                )

        sparse, dense = self.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=mask_prompt)
        low_res_multimasks, ious, sam_tokens, object_score_logits = self.sam_mask_decoder(
            image_embeddings=image_embed,
            image_pe=self.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            repeat_image=False,
            high_res_features=high_res,
        )

        # A hard choice between object and no object, so the memory sees the same as the output.
        is_obj = object_score_logits > 0
        low_res_multimasks = torch.where(is_obj[:, None, None], low_res_multimasks, NO_OBJ_SCORE).float()
        high_res_multimasks = F.interpolate(
            low_res_multimasks, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
        )

        token = sam_tokens[:, 0]
        if multimask_output:
            best = torch.argmax(ious, dim=-1)
            rows = torch.arange(b, device=device)
            low_res_masks = low_res_multimasks[rows, best].unsqueeze(1)
            high_res_masks = high_res_multimasks[rows, best].unsqueeze(1)
            if sam_tokens.shape[1] > 1:
                token = sam_tokens[rows, best]
        else:
            low_res_masks, high_res_masks = low_res_multimasks, high_res_multimasks

        obj_ptr = self._gate_pointer(self.obj_ptr_proj(token), is_obj.float())
        return SamHeadsOutput(
            low_res_multimasks=low_res_multimasks,
            high_res_multimasks=high_res_multimasks,
            ious=ious,
            low_res_masks=low_res_masks,
            high_res_masks=high_res_masks,
            obj_ptr=obj_ptr,
            object_score_logits=object_score_logits,
        )

    def _gate_pointer(self, obj_ptr: torch.Tensor, appearing: torch.Tensor) -> torch.Tensor:
        """(B, C) pointers, (B, 1) 0/1 -> the pointer where the object appears, else ``no_obj_ptr``."""
        return appearing * obj_ptr + (1 - appearing) * self.no_obj_ptr

    def use_mask_as_output(
        self, image_embed: torch.Tensor, high_res: list[torch.Tensor] | None, mask_inputs: torch.Tensor
    ) -> SamHeadsOutput:
        """Take a (B, 1, H, W) binary mask input as the prediction (logits +-10).

        The low-res copy is H // stride * 4 on a side: 328 for a 1152 input mask in the released
        model (not the 288 of SAM's own logits), 288 for a 1008 one. The pointer comes from the SAM
        heads prompted with the mask (``mask_downsample``: 4x smaller), the object score from the
        mask being non-empty.
        """
        mask = mask_inputs.float()
        high_res_masks = mask * MASK_INPUT_SCALE + MASK_INPUT_BIAS
        h, w = high_res_masks.shape[-2:]
        low_res_masks = F.interpolate(
            high_res_masks,
            size=(h // self.backbone_stride * 4, w // self.backbone_stride * 4),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        ious = mask_inputs.new_ones(mask_inputs.shape[0], 1).float()
        sam = self.forward_sam_heads(image_embed, mask_inputs=self.mask_downsample(mask), high_res=high_res)
        appearing = torch.any(mask.flatten(1) > 0.0, dim=1)[:, None].float()
        object_score_logits = MASK_INPUT_SCALE * appearing + MASK_INPUT_BIAS
        obj_ptr = self._gate_pointer(sam.obj_ptr, appearing)
        return SamHeadsOutput(
            low_res_multimasks=low_res_masks,
            high_res_multimasks=high_res_masks,
            ious=ious,
            low_res_masks=low_res_masks,
            high_res_masks=high_res_masks,
            obj_ptr=obj_ptr,
            object_score_logits=object_score_logits,
        )

    # ------------------------------------------------------------------ memory
    def gather_memory(
        self, frame_idx: int, bank: MemoryBank, num_frames: int, batch_size: int, reverse: bool, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Assemble the attention memory for ``frame_idx`` (``memory_gather``: plan, then assemble).

        Returns memory (B, n*g*g + P*C/m, m), its position encoding (same shape) and the number of
        trailing object-pointer tokens.
        """
        plan = plan_memory(self, frame_idx, bank, num_frames, reverse)
        return assemble_memory(self, [plan], batch_size, device)

    def attend_memory(
        self,
        image_embed: torch.Tensor,
        image_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        num_ptr_tokens: int,
    ) -> torch.Tensor:
        """(B, C, g, g) level-2 features and their PE attending to (B, M, m) memory -> (B, C, g, g)."""
        b, c, h, w = image_embed.shape
        src = image_embed.flatten(2).transpose(1, 2)
        src_pos = image_pos.flatten(2).transpose(1, 2)
        out = self.memory_attention(src, src_pos, memory, memory_pos, (h, w), num_ptr_tokens)
        return out.transpose(1, 2).reshape(b, c, h, w)

    def prepare_memory_conditioned_features(
        self,
        frame_idx: int,
        is_init_cond_frame: bool,
        features: TrackerFeatures,
        bank: MemoryBank,
        num_frames: int,
        reverse: bool = False,
        use_prev_mem_frame: bool = True,
    ) -> torch.Tensor:
        """(B, C, g, g) level-2 features fused with the memory bank."""
        x = features.image_embed
        b, c, h, w = x.shape
        if is_init_cond_frame or not use_prev_mem_frame:
            # No memory to attend to: mark the features with the learned "no memory" embedding.
            return x + self.no_mem_embed.view(1, c, 1, 1)
        memory, memory_pos, num_ptr_tokens = self.gather_memory(frame_idx, bank, num_frames, b, reverse, x.device)
        return self.attend_memory(x, features.image_pos, memory, memory_pos, num_ptr_tokens)

    def encode_new_memory(
        self,
        image_embed: torch.Tensor,
        pred_masks_high_res: torch.Tensor,
        object_score_logits: torch.Tensor,
        is_mask_from_pts: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Spatial memory (B, m, g, g) and its PE from raw level-2 features and (B, 1, H, W) mask logits.

        Masks that came from clicks are binarised; others go through a sigmoid. Both are mapped to
        about +-10 before the encoder. Frames where the object is absent get ``no_obj_embed_spatial``.
        """
        t = self.config.tracker
        if is_mask_from_pts:
            mask = (pred_masks_high_res > 0).float()
        else:
            mask = torch.sigmoid(pred_masks_high_res)
        mask = mask * t.sigmoid_scale_for_mem_enc + t.sigmoid_bias_for_mem_enc
        features, pos = self.maskmem_backbone(image_embed, mask)
        absent = 1 - (object_score_logits > 0).float()
        features = features + absent[..., None, None] * self.no_obj_embed_spatial[..., None, None]
        return features, pos

    # ------------------------------------------------------------------ one step
    def use_multimask(self, is_init_cond_frame: bool, point_inputs: PointInputs | None) -> bool:
        """3 candidate masks for 0 or 1 clicks (tracking included), 1 mask for more clicks."""
        num_points = 0 if point_inputs is None else point_inputs.num_points
        return num_points <= self.config.tracker.multimask_max_points

    def track_step(
        self,
        frame_idx: int,
        is_init_cond_frame: bool,
        features: TrackerFeatures,
        bank: MemoryBank,
        num_frames: int,
        point_inputs: PointInputs | None = None,
        mask_inputs: torch.Tensor | None = None,
        reverse: bool = False,
        run_mem_encoder: bool = True,
        prev_mask_logits: torch.Tensor | None = None,
        use_prev_mem_frame: bool = True,
    ) -> TrackStepOutput:
        """Segment the B objects of ``features`` on ``frame_idx``.

        mask_inputs:      (B, 1, H, W) binary masks (e.g. from the detector, at the input-mask size);
                          exclusive with ``point_inputs``.
        prev_mask_logits: (B, 1, 4g, 4g) earlier logits on this frame, fed with new clicks as a mask prompt.
        The bank is read, not modified: the caller stores ``out.to_memory()``.
        """
        if mask_inputs is not None and point_inputs is not None:
            raise ValueError("points and a mask cannot both prompt the same frame")
        if mask_inputs is not None:
            sam = self.use_mask_as_output(features.image_embed, features.high_res, mask_inputs)
        else:
            pix = self.prepare_memory_conditioned_features(
                frame_idx, is_init_cond_frame, features, bank, num_frames, reverse, use_prev_mem_frame
            )
            sam = self.forward_sam_heads(
                pix,
                point_inputs=point_inputs,
                mask_inputs=prev_mask_logits,
                high_res=features.high_res,
                multimask_output=self.use_multimask(is_init_cond_frame, point_inputs),
            )

        out = TrackStepOutput(
            pred_masks=sam.low_res_masks,
            pred_masks_high_res=sam.high_res_masks,
            ious=sam.ious,
            obj_ptr=sam.obj_ptr,
            object_score_logits=sam.object_score_logits,
        )
        if self.use_memory_selection:
            out.iou_score = sam.ious.max(-1)[0]
            out.eff_iou_score = memory_selection_score(sam.object_score_logits, out.iou_score)
        if run_mem_encoder and self.num_maskmem > 0:
            out.maskmem_features, out.maskmem_pos = self.encode_new_memory(
                features.image_embed, sam.high_res_masks, sam.object_score_logits, point_inputs is not None
            )
        return out

    def empty_mask_pointer(self, features: TrackerFeatures) -> torch.Tensor:
        """(1, C) pointer of an empty mask on this frame (for objects missing from a frame's batch)."""
        one = TrackerFeatures(features.image_embed[:1], features.image_pos[:1], [t[:1] for t in features.high_res])
        empty = torch.zeros(1, 1, self.image_size, self.image_size, device=one.image_embed.device)
        return self.use_mask_as_output(one.image_embed, one.high_res, empty).obj_ptr


def memory_selection_score(object_score_logits: torch.Tensor, iou_score: torch.Tensor) -> torch.Tensor:
    """() score of a frame: confidence (2 sigmoid(s) - 1 where s > 0, else 0) times predicted IoU.

    (B, 1) scores times (B,) IoUs broadcast to (B, B) before the mean, i.e. mean(conf) * mean(iou)
    for several objects -- kept as released.
    """
    conf = torch.where(
        object_score_logits > 0, object_score_logits.sigmoid() * 2 - 1, torch.zeros_like(object_score_logits)
    )
    return (conf * iou_score).mean()
