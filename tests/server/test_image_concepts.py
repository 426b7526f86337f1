"""The image extensions on the real tiny model, in process: several concepts, exemplar boxes, image_id,
refinable clicks, selected-object merging, RLE masks, and a 4xx naming the field for every bad value."""

from __future__ import annotations

import base64
import json

import anyio
import numpy as np
import pytest
import torch

from fastapi.testclient import TestClient

from server.main import create_app
from server.mask_codec import rle_to_mask
from server.services.model_service import ModelService
from tests.conftest import AUTO_POLICIES
from tests.dev_model import dev_processor, same_weights, torch_threads
from tests.server.conftest import DEFAULT_THREADS, tiny_settings
from tests.server.media import decode_mask, encode


@pytest.fixture(scope="module", params=list(AUTO_POLICIES))
def policy(request):
    """Both resolutions of SAM3_PRECISION=auto (fp32 as on AVX2, bf16 as on AVX-512 BF16), on any CPU."""
    return AUTO_POLICIES[request.param]


@pytest.fixture(scope="module")
def policy_client(policy, media_root):
    """The real app with ``auto`` resolving as ``policy`` says."""
    with TestClient(create_app(tiny_settings(cpu_bf16=policy.cpu_bf16, media_roots=str(media_root)))) as client:
        assert client.get("/health").json()["precision"] == policy.mode
        yield client


@pytest.fixture(scope="module")
def reference():
    """The official-API processor on the dev-mode weights, built apart from the app under test."""
    return dev_processor()


def test_the_reference_holds_the_apps_weights(client, reference):
    assert same_weights(reference.model, client.app.state.models.model)


@pytest.fixture(scope="module")
def photo(coffee) -> bytes:
    return encode(np.ascontiguousarray(coffee[40:360, 100:580]), "PNG")  # 480 x 320, only these tests use it


def files(png: bytes) -> dict:
    return {"image": ("photo.png", png, "image/png")}


def detect(client, png: bytes | None = None, **data):
    response = client.post("/detect", files=files(png) if png is not None else None, data=data)
    assert response.status_code == 200, response.text
    return response.json()


def stats(client) -> dict:
    return client.get("/health").json()["image_cache"]


def without_mask_bytes(obj: dict) -> tuple:
    return obj["mask"], obj["bbox"], obj["score"]


# ---------------------------------------------------------------- several concepts and exemplars


def test_each_prompt_of_a_multi_prompt_request_equals_its_single_prompt_request(client, photo):
    boxes = json.dumps([[0.5, 0.5, 0.4, 0.5], [0.2, 0.3, 0.2, 0.2]])
    box_labels = "[1, 0]"
    texts = ["a cup", "a saucer", "coffee"]
    before = stats(client)
    multi = detect(
        client, photo, texts=json.dumps(texts), boxes=boxes, box_labels=box_labels, confidence="[0, 0.3, 0.45]"
    )
    after = stats(client)
    assert after["backbone_runs"] - before["backbone_runs"] <= 1  # one image encoding for all prompts
    assert after["detector_runs"] - before["detector_runs"] == 3  # one detector run per prompt
    assert [p["count"] for p in multi["prompts"]] == [
        sum(o["prompt_index"] == i for o in multi["objects"]) for i in range(3)
    ]
    scores = [o["score"] for o in multi["objects"]]
    assert scores == sorted(scores, reverse=True)
    assert multi["count"] > 0
    for i, (text, conf) in enumerate(zip(texts, ["0", "0.3", "0.45"])):
        single = detect(client, photo, text=text, boxes=boxes, box_labels=box_labels, confidence=conf)
        mine = [o for o in multi["objects"] if o["prompt_index"] == i]
        assert [without_mask_bytes(o) for o in mine] == [without_mask_bytes(o) for o in single["objects"]]
        assert all(o["label"] == text for o in mine)
        assert single["image_id"] == multi["image_id"]


def test_exemplar_boxes_without_text(client, photo):
    pos = detect(client, photo, boxes="[0.5, 0.5, 0.4, 0.5]", confidence="0")
    assert pos["count"] > 0 and pos["prompts"][0]["text"] is None and pos["prompts"][0]["num_boxes"] == 1
    assert {o["label"] for o in pos["objects"]} == {"visual"} and {o["prompt_index"] for o in pos["objects"]} == {0}
    pos_neg = detect(
        client, photo, boxes="[[0.5, 0.5, 0.4, 0.5], [0.2, 0.3, 0.2, 0.2]]", box_labels="[1, 0]", confidence="0"
    )
    assert [o["score"] for o in pos_neg["objects"]] != [o["score"] for o in pos["objects"]]  # the negative counts


def test_exemplars_equal_the_processor_on_the_same_image(policy_client, policy, reference, photo):
    """The route's answer is the official-API processor's (text + positive and negative boxes), computed in the
    precision the service resolved ``auto`` to (bf16 autocast or fp32)."""
    from PIL import Image
    import io

    body = detect(
        policy_client,
        photo,
        text="a cup",
        boxes="[[0.5, 0.5, 0.4, 0.5], [0.2, 0.3, 0.2, 0.2]]",
        box_labels="[1, 0]",
        confidence="0.2",
    )
    with policy.context(), torch_threads(DEFAULT_THREADS):
        reference.set_confidence_threshold(0.2)
        state = reference.set_image(Image.open(io.BytesIO(photo)).convert("RGB"))
        reference.set_text_prompt("a cup", state)
        reference.add_geometric_prompt([0.5, 0.5, 0.4, 0.5], True, state)
        reference.add_geometric_prompt([0.2, 0.3, 0.2, 0.2], False, state)
    assert body["count"] == state.scores.numel() > 0
    order = torch.argsort(-state.scores, stable=True)
    assert [o["score"] for o in body["objects"]] == pytest.approx(state.scores[order].float().tolist(), abs=0)
    for obj, i in zip(body["objects"], order.tolist()):
        np.testing.assert_array_equal(decode_mask(base64.b64decode(obj["mask"])) > 0, state.masks[i, 0].numpy())


def test_rle_masks_decode_to_the_png_masks(client, photo):
    png = detect(client, photo, text="coffee", confidence="0")
    rle = detect(client, photo, text="coffee", confidence="0", mask_format="rle")
    assert png["count"] == rle["count"] > 0
    for a, b in zip(png["objects"], rle["objects"]):
        assert b["mask"]["size"] == [320, 480] and isinstance(b["mask"]["counts"], str)
        np.testing.assert_array_equal(decode_mask(base64.b64decode(a["mask"])) > 0, rle_to_mask(b["mask"]))


# ---------------------------------------------------------------- image_id


def test_every_answer_carries_the_image_id_and_the_id_replaces_the_upload(client, photo):
    first = client.post("/predict/mask", files=files(photo), data={"points": "[[200, 150]]"})
    image_id = first.headers["x-image-id"]
    assert len(image_id) == 32
    runs = stats(client)["backbone_runs"]
    again = client.post("/predict/mask", data={"image_id": image_id, "points": "[[200, 150]]"})
    assert again.status_code == 200 and again.content == first.content
    assert again.headers["x-image-id"] == image_id
    assert detect(client, image_id=image_id, text="cup")["image_id"] == image_id
    seg = client.post("/segment/text", data={"image_id": image_id, "text": "cup"})
    assert seg.status_code == 200 and seg.headers["x-image-id"] == image_id
    multi = client.post("/predict/mask", data={"image_id": image_id, "points": "[[20, 15]]", "multimask": "true"})
    assert multi.json()["image_id"] == image_id
    assert stats(client)["backbone_runs"] == runs


def test_an_evicted_image_id_is_404(client, photo):
    image_id = client.post("/predict/mask", files=files(photo), data={"points": "[[10, 10]]"}).headers["x-image-id"]
    processor = client.app.state.models.processor
    with client.app.state.models._thread_lock:
        processor.clear_cache()
    response = client.post("/predict/mask", data={"image_id": image_id, "points": "[[10, 10]]"})
    assert response.status_code == 404 and response.json()["detail"].startswith("image_id: ")
    assert client.post("/detect", data={"image_id": "0" * 32, "text": "x"}).status_code == 404


# ---------------------------------------------------------------- refinement


def test_refine_feeds_the_previous_logits_back_as_the_predictor_does(policy_client, policy, reference, photo):
    from PIL import Image
    import io

    client = policy_client
    first = client.post(
        "/predict/mask",
        files=files(photo),
        data={"points": "[[240, 160]]", "multimask": "true", "object_id": "cup-1", "return_logits": "true"},
    ).json()
    assert first["refined"] is False and len(first["low_res_logits"]) == 3
    image_id = first["image_id"]
    two = {"image_id": image_id, "points": "[[240, 160], [300, 200]]", "labels": "[1, 0]", "return_logits": "true"}
    refined = client.post("/predict/mask", data={**two, "object_id": "cup-1", "refine": "true"})
    assert refined.status_code == 200 and refined.json()["refined"] is True
    plain = client.post("/predict/mask", data=two).json()
    # The official predictor's call with the best previous low-res logits as mask_input, in the same precision.
    g = first["logits_shape"]
    logits = lambda body: np.frombuffer(base64.b64decode(body["low_res_logits"][0]), dtype="<f4").reshape(g).copy()  # noqa: E731
    with policy.context(), torch_threads(DEFAULT_THREADS):
        state = reference.set_image(Image.open(io.BytesIO(photo)).convert("RGB"))
        masks, iou, low = reference.predict_inst(
            state,
            point_coords=[[240, 160], [300, 200]],
            point_labels=[1, 0],
            mask_input=logits(first)[None],
            multimask_output=False,
        )
    body = refined.json()
    np.testing.assert_array_equal(decode_mask(base64.b64decode(body["masks"][0])) > 0, masks[0] > 0.5)
    np.testing.assert_array_equal(logits(body), low[0])
    assert body["scores"][0] == pytest.approx(float(iou[0]), abs=1e-6)
    assert np.abs(logits(body) - logits(plain)).max() > 1e-3  # the mask input changed the answer
    other = client.post(
        "/predict/mask",
        data={"image_id": image_id, "points": "[[240, 160]]", "object_id": "never-seen", "refine": "true"},
    )
    assert other.status_code == 200 and other.headers["x-refined"] == "false"  # a first click starts fresh


# ---------------------------------------------------------------- selected objects


def test_selected_objects_merge_to_the_or_of_their_detect_masks_without_a_detector_run(client, photo):
    fields = {"texts": '["a cup", "a spoon"]', "confidence": "[0, 0.3]"}
    body = detect(client, photo, **fields)
    assert body["count"] >= 3
    chosen = [0, body["count"] - 1, 1]
    runs = stats(client)
    merged = client.post(
        "/segment/text", data={"image_id": body["image_id"], "object_indices": json.dumps(chosen), **fields}
    )
    assert merged.status_code == 200 and merged.headers["x-object-count"] == "3"
    after = stats(client)
    assert (after["detector_runs"], after["backbone_runs"]) == (runs["detector_runs"], runs["backbone_runs"])
    union = np.zeros((320, 480), bool)
    for i in chosen:
        union |= decode_mask(base64.b64decode(body["objects"][i]["mask"])) > 0
    np.testing.assert_array_equal(decode_mask(merged.content) > 0, union)
    none = client.post("/segment/text", data={"image_id": body["image_id"], "object_indices": "[]", **fields})
    assert none.headers["x-object-count"] == "0" and decode_mask(none.content).max() == 0


# ---------------------------------------------------------------- the queue comes before the decode


def test_a_waiting_request_reads_its_upload_only_inside_its_slot(client, photo):
    shared = client.app.state.models
    service = ModelService(tiny_settings())
    service.model, service.processor, service._loaded_event = shared.model, shared.processor, shared._loaded_event
    events: list[str] = []

    async def read() -> bytes:
        events.append("read")
        return photo

    async def main():
        async with anyio.create_task_group() as tasks:
            async with service._slot():  # another request holds the model
                tasks.start_soon(service.run_on_image, read, None, lambda state: events.append(state.image_id))
                await anyio.sleep(0.2)
                assert service._waiting == 2 and events == []  # queued, nothing read or decoded
            # released: the waiting request reads, decodes and runs

    anyio.run(main)
    assert events[0] == "read" and len(events[1]) == 32


# ---------------------------------------------------------------- bad values name their field


@pytest.mark.parametrize(
    "path, data, status, field",
    [
        ("/detect", {"texts": '["a"'}, 400, "texts"),
        ("/detect", {"texts": "[]"}, 400, "texts"),
        ("/detect", {"texts": '"cat"'}, 400, "texts"),
        ("/detect", {"texts": "[1]"}, 400, "texts[0]"),
        ("/detect", {"texts": '["cat", " "]'}, 422, "texts[1]"),
        ("/detect", {"texts": json.dumps(["x"] * 17)}, 422, "texts"),
        ("/detect", {"texts": '["cat"]', "text": "dog"}, 400, "texts"),
        ("/detect", {"text": "cat", "boxes": "[0.5, 0.5, 0.2]"}, 400, "boxes"),
        ("/detect", {"text": "cat", "boxes": "[[0.5, 0.5, 0.2, 0.2]]", "box_labels": "[1, 0]"}, 400, "box_labels"),
        ("/detect", {"text": "cat", "boxes": "[[0.5, 0.5, 0.2, 0.2]]", "box_labels": "[2]"}, 400, "box_labels[0]"),
        ("/detect", {"text": "cat", "box_labels": "[1]"}, 400, "box_labels"),
        ("/detect", {"boxes": "[[0.5, 0.5, 0.2, 0.2]]", "box_labels": "[0]"}, 422, "box_labels"),
        ("/detect", {"texts": '["a", "b"]', "confidence": "[0.5]"}, 422, "confidence"),
        ("/detect", {"texts": '["a", "b"]', "confidence": "[0.5, 1.5]"}, 422, "confidence[1]"),
        ("/detect", {"text": "cat", "mask_format": "jpeg"}, 422, "mask_format"),
        ("/detect", {"text": "cat", "image_id": "not-an-id"}, 400, "image_id"),
        ("/segment/text", {"text": "cat", "object_indices": "first"}, 400, "object_indices"),
        ("/segment/text", {"text": "cat", "object_indices": "[-1]"}, 400, "object_indices[0]"),
        ("/segment/text", {"text": "cat", "object_indices": "[true]"}, 400, "object_indices[0]"),
        ("/segment/text", {"text": "cat", "object_indices": "[100000]", "confidence": "1"}, 400, "object_indices[0]"),
        ("/predict/mask", {"points": "[[5, 5]]", "refine": "true"}, 400, "object_id"),
        ("/predict/mask", {"points": "[[5, 5]]", "object_id": "a b/c"}, 400, "object_id"),
        ("/predict/mask", {"points": "[[5, 5]]", "refine": "perhaps", "object_id": "a"}, 422, "refine"),
        ("/predict/mask", {"points": "[[5, 5]]", "return_logits": "2"}, 422, "return_logits"),
    ],
)
def test_bad_new_fields_name_the_field(client, photo, path, data, status, field):
    response = client.post(path, files=files(photo), data=data)
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["detail"].startswith(field), response.json()["detail"]


def test_image_and_image_id_together_or_neither(client, photo):
    both = client.post("/detect", files=files(photo), data={"text": "cat", "image_id": "0" * 32})
    assert both.status_code == 400 and both.json()["detail"].startswith("image_id")
    neither = client.post("/predict/mask", data={"points": "[[5, 5]]"})
    assert neither.status_code == 422 and neither.json()["detail"].startswith("image")
    assert client.get("/health").json()["model_loaded"]
