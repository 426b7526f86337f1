"""The plan both sides of the parity run: the photo, the grounding cases (text, boxes, exemplars) and the
click cases, as JSON that the oracle subprocess (``tests/parity/oracle/run_official.py``) reads too.
"""

from __future__ import annotations

from pathlib import Path


def default_plan(image_path: Path, hw: tuple[int, int], *, full: bool = False, repeat_text: int = 0) -> dict:
    """The prompts both sides run. Coordinates are chosen as fractions of the image, here in pixels."""
    h, w = hw
    px = lambda fx, fy: [round(fx * w, 2), round(fy * h, 2)]  # noqa: E731
    grounding = [
        {"name": "text", "steps": [["reset"], ["text", "a red cat"]]},
        {"name": "text_box", "steps": [["reset"], ["text", "a red cat"], ["box", [0.5, 0.5, 0.3, 0.4], True]]},
        {"name": "visual", "steps": [["reset"], ["box", [0.3, 0.6, 0.2, 0.3], True]]},
    ]
    if not full:
        long_text = " ".join(["a very long description of a shopping basket full of fresh fruit"] * 4)
        grounding += [
            {"name": "text_long", "steps": [["reset"], ["text", long_text]]},
            {
                "name": "text_pos_neg",
                "steps": [
                    ["reset"],
                    ["text", "bottle"],
                    ["box", [0.4, 0.5, 0.3, 0.5], True],
                    ["box", [0.7, 0.3, 0.2, 0.2], False],
                ],
            },
            # exemplars: negative with text, positive + negative without text, two positives with text
            {"name": "text_neg", "steps": [["reset"], ["text", "a red cat"], ["box", [0.6, 0.4, 0.3, 0.3], False]]},
            {
                "name": "visual_pos_neg",
                "steps": [["reset"], ["box", [0.3, 0.6, 0.2, 0.3], True], ["box", [0.7, 0.3, 0.2, 0.2], False]],
            },
            {
                "name": "text_two_pos",
                "steps": [
                    ["reset"],
                    ["text", "fruit"],
                    ["box", [0.3, 0.6, 0.2, 0.3], True],
                    ["box", [0.6, 0.4, 0.3, 0.3], True],
                ],
            },
        ]
    box = [*px(0.2, 0.25), *px(0.7, 0.8)]
    inst = [
        {"name": "point", "kwargs": {"point_coords": [px(0.5, 0.5)], "point_labels": [1], "multimask_output": True}},
        {
            "name": "point_single",
            "kwargs": {"point_coords": [px(0.5, 0.5)], "point_labels": [1], "multimask_output": False},
        },
        {
            "name": "pos_neg",
            "kwargs": {"point_coords": [px(0.4, 0.5), px(0.8, 0.2)], "point_labels": [1, 0], "multimask_output": False},
        },
        {"name": "box", "kwargs": {"box": box, "multimask_output": False}},
        {"name": "box_multi", "kwargs": {"box": box, "multimask_output": True}},
        {
            "name": "box_points",
            "kwargs": {
                "box": box,
                "point_coords": [px(0.45, 0.5), px(0.65, 0.7)],
                "point_labels": [1, 0],
                "multimask_output": False,
            },
        },
        {
            "name": "mask_input",
            "kwargs": {"point_coords": [px(0.5, 0.5)], "point_labels": [1], "multimask_output": False},
            "mask_input_from": "point",
        },
        {
            "name": "point_logits",
            "kwargs": {
                "point_coords": [px(0.3, 0.7)],
                "point_labels": [1],
                "multimask_output": True,
                "return_logits": True,
            },
        },
        # a refining click, as the service's refine=true does: the previous best low-res logits as mask input
        {
            "name": "refine",
            "kwargs": {
                "point_coords": [px(0.5, 0.5), px(0.62, 0.4)],
                "point_labels": [1, 0],
                "multimask_output": False,
            },
            "mask_input_from": "point_single",
        },
    ]
    return {
        "image": str(image_path),
        "threshold": "gap",
        "grounding": grounding,
        "inst": inst,
        "repeat_text": repeat_text,
    }


def case_prompt(case: dict) -> tuple[str, list, list]:
    """(text, boxes, labels) in force after a case's steps (reset clears, text replaces, boxes append)."""
    text, boxes, labels = case_prompt_raw(case)
    return (text if text is not None else "visual"), boxes, labels


def case_prompt_raw(case: dict) -> tuple[str | None, list, list]:
    """As :func:`case_prompt`, with None as the text of an exemplar-only case."""
    text, boxes, labels = None, [], []
    for step in case["steps"]:
        if step[0] == "reset":
            text, boxes, labels = None, [], []
        elif step[0] == "text":
            text = step[1]
        elif step[0] == "box":
            boxes.append(list(step[1]))
            labels.append(bool(step[2]))
    return text, boxes, labels
