"""The official package's builders with their signatures (``from sam3.model_builder import ...``).

Thin wrappers over :mod:`sam3.build`: the official keyword arguments are accepted; the ones that select a
configuration this implementation does not have (no segmentation head, no presence token, ...) raise
``NotImplementedError`` instead of being ignored. Two keywords of ours are added at the end: ``preset``
("sam3" the released sizes, "tiny" for tests) and ``random_weights``.

Differences on purpose: ``device=None`` picks cuda > mps > cpu (the official default is cuda, else cpu);
``compile=True`` is refused (our compiled path is a service setting, ``SAM3_COMPILE``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from sam3.model.sam3_image import Sam3Image
    from sam3.model.sam3_video_predictor import Sam3VideoPredictor
    from sam3.modeling.sam3_model import Sam3Model

PathLike = str | os.PathLike


def build_sam3_image_model(
    bpe_path: PathLike | None = None,
    device: str | torch.device | None = None,
    eval_mode: bool = True,
    checkpoint_path: PathLike | None = None,
    load_from_HF: bool = True,
    enable_segmentation: bool = True,
    enable_inst_interactivity: bool = False,
    compile: bool = False,
    *,
    preset: str = "sam3",
    random_weights: bool = False,
) -> Sam3Image:
    """SAM 3 for images, as the official builder: text / box prompts, and ``model.predict_inst`` clicks
    when ``enable_inst_interactivity`` (off by default, as in the official release)."""
    from sam3.build import build_image_model as build
    from sam3.model.official_args import refuse
    from sam3.model.sam3_image import Sam3Image

    refuse("enable_segmentation", enable_segmentation, True)
    refuse("compile", compile, False)
    model = build(
        checkpoint_path=checkpoint_path,
        device=device,
        enable_inst_interactivity=enable_inst_interactivity,
        load_from_HF=load_from_HF,
        preset=preset,
        bpe_path=bpe_path,
        eval_mode=eval_mode,
        random_weights=random_weights,
        model_class=Sam3Image,
    )
    assert isinstance(model, Sam3Image)
    return model


def build_sam3_video_model(
    checkpoint_path: PathLike | None = None,
    load_from_HF: bool = True,
    bpe_path: PathLike | None = None,
    has_presence_token: bool = True,
    geo_encoder_use_img_cross_attn: bool = True,
    strict_state_dict_loading: bool = True,
    apply_temporal_disambiguation: bool = True,
    device: str | torch.device | None = None,
    compile: bool = False,
    *,
    preset: str = "sam3",
    random_weights: bool = False,
) -> Sam3Model:
    """SAM 3 for video (detector and tracker), the model our video predictor runs."""
    from sam3.build import build_video_model as build
    from sam3.model.official_args import check_video_model_args

    check_video_model_args(
        has_presence_token,
        geo_encoder_use_img_cross_attn,
        strict_state_dict_loading,
        apply_temporal_disambiguation,
        compile,
    )
    return build(
        checkpoint_path=checkpoint_path,
        device=device,
        load_from_HF=load_from_HF,
        preset=preset,
        bpe_path=bpe_path,
        random_weights=random_weights,
    )


def build_sam3_video_predictor(*model_args, gpus_to_use: list[int] | None = None, **model_kwargs) -> Sam3VideoPredictor:
    """The official request interface (``handle_request`` / ``handle_stream_request``) over our predictor.

    ``model_args`` / ``model_kwargs`` are those of :class:`sam3.model.sam3_video_predictor.Sam3VideoPredictor`
    (the official ones: ``checkpoint_path``, ``bpe_path``, ...). One device only: ``gpus_to_use`` may name
    at most one GPU.
    """
    from sam3.model.sam3_video_predictor import Sam3VideoPredictor

    if gpus_to_use is not None and len(set(gpus_to_use)) > 1:
        raise NotImplementedError("one device per predictor here; start one service per GPU instead")
    if gpus_to_use and "device" not in model_kwargs:
        model_kwargs["device"] = f"cuda:{gpus_to_use[0]}"
    return Sam3VideoPredictor(*model_args, **model_kwargs)


def build_sam3_predictor(
    checkpoint_path: PathLike | None = None,
    bpe_path: PathLike | None = None,
    version: str = "sam3.1",
    compile: bool = False,
    **kwargs,
) -> Sam3VideoPredictor:
    """The official entry point that picks a video predictor by ``version`` (the official default: ``"sam3.1"``).

    ``"sam3"`` gives :func:`build_sam3_video_predictor`'s predictor; ``"sam3.1"`` the same request interface on
    SAM 3.1 (``sam3.1_multiplex.pt``, the multiplexed tracker). The SAM 3.1-only keywords (``max_num_objects``,
    ``multiplex_count``, ``use_fa3``, ``use_rope_real``, ``warm_up``) are accepted only with their defaults
    (the object cap is not applied). Our keywords (``preset``, ``device``, ``load_from_HF``, ``random_weights``)
    go to the builder.
    """
    from sam3.model.official_args import refuse

    if version not in ("sam3", "sam3.1"):
        raise ValueError(f"Unknown version: {version!r}. Use 'sam3' or 'sam3.1'.")
    refuse("compile", compile, False)
    for name, default in (("max_num_objects", 16), ("multiplex_count", 16), ("warm_up", False)):
        refuse(name, kwargs.pop(name, default), default)
    for kernel_choice in ("use_fa3", "use_rope_real"):  # attention / RoPE kernels: the numbers are the same
        kwargs.pop(kernel_choice, None)
    refuse("async_loading_frames", kwargs.pop("async_loading_frames", False), False)
    if version == "sam3.1":
        from sam3.build_multiplex import build_multiplex_model
        from sam3.model.sam3_video_predictor import Sam3VideoPredictor

        ours = {k: kwargs.pop(k) for k in ("preset", "device", "load_from_HF", "random_weights") if k in kwargs}
        model = build_multiplex_model(checkpoint_path=checkpoint_path, bpe_path=bpe_path, **ours)
        return Sam3VideoPredictor(model=model, **kwargs)
    return build_sam3_video_predictor(checkpoint_path=checkpoint_path, bpe_path=bpe_path, **kwargs)


__all__ = ["build_sam3_image_model", "build_sam3_predictor", "build_sam3_video_model", "build_sam3_video_predictor"]
