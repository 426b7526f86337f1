"""The official builders' keyword arguments that select a configuration this implementation does not have.

Shared by the compatibility layer (:mod:`sam3.model_builder`, :mod:`sam3.model.sam3_video_predictor`): such an
argument raises ``NotImplementedError`` instead of being ignored. A leaf module, so the two never import
each other.
"""

from __future__ import annotations


def refuse(name: str, value: object, supported: object) -> None:
    """Raise ``NotImplementedError`` unless ``value`` is the one ``supported`` value."""
    if value != supported:
        raise NotImplementedError(f"{name}={value!r} is not supported by this implementation (only {supported!r})")


def check_video_model_args(
    has_presence_token: bool = True,
    geo_encoder_use_img_cross_attn: bool = True,
    strict_state_dict_loading: bool = True,
    apply_temporal_disambiguation: bool = True,
    compile: bool = False,
) -> None:
    """The arguments of the official ``build_sam3_video_model`` that only have their default here."""
    refuse("has_presence_token", has_presence_token, True)
    refuse("geo_encoder_use_img_cross_attn", geo_encoder_use_img_cross_attn, True)
    refuse("strict_state_dict_loading", strict_state_dict_loading, True)
    refuse("apply_temporal_disambiguation", apply_temporal_disambiguation, True)
    refuse("compile", compile, False)
