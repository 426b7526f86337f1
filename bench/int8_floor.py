"""How close can any int8 scheme for the vision trunk get to fp32? Fake-quantised trunks against our fp32.

    .venv/bin/python bench/int8_floor.py --preset sam3 --threads 2     # about 15 min on 2 cores

Our int8 mode (``SAM3_PRECISION=int8``) quantises the ViT trunk's linear layers with torch.ao's dynamic int8
kernels. This benchmark separates where its error comes from. Each scheme rounds the trunk's linear layers the
way an int8 kernel would, but computes in fp32 (torch's fake-quantise functions, so the rounding is torch's
own), and is compared with our fp32 on the photo, prompts and thresholds of ``bench/precision_quality.py``:

- ``weights``: int8 weights per output channel (symmetric, torch.ao's per-channel observer), fp32 activations.
  No int8 matmul can do better, because every scheme below adds activation rounding to this.
- ``weights + act per token``: activations int8 per token (symmetric), as torchao's
  ``Int8DynamicActivationInt8WeightConfig`` does.
- ``weights + act per tensor 8 bit``: torch.ao's dynamic linear with ``reduce_range=False`` (8-bit activations;
  only safe from saturation on CPUs with VNNI).
- ``weights + act per tensor 7 bit``: torch.ao's dynamic linear as it runs (``reduce_range=True``).
- ``int8 mode``: the real int8 mode (``sam3.inference.runtime.prepare_model``). It should match the 7-bit row,
  which checks the emulation.

Compare the figures with the yardstick, the official bf16 against the official fp32, which
``bench/precision_quality.py --preset sam3 --modes int8`` measures (13 more minutes at full size). Needs the
oracle in ``.oracle``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT.parent / "shared" / "data" / "images" / "truck.jpg"

Rounding = Callable[[torch.Tensor], torch.Tensor]


def round_weights(w: torch.Tensor) -> torch.Tensor:
    """(out, in) -> the same weights rounded to int8 per output channel, as torch.ao's per-channel qconfig."""
    from torch.ao.quantization.observer import PerChannelMinMaxObserver

    observer = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    observer(w)
    scale, zero = observer.calculate_qparams()
    return torch.fake_quantize_per_channel_affine(w, scale, zero.int(), 0, -128, 127)


def act_per_tensor(reduce_range: bool) -> Rounding:
    """Activations (..., C) rounded to uint8 with one scale per call, as torch.ao's dynamic linear."""

    def rounding(x: torch.Tensor) -> torch.Tensor:
        scale, zero = torch._choose_qparams_per_tensor(x, reduce_range)
        return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 127 if reduce_range else 255)

    return rounding


def act_per_token(x: torch.Tensor) -> torch.Tensor:
    """Activations (..., C) rounded to int8 with one symmetric scale per token."""
    rows = x.reshape(-1, x.shape[-1])
    scale = (rows.abs().amax(1) / 127.5).clamp_min(torch.finfo(torch.float32).eps)
    zero = torch.zeros(rows.shape[0], dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(rows, scale, zero, 0, -128, 127).reshape(x.shape)


SCHEMES: dict[str, Rounding | None] = {
    "weights": None,
    "weights + act per token": act_per_token,
    "weights + act per tensor 8 bit": act_per_tensor(False),
    "weights + act per tensor 7 bit": act_per_tensor(True),
}


def fake_quantise_trunk(model: nn.Module, activations: Rounding | None) -> int:
    """Round the trunk's ``nn.Linear`` weights in place; round their inputs on every call. Returns the count."""
    count = 0
    from sam3.inference.runtime import TRUNK

    for module in model.get_submodule(TRUNK).modules():
        if type(module) is not nn.Linear:
            continue
        with torch.no_grad():
            module.weight.copy_(round_weights(module.weight))
        if activations is not None:
            module.register_forward_pre_hook(lambda _m, args, f=activations: (f(args[0]),))
        count += 1
    return count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="sam3", choices=["tiny", "sam3"])
    ap.add_argument("--image", default=str(PHOTO))
    ap.add_argument("--workdir", default="/tmp/sam3_precision_quality")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--schemes", default=",".join([*SCHEMES, "int8 mode"]))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    torch.set_num_threads(args.threads)
    from sam3.device import cpu_info, resolve_precision
    from sam3.inference.runtime import prepare_model
    from tests.parity.harness import load_ours
    from tests.parity.precision_quality import deviation, run_official_outputs, run_our_outputs

    work, image = Path(args.workdir) / args.preset, Path(args.image)
    # The official fp32 run gives the random weights (saved on the first run) and the per-prompt thresholds.
    thresholds = run_official_outputs(args.preset, work, image, threads=args.threads).thresholds
    ours32 = run_our_outputs(load_ours(work / "sam3.pt", args.preset), image, thresholds)
    print(f"preset {args.preset}, photo {image}, CPU {cpu_info().describe()}, {args.threads} threads")
    for name in args.schemes.split(","):
        start = time.perf_counter()
        model = load_ours(work / "sam3.pt", args.preset)
        if name == "int8 mode":
            precision = resolve_precision("int8", "cpu")
            layers = len(prepare_model(model, precision).quantized)
            other = run_our_outputs(model, image, thresholds, precision)
        else:
            layers = fake_quantise_trunk(model, SCHEMES[name])
            other = run_our_outputs(model, image, thresholds)
        dev = deviation(ours32, other)
        print(f"  {name:32s} vs ours fp32 ({layers} layers): {dev.line()}  [{time.perf_counter() - start:.0f} s]")


if __name__ == "__main__":
    main()
