"""Build the UPSTREAM SAM 3.1 model stack (``build_sam3_multiplex_video_predictor``'s ``demo_model``: the
multiplex tracker + the multiplex detector) and describe or save it.

Runs ONLY inside the 3.1 oracle subprocess, from the repository root::

    PYTHONPATH=.oracle31:.oracle .venv/bin/python -P tests/parity/oracle/build_upstream31.py --describe keys.tsv
    ... build_upstream31.py --out sam3.1.pt [--seed 0]      # random weights, saved in the checkpoint layout

The construction is ``sam3.model_builder.build_sam3_multiplex_video_predictor`` call for call, without what
needs a GPU or the network (``.cuda()``, the Hub download) and without the ``Sam3MultiplexVideoPredictor``
wrapper (a request router around ``demo_model``). Its ``state_dict()`` is the layout of ``sam3.1_multiplex.pt``
(the upstream loader maps nothing for checkpoints already in the ``detector.*`` / ``tracker.*`` naming).
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shims31  # noqa: E402  (hides the GPU before torch loads)

shims31.install()

from build_official import meta_device  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
DEFAULT_BPE = REPO / "sam3" / "assets" / "bpe_simple_vocab_16e6.txt.gz"


def build_upstream_demo_model(
    bpe_path: str | Path = DEFAULT_BPE, multiplex_count: int = 16, max_num_objects: int = 16, device: str = "cpu"
):
    """``demo_model`` of ``build_sam3_multiplex_video_predictor`` (fa3 and real-valued RoPE off: CPU)."""
    import sam3.model_builder as mb
    from sam3.model.sam3_multiplex_base import Sam3MultiplexPredictorWrapper
    from sam3.model.sam3_multiplex_detector import Sam3MultiplexDetector
    from sam3.model.sam3_multiplex_tracking import Sam3MultiplexTrackingWithInteractivity
    from sam3.model.vl_combiner import SAM3VLBackboneTri

    tracker_model = mb.build_sam3_multiplex_video_model(
        checkpoint_path=None,
        load_from_HF=False,
        multiplex_count=multiplex_count,
        use_fa3=False,
        use_rope_real=False,
        compile=False,
        strict_state_dict_loading=False,
        device=device,
    )
    del tracker_model.backbone
    tracker_model.backbone = None
    sam2_predictor = Sam3MultiplexPredictorWrapper(
        model=tracker_model, per_obj_inference=False, fill_hole_area=0, is_multiplex=True, is_multiplex_dynamic=True
    )
    tri_neck = mb._create_multiplex_tri_backbone(compile_mode=None, use_fa3=False, use_rope_real=False)
    text_encoder = mb._create_text_encoder(str(bpe_path))
    backbone = SAM3VLBackboneTri(scalp=0, visual=tri_neck, text=text_encoder)
    detector = Sam3MultiplexDetector(
        num_feature_levels=1,
        backbone=backbone,
        transformer=mb._create_sam3_transformer(use_fa3=False),
        segmentation_head=mb._create_segmentation_head(use_fa3=False),
        semantic_segmentation_head=None,
        input_geometry_encoder=mb._create_geometry_encoder(),
        use_early_fusion=True,
        use_dot_prod_scoring=True,
        dot_prod_scoring=mb._create_dot_product_scoring(),
        supervise_joint_box_scores=True,
        is_multiplex=True,
    )
    return Sam3MultiplexTrackingWithInteractivity(
        tracker=sam2_predictor,
        detector=detector,
        score_threshold_detection=0.4,
        det_nms_thresh=0.1,
        det_nms_use_iom=True,
        assoc_iou_thresh=0.1,
        new_det_thresh=0.65,
        hotstart_delay=15,
        hotstart_unmatch_thresh=8,
        hotstart_dup_thresh=8,
        suppress_unmatched_only_within_hotstart=False,
        suppress_overlapping_based_on_recent_occlusion_threshold=0.7,
        suppress_det_close_to_boundary=True,
        fill_hole_area=0,
        recondition_every_nth_frame=16,
        use_iom_recondition=True,
        iom_thresh_recondition=0.5,
        masklet_confirmation_enable=True,
        reconstruction_bbox_iou_thresh=-1,
        reconstruction_bbox_det_score=0.8,
        max_num_objects=max_num_objects,
        postprocess_batch_size=16,
        use_batched_grounding=True,
        batched_grounding_batch_size=16,
        max_num_kboxes=0,
        sprinkle_removal_area=0,
        is_multiplex=True,
        image_size=1008,
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.5, 0.5, 0.5),
        compile_model=False,
    )


def write_layout(state: dict, path: Path) -> None:
    """``name<TAB>shape<TAB>dtype`` per tensor (shape as a Python tuple, as ``keys_video.tsv``), gzip when ``.gz``."""
    lines = [f"{k}\t{tuple(v.shape)}\t{str(v.dtype).removeprefix('torch.')}" for k, v in state.items()]
    data = ("\n".join(lines) + "\n").encode()
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--describe", type=Path, help="write the meta-device state-dict layout (TSV) here")
    ap.add_argument("--bpe", default=str(DEFAULT_BPE))
    args = ap.parse_args()
    if args.describe:
        with meta_device():
            model = build_upstream_demo_model(args.bpe, device="meta")
        write_layout(model.state_dict(), args.describe)
        print(f"{len(model.state_dict())} tensors -> {args.describe}")


if __name__ == "__main__":
    main()
