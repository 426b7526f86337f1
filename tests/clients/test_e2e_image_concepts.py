"""The image extensions over a real ``uvicorn`` process and real HTTP, checked against the same weights in
this process: the server loads a random tiny ``sam3.pt`` that this test also loads.

* clicks by ``image_id`` never run the backbone again (``/health`` ``backbone_runs`` unchanged);
* ``refine=true`` changes the mask exactly as the predictor does with the previous logits as ``mask_input``;
* merging selected objects equals the OR of the chosen ``/detect`` masks;
* every new field's bad value is a 4xx JSON naming the field.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from tests.clients.conftest import LiveServer, start_server, stop_server


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from sam3.build import build_image_model

    torch.manual_seed(1)
    model = build_image_model(preset="tiny", random_weights=True, device="cpu")
    path = tmp_path_factory.mktemp("e2e_concepts") / "sam3.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory, checkpoint) -> Iterator[LiveServer]:
    live = start_server(
        tmp_path_factory.mktemp("e2e_concepts_srv"),
        # fp32 stated: the answers are compared with this process's fp32 processor to round-off
        {"SAM3_RANDOM_WEIGHTS": "false", "SAM3_CHECKPOINT": str(checkpoint), "SAM3_PRECISION": "fp32"},
    )
    health = httpx.get(f"{live.url}/health").json()
    assert health["model_loaded"], f"{health['error']}\n{live.log()}"
    assert health["precision"] == "fp32"
    yield live
    stop_server(live)


@pytest.fixture(scope="module")
def processor(checkpoint):
    from sam3.build import build_image_model
    from sam3.inference.processor import Sam3Processor

    return Sam3Processor(build_image_model(checkpoint_path=checkpoint, preset="tiny", device="cpu"))


@pytest.fixture(scope="module")
def photo(astronaut) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(astronaut[30:350, 40:460]).save(buffer, format="PNG")  # 420 x 320
    return buffer.getvalue()


def mask_of(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png))) > 0


def runs(url: str) -> tuple[int, int]:
    cache = httpx.get(f"{url}/health").json()["image_cache"]
    return cache["backbone_runs"], cache["detector_runs"]


def test_clicks_by_image_id_never_run_the_backbone_again(server, photo):
    with httpx.Client(base_url=server.url, timeout=60) as http:
        first = http.post(
            "/predict/mask", files={"image": ("p.png", photo, "image/png")}, data={"points": "[[200, 100]]"}
        )
        assert first.status_code == 200, first.text
        image_id = first.headers["x-image-id"]
        before = runs(server.url)
        for i in range(6):
            r = http.post(
                "/predict/mask", data={"image_id": image_id, "points": json.dumps([[30 + 60 * i, 40 + 40 * i]])}
            )
            assert r.status_code == 200 and r.headers["x-image-id"] == image_id
        detected = http.post("/detect", data={"image_id": image_id, "texts": '["face", "helmet"]'})
        assert detected.status_code == 200 and detected.json()["image_id"] == image_id
        assert runs(server.url)[0] == before[0]


def test_refinement_changes_the_mask_as_the_predictor_does(server, photo, processor):
    with httpx.Client(base_url=server.url, timeout=60) as http:
        first = http.post(
            "/predict/mask",
            files={"image": ("p.png", photo, "image/png")},
            data={"points": "[[210, 160]]", "multimask": "true", "object_id": "astronaut", "return_logits": "true"},
        ).json()
        image_id, shape = first["image_id"], first["logits_shape"]
        clicks = {"points": "[[210, 160], [100, 60]]", "labels": "[1, 0]", "return_logits": "true"}
        refined = http.post(
            "/predict/mask", data={"image_id": image_id, "object_id": "astronaut", "refine": "true", **clicks}
        ).json()
        plain = http.post("/predict/mask", data={"image_id": image_id, **clicks}).json()
    decode = lambda b64: np.frombuffer(base64.b64decode(b64), dtype="<f4").reshape(shape).copy()  # noqa: E731
    assert refined["refined"] is True
    state = processor.set_image(Image.open(io.BytesIO(photo)).convert("RGB"))
    previous = decode(first["low_res_logits"][0])  # best first: what the server fed back
    masks, iou, low = processor.predict_inst(
        state,
        point_coords=[[210, 160], [100, 60]],
        point_labels=[1, 0],
        mask_input=previous[None],
        multimask_output=False,
    )
    np.testing.assert_array_equal(mask_of(base64.b64decode(refined["masks"][0])), masks[0] > 0.5)
    np.testing.assert_allclose(decode(refined["low_res_logits"][0]), low[0], rtol=0, atol=1e-5)
    assert refined["scores"][0] == pytest.approx(float(iou[0]), abs=1e-5)
    assert np.abs(decode(refined["low_res_logits"][0]) - decode(plain["low_res_logits"][0])).max() > 1e-3


def test_selected_objects_merge_to_the_or_of_the_detect_masks(server, photo):
    fields = {
        "texts": '["a person", "the sky"]',
        "boxes": "[[0.5, 0.5, 0.3, 0.5]]",
        "box_labels": "[1]",
        "confidence": "[0, 0.2]",
    }
    with httpx.Client(base_url=server.url, timeout=60) as http:
        body = http.post("/detect", files={"image": ("p.png", photo, "image/png")}, data=fields).json()
        assert body["count"] >= 4 and {o["prompt_index"] for o in body["objects"]} <= {0, 1}
        chosen = [body["count"] - 1, 2, 0]
        before = runs(server.url)
        merged = http.post(
            "/segment/text", data={"image_id": body["image_id"], "object_indices": json.dumps(chosen), **fields}
        )
        assert merged.status_code == 200 and merged.headers["x-object-count"] == "3"
        assert runs(server.url) == before  # neither the backbone nor the detector ran again
    union = np.zeros((320, 420), bool)
    for i in chosen:
        union |= mask_of(base64.b64decode(body["objects"][i]["mask"]))
    np.testing.assert_array_equal(mask_of(merged.content), union)


@pytest.mark.parametrize(
    "path, data, status, field",
    [
        ("/detect", {"texts": '["a", 3]'}, 400, "texts[1]"),
        ("/detect", {"text": "a", "boxes": "[[0.5, 0.5, 0.2, 0.2]]", "box_labels": "[1, 1]"}, 400, "box_labels"),
        ("/detect", {"text": "a", "mask_format": "svg"}, 422, "mask_format"),
        ("/detect", {"text": "a", "confidence": "[0.1, 0.2]"}, 422, "confidence"),
        ("/segment/text", {"text": "a", "object_indices": "[0.5]"}, 400, "object_indices[0]"),
        ("/predict/mask", {"points": "[[5, 5]]", "refine": "true"}, 400, "object_id"),
        ("/predict/mask", {"points": "[[5, 5]]", "image_id": "f" * 32}, 404, "image_id"),
    ],
)
def test_bad_values_are_4xx_json_naming_the_field(server, photo, path, data, status, field):
    files = None if "image_id" in data else {"image": ("p.png", photo, "image/png")}
    response = httpx.post(f"{server.url}{path}", files=files, data=data, timeout=60)
    assert response.status_code == status, response.text
    assert response.json()["detail"].startswith(field)
