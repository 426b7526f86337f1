"""The development mode's model (``SAM3_RANDOM_WEIGHTS=true``), built here without the server, as a reference
that is independent of the app under test: the same seed, builder and score spreading as
``server.services.model_service.ModelService.load``, so both hold the same weights (``same_weights`` checks it).
"""

from __future__ import annotations

import contextlib

import torch

from sam3.build import build_image_model
from sam3.dev_weights import make_visible
from sam3.inference.processor import Sam3Processor


def dev_model(preset: str = "tiny"):
    """A random-weight ``Sam3Model`` with the tracker, drawn as the service draws it (seed 0 on a forked RNG)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_image_model(preset=preset, random_weights=True, device="cpu", load_from_HF=False)
    return make_visible(model).eval()


def dev_processor(confidence_threshold: float = 0.5, preset: str = "tiny") -> Sam3Processor:
    return Sam3Processor(dev_model(preset), confidence_threshold=confidence_threshold)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Every tensor of the two state dicts equal (names, shapes and values)."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@contextlib.contextmanager
def torch_threads(n: int):
    """Torch's CPU threads for the calling thread set to ``n`` for the block (a reference that must sum in the
    same order as the app it is compared with, whose calls run with ``SAM3_NUM_THREADS``), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
