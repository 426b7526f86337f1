"""Whole-model parity: our implementation against the official ``sam3==0.1.4`` on identical random weights.

1. An oracle subprocess (``PYTHONPATH=.oracle python -P tests/parity/oracle/run_official.py``) builds the
   official ``Sam3Image`` (+ tracker) at the sizes of one of our presets with deterministic random weights,
   saves them as a ``sam3.pt`` and runs the official ``Sam3Processor`` / ``predict_inst`` on a photo and a
   plan of prompts (``tests/parity/plan.py``), saving every intermediate (see ``run_official.py``).
2. In this process our model loads that ``sam3.pt`` with ``sam3.build.build_image_model`` and computes
   the same quantities two ways:

   * **components** (``backbone/``, ``text/``, ``<case>/``, ``inst/``): each stage fed the OFFICIAL inputs of
     that stage (official pre-processed image, official token ids, official backbone + text features,
     official tracker-neck features), so a row localises a mismatch to one stage;
   * **processor** (``proc/``, ``tests/parity/processor_rows.py``): our ``Sam3Processor`` end to end on the same PIL image, compared with the
     official processor outputs by the issue's criteria (identical kept sets, boxes and scores within 1e-4
     relative, masks identical except pixels whose official probability is within 1e-3 of the threshold;
     click masks, IoU and low-res logits likewise).

Tolerance for tensors: ``max|ours - official| <= 1e-4 * max(1, max|official|)``.

Nothing is installed here; the oracle lives in ``.oracle`` (``./run_tests.sh`` installs it).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tests.parity.plan import case_prompt, default_plan
from tests.parity.rows import MASK_BAND, RTOL, Row, compare, compare_masks, table  # noqa: F401 (re-exported)

ROOT = Path(__file__).resolve().parents[2]
ORACLE = ROOT / ".oracle"
ORACLE_SCRIPTS = ROOT / "tests" / "parity" / "oracle"
INSTALL_HINT = (
    "the official oracle is not installed in .oracle; run ./run_tests.sh once (it installs it), or: "
    ".venv/bin/pip install --no-deps --target .oracle sam3==0.1.4 timm iopath einops pycocotools psutil "
    "opencv-python-headless tqdm portalocker scipy"
)


# ----------------------------------------------------------------------------------------------- oracle
def oracle_available() -> bool:
    return (ORACLE / "sam3" / "model_builder.py").is_file()


def oracle_env(threads: int = 1) -> dict:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(ORACLE), CUDA_VISIBLE_DEVICES="", PYTHONDONTWRITEBYTECODE="1", PYTHONWARNINGS="ignore")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def run_oracle(script: str, *args: str, threads: int = 1, timeout: float = 3600) -> str:
    """Run ``tests/parity/oracle/<script>`` in the oracle environment; returns stdout, raises with stderr."""
    cmd = [sys.executable, "-P", str(ORACLE_SCRIPTS / script), *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=oracle_env(threads), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"oracle {script} failed ({proc.returncode}):\n{proc.stderr[-4000:]}\n{proc.stdout[-2000:]}")
    return proc.stdout


def write_config(preset: str, path: Path) -> dict:
    from sam3.config import get_config

    cfg = get_config(preset).to_dict()
    path.write_text(json.dumps(cfg))
    return cfg


# ----------------------------------------------------------------------------------------------- ours
def load_ours(checkpoint: Path, preset: str):
    """Our model through the official builder's path (``sam3.model_builder``), so ``model.predict_inst`` exists."""
    from sam3.model_builder import build_sam3_image_model

    return build_sam3_image_model(
        checkpoint_path=checkpoint, preset=preset, device="cpu", enable_inst_interactivity=True
    )


class _Capture:
    """Forward hooks on our modules by (checkpoint-style) name; missing modules are skipped."""

    def __init__(self, model, names: dict[str, str]):
        self.data: dict = {}
        self.handles = []
        modules = dict(model.named_modules())
        for key, name in names.items():
            if name in modules:
                self.handles.append(modules[name].register_forward_hook(self._post(key)))
                self.handles.append(modules[name].register_forward_pre_hook(self._pre(key)))

    def _post(self, key):
        def hook(module, args, out):
            self.data[key] = out

        return hook

    def _pre(self, key):
        def hook(module, args):
            self.data[key + ".in"] = args

        return hook

    def close(self):
        for h in self.handles:
            h.remove()


def _first_tensor(x):
    if torch.is_tensor(x):
        return x
    if isinstance(x, (list, tuple)) and x:
        return _first_tensor(x[-1]) if torch.is_tensor(x[-1]) else _first_tensor(x[0])
    return None


@torch.inference_mode()
def compare_components(model, off: dict, trunk=None) -> list[Row]:
    """Each stage of our model fed the official inputs of that stage (see the module docstring).

    ``trunk``: our ViT trunk output for the official pre-processed image when the caller already has it
    (the processor run, when its pre-processed image is identical); else computed here. The necks are
    made from it here.
    """
    from sam3.modeling.outputs import BackboneFeatures, GeometricPrompt, TextFeatures

    rows: list[Row] = []
    det = model.detector
    bb = off["backbone"]
    cap = _Capture(model, {"pixel": "detector.segmentation_head.pixel_decoder"})
    try:
        if trunk is None:
            trunk = model.encode_trunk(bb["image"])
        feats = det.backbone.vision_backbone.forward_trunk_features(trunk)
        rows.append(compare("backbone/trunk", trunk, bb["trunk"]))
        n = len(feats.fpn)
        for i in range(n):
            rows.append(compare(f"backbone/fpn{i}", feats.fpn[i], bb["neck_fpn"][i]))
            rows.append(compare(f"backbone/pos{i}", feats.pos[i], bb["neck_pos"][i]))
        if "neck_sam2_fpn" in bb:
            for i in range(n):
                rows.append(
                    compare(
                        f"backbone/sam2_fpn{i}", feats.sam2_fpn[i] if feats.sam2_fpn else None, bb["neck_sam2_fpn"][i]
                    )
                )
                rows.append(
                    compare(
                        f"backbone/sam2_pos{i}", feats.sam2_pos[i] if feats.sam2_pos else None, bb["neck_sam2_pos"][i]
                    )
                )
            dec = model.tracker.sam_mask_decoder
            rows.append(compare("backbone/sam2_conv_s0", dec.conv_s0(bb["neck_sam2_fpn"][0]), bb["sam2_conv_s"][0]))
            rows.append(compare("backbone/sam2_conv_s1", dec.conv_s1(bb["neck_sam2_fpn"][1]), bb["sam2_conv_s"][1]))

        # the official features from here on, so each row below measures one stage
        off_feats = BackboneFeatures(
            fpn=list(bb["neck_fpn"][:n]),
            pos=list(bb["neck_pos"][:n]),
            sam2_fpn=list(bb["neck_sam2_fpn"][:n]) if "neck_sam2_fpn" in bb else None,
            sam2_pos=list(bb["neck_sam2_pos"][:n]) if "neck_sam2_pos" in bb else None,
        )
        for name, r in off["grounding"].items():
            case = next(c for c in off["meta"]["plan"]["grounding"] if c["name"] == name)
            text, boxes, labels = case_prompt(case)
            rows.append(compare(f"{name}/tokens", model.tokenizer([text]), r["tokens"]))
            ours_text = det.backbone.forward_text(r["tokens"])
            if "text_features" in r:
                rows.append(compare(f"{name}/text_features", ours_text.features, r["text_features"]))
                rows.append(compare(f"{name}/text_mask", ours_text.mask, r["text_mask"]))
            # the official text features as they entered the encoder (first Lt prompt tokens)
            lt = r["tokens"].shape[1]
            text_in = TextFeatures(features=r["prompt"][:, :lt].clone(), mask=r["prompt_mask"][:, :lt].clone())
            if boxes:
                prompt = GeometricPrompt.from_boxes(
                    torch.tensor([boxes], dtype=torch.float32), torch.tensor([labels], dtype=torch.long)
                )
            else:
                prompt = GeometricPrompt.empty(1)
            cap.data.pop("pixel", None)
            out = det.forward_grounding(off_feats, text_in, prompt)
            rows.append(compare(f"{name}/geometry_tokens", out.prompt[:, lt:], r["geometry_tokens"]))
            rows.append(compare(f"{name}/geometry_mask", out.prompt_mask[:, lt:], r["geometry_mask"]))
            rows.append(compare(f"{name}/prompt", out.prompt, r["prompt"]))
            rows.append(compare(f"{name}/prompt_mask", out.prompt_mask, r["prompt_mask"]))
            rows.append(compare(f"{name}/encoder_memory", out.memory, r["memory"]))
            d = out.decoder
            for layer in range(r["hs"].shape[0]):
                rows.append(compare(f"{name}/decoder{layer}.hs", d.hs[layer], r["hs"][layer]))
                rows.append(
                    compare(f"{name}/decoder{layer}.ref_boxes", d.reference_boxes[layer], r["reference_boxes"][layer])
                )
                rows.append(
                    compare(f"{name}/decoder{layer}.presence", d.presence_logits[layer], r["presence_logits"][layer])
                )
            rows.append(compare(f"{name}/all_pred_logits", out.all_pred_logits, r["all_pred_logits"]))
            rows.append(compare(f"{name}/all_pred_boxes", out.all_pred_boxes, r["all_pred_boxes"]))
            # the row is required: a hook that never fired is a failure ("missing on our side"), not a silence
            pixel = _first_tensor(cap.data["pixel"]) if "pixel" in cap.data else None
            rows.append(compare(f"{name}/pixel_embed", pixel, r["pixel_embed"]))
            rows.append(compare(f"{name}/pred_logits", out.pred_logits, r["pred_logits"]))
            rows.append(compare(f"{name}/presence_logit", out.presence_logit, r["presence_logit"]))
            rows.append(compare(f"{name}/pred_boxes", out.pred_boxes, r["pred_boxes"]))
            rows.append(compare(f"{name}/pred_masks", out.pred_masks, r["pred_masks"]))
            rows.append(compare(f"{name}/scores", out.scores, r["scores"]))
            rows.append(_margin_row(f"{name}/threshold_margin", out.scores, r))
    finally:
        cap.close()
    if off.get("inst"):
        rows += _compare_inst_components(model, off, off_feats)
    return rows


def _margin_row(name: str, ours_scores, r: dict) -> Row:
    """Kept set at the official threshold (the processor rows check the same end to end)."""
    keep = ours_scores.flatten() > r["threshold"]
    same = torch.equal(keep, r["keep"].flatten())
    gap = r["threshold_gap"]
    return Row(
        name,
        float((keep != r["keep"].flatten()).sum()),
        float(r["keep"].sum()),
        same,
        f"threshold {r['threshold']:.6f}, official score gap {gap:.2e}",
    )


def _compare_inst_components(model, off: dict, off_feats) -> list[Row]:
    """Our interactive path on the official tracker-neck features."""
    from sam3.inference.interactive import InteractivePredictor

    rows = [compare("inst/dense_pe", model.tracker.sam_prompt_encoder.get_dense_pe(), off["dense_pe"])]
    predictor = InteractivePredictor(model.tracker)
    feats = predictor.prepare_features(off_feats)
    cap = _Capture(model, {"pe": "tracker.sam_prompt_encoder", "md": "tracker.sam_mask_decoder"})
    try:
        for case in off["meta"]["plan"]["inst"]:
            name, r = case["name"], off["inst"][case["name"]]
            kwargs = _inst_kwargs(case, r)
            cap.data.clear()
            masks, iou, low = predictor.predict_inst(feats, tuple(off["original_hw"]), **kwargs)
            sparse, dense = cap.data.get("pe", (None, None))
            md = cap.data.get("md", (None,) * 4)
            rows.append(compare(f"inst/{name}/sparse", sparse, r["sparse"]))
            rows.append(compare(f"inst/{name}/dense", dense, r["dense"]))
            rows.append(compare(f"inst/{name}/decoder_masks", md[0], r["dec_masks"]))
            rows.append(compare(f"inst/{name}/decoder_iou", md[1], r["dec_iou"]))
            rows.append(compare(f"inst/{name}/decoder_tokens", md[2], r["dec_tokens"]))
            rows.append(compare(f"inst/{name}/object_score", md[3], r["dec_object_score"]))
            rows += _inst_result_rows(f"inst/{name}", case, r, masks, iou, low)
    finally:
        cap.close()
    return rows


def _inst_kwargs(case: dict, r: dict) -> dict:
    kwargs = {
        k: (
            np.asarray(v, dtype=np.float32)
            if k in ("point_coords", "box")
            else np.asarray(v, dtype=np.int32)
            if k == "point_labels"
            else v
        )
        for k, v in case["kwargs"].items()
    }
    if case.get("mask_input_from"):
        kwargs["mask_input"] = r["mask_input"].numpy()  # the official low-res mask, so errors do not compound
    return kwargs


def _inst_result_rows(prefix: str, case: dict, r: dict, masks, iou, low) -> list[Row]:
    rows = [compare(f"{prefix}/iou", iou, r["iou"]), compare(f"{prefix}/low_res", low, r["low_res"])]
    prob = torch.sigmoid(r["masks_logits_full"].double())
    if case["kwargs"].get("return_logits"):
        rows.append(compare(f"{prefix}/masks(logits)", masks, r["masks"]))
        rows.append(compare_masks(f"{prefix}/masks>0", torch.as_tensor(masks) > 0, r["masks"] > 0, prob))
    else:
        rows.append(compare_masks(f"{prefix}/masks", torch.as_tensor(masks) > 0.5, r["masks"] > 0.5, prob))
    return rows


# ----------------------------------------------------------------------------------------------- driver
@dataclass
class ParityReport:
    preset: str
    rows: list[Row]
    timings: dict = field(default_factory=dict)  # {"official": {...}, "ours": {...}}
    meta: dict = field(default_factory=dict)

    @property
    def failures(self) -> list[Row]:
        return [r for r in self.rows if not r.passed]

    def group(self, prefix: str) -> list[Row]:
        return [r for r in self.rows if r.name.startswith(prefix)]

    def table(self, only_failures: bool = False) -> str:
        return table(self.rows, only_failures)


def run_official(
    preset: str, workdir: Path, plan: dict, *, seed: int = 0, threads: int = 1, timeout: float = 3600
) -> tuple[dict, Path]:
    """Build the random official model, save ``sam3.pt`` and run the plan; -> (official results, checkpoint)."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg_path, plan_path = workdir / f"{preset}.json", workdir / "plan.json"
    ckpt, out = workdir / "sam3.pt", workdir / "official.pt"
    write_config(preset, cfg_path)
    plan_path.write_text(json.dumps(plan))
    run_oracle(
        "run_official.py",
        "--config",
        str(cfg_path),
        "--plan",
        str(plan_path),
        "--out",
        str(out),
        "--seed",
        str(seed),
        "--save-checkpoint",
        str(ckpt),
        "--threads",
        str(threads),
        threads=threads,
        timeout=timeout,
    )
    return torch.load(out, map_location="cpu", weights_only=True), ckpt


def run_parity(
    preset: str,
    workdir: Path,
    image_path: Path,
    *,
    seed: int = 0,
    threads: int = 1,
    full_plan: bool = False,
    repeat_text: int = 0,
    processor: bool = True,
) -> ParityReport:
    """The whole comparison (oracle subprocess, then our model in this process)."""
    from tests.parity.processor_rows import compare_processor

    from PIL import Image

    with Image.open(image_path) as im:
        hw = (im.height, im.width)
    plan = default_plan(image_path, hw, full=full_plan, repeat_text=repeat_text)
    t0 = time.perf_counter()
    official, ckpt = run_official(preset, Path(workdir), plan, seed=seed, threads=threads)
    oracle_wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = load_ours(ckpt, preset)
    ours_t = {"load": time.perf_counter() - t0}
    rows: list[Row] = []
    captured: dict = {}
    if processor:
        try:
            rows += compare_processor(model, official, ours_t, captured)
        except Exception as exc:  # keep the component rows: they say where a processor failure comes from
            import traceback

            rows.append(
                Row(
                    "proc/error",
                    math.nan,
                    math.nan,
                    False,
                    f"{type(exc).__name__}: {exc} | " + traceback.format_exc(limit=-3).replace("\n", " "),
                )
            )
    # reuse the processor's backbone outputs when it encoded exactly the official input image
    same = captured.get("trunk") is not None and torch.equal(captured["image"], official["backbone"]["image"])
    rows = compare_components(model, official, captured["trunk"] if same else None) + rows
    return ParityReport(
        preset,
        rows,
        {"official": official["meta"]["timings"] | {"wall": oracle_wall}, "ours": ours_t},
        {
            "warnings": official["meta"]["warnings"],
            "unmapped_config_fields": official["meta"]["unmapped_config_fields"],
        },
    )
