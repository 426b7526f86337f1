"""Run the image path on an accelerator and compare it with the CPU, on the same random weights.

    python bench/device_check.py --device cuda --preset sam3        # on a GPU machine
    python bench/device_check.py --device mps --preset tiny         # on Apple silicon

Builds one model with random weights, copies it to the device, and runs the same photo through
``Sam3Processor`` on both: set_image, a text prompt, a click. Prints the largest differences of the
detector outputs and of the click logits, and median timings on the device. fp32 throughout; on CUDA,
TF32 is switched off for the comparison (``--tf32`` keeps PyTorch's default for convolutions).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch

from sam3.build import build_sam3_image_model
from sam3.device import resolve_device, synchronize
from sam3.inference.processor import Sam3Processor


def photo() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def timed(fn, device, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cuda | mps | cpu (default: auto)")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tf32", action="store_true", help="keep PyTorch's TF32 default for cuDNN convolutions")
    args = ap.parse_args()

    device = resolve_device(args.device)
    if device.type == "cuda" and not args.tf32:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    cpu_model = build_sam3_image_model(preset=args.preset, random_weights=True, device="cpu", load_from_HF=False)
    dev_model = copy.deepcopy(cpu_model).to(device)
    image = photo()
    text, click = "a person", np.array([[256.0, 200.0]])

    results = {}
    for name, model in (("cpu", cpu_model), (device.type, dev_model)):
        proc = Sam3Processor(model, confidence_threshold=0.0)
        t_enc, state = timed(lambda: proc.set_image(image), model.device, 1)
        t_txt, state = timed(lambda: proc.set_text_prompt(text, state), model.device, args.repeats)
        t_clk, (masks, ious, low) = timed(
            lambda: proc.predict_inst(state, point_coords=click, point_labels=np.array([1]), multimask_output=True),
            model.device, args.repeats,
        )
        results[name] = dict(
            scores=state["scores"].float().cpu(), boxes=state["boxes"].float().cpu(),
            probs=state["masks_logits"].float().cpu(), ious=torch.as_tensor(ious), low=torch.as_tensor(low),
            times=(t_enc, t_txt, t_clk),
        )
        print(f"{name:>5}: set_image {t_enc * 1e3:9.1f} ms   text prompt {t_txt * 1e3:8.1f} ms   click {t_clk * 1e3:7.1f} ms",
              flush=True)

    a, b = results["cpu"], results[device.type]
    print(f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else device.type}, preset {args.preset}")
    for key in ("scores", "boxes", "probs", "ious", "low"):
        diff = (a[key] - b[key]).abs().max().item() if a[key].numel() else 0.0
        print(f"  max|cpu - {device.type}| {key:7s} {diff:.3e}   (max|cpu| {a[key].abs().max().item() if a[key].numel() else 0:.3g})")


if __name__ == "__main__":
    main()
