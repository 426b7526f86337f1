// Image mode: clicks and boxes -> POST /predict/mask (refined by object_id), text -> POST /detect, the selected
// objects -> a merged mask PNG. The image is uploaded once; later requests send its image_id.

import { report, request } from "./api.js";
import { setupEverything } from "./everything.js";
import { b64ToBlob, colour, drawBox, tint, tintedMask } from "./overlay.js";
import { unionMaskPng } from "./png_gray.js";
import { Stage } from "./stage.js";

const $ = (id) => document.getElementById(id);

const state = {
  file: null, // the chosen image (Blob)
  imageId: null, // the service's feature-cache key for it (X-Image-ID / image_id)
  clicks: [], // {x, y, label} of the object being clicked
  box: null, // [x0, y0, x1, y1] pixels of the object being clicked
  current: null, // {mask, score} of the object being clicked
  clickCount: 0, // numbers the click objects: object_id "click-N"
  requests: 0, // numbers the click requests, so that a late answer to an older click is dropped
  pending: null, // {clicks, box} of the click request on its way
  kept: 0, // kept click objects so far: the k-th takes colour(-1 - k), from the palette's end
  objects: [], // {label, score, bbox, mask, colour, selected}, kept clicks first, then detections
  undo: [], // {clicks, box} before each click or box of the object being clicked
  fetchedAt: null, // the confidence the shown detections were fetched at (the slider filters above it)
};

const stage = new Stage($("image-stage"), {
  // a click made while the previous one is still on its way builds on that one
  onPoint: (x, y, label) => segmentClicks([...(state.pending || state).clicks, { x, y, label }], (state.pending || state).box),
  onBox: (box) => segmentClicks((state.pending || state).clicks, box),
});

/** POST an image form: image_id when the service has the image, else the image itself (again on a 404). */
async function postImage(path, fields) {
  const form = new FormData();
  if (state.imageId) form.append("image_id", state.imageId);
  else form.append("image", state.file, state.file.name || "image.png");
  for (const [key, value] of Object.entries(fields)) if (value !== undefined) form.append(key, value);
  try {
    const response = await request(path, { form, quiet: true });
    const id = response.headers.get("X-Image-ID");
    if (id) state.imageId = id;
    return response;
  } catch (error) {
    if (error.status === 404 && state.imageId && error.detail.startsWith("image_id")) {
      state.imageId = null; // evicted from the service's cache: send the image again
      return postImage(path, fields);
    }
    throw error;
  }
}

async function openImage(file) {
  if (!file) return;
  const bitmap = await createImageBitmap(file).catch(() => null);
  if (!bitmap) {
    report(new Error(`${file.name}: the browser cannot decode this image`));
    return;
  }
  Object.assign(state, { file, imageId: null, objects: [], fetchedAt: null });
  resetClicks();
  stage.showPicture(bitmap);
  bitmap.close();
  redraw();
}

/** Segment the object being clicked with these clicks and box; kept only when the service answers. */
async function segmentClicks(clicks, box) {
  if (!state.file) return;
  const refine = state.current !== null;
  const objectId = state.clickCount + (refine ? 0 : 1);
  const fields = { object_id: `click-${objectId}`, refine: String(refine) };
  if (clicks.length) {
    fields.points = JSON.stringify(clicks.map((c) => [c.x, c.y]));
    fields.labels = JSON.stringify(clicks.map((c) => c.label));
  }
  if (box) fields.boxes = JSON.stringify(stage.normalisedBox(box));
  stage.drawMarks(clicks, box);
  $("click-info").textContent = "Segmenting…";
  const ticket = ++state.requests;
  state.pending = { clicks, box };
  try {
    const response = await postImage("/predict/mask", fields);
    const score = Number(response.headers.get("X-Mask-Score"));
    const mask = await tintedMask(await response.blob(), colour(0));
    if (ticket !== state.requests) return; // a newer click is on its way
    if (!state.undoing) state.undo.push({ clicks: state.clicks, box: state.box });
    Object.assign(state, { clicks, box, clickCount: objectId });
    state.current = { mask, score, refined: response.headers.get("X-Refined") === "true" };
  } catch (error) {
    report(error); // the clicks stay as they were before this one
    if (ticket !== state.requests) return;
  }
  state.pending = null;
  redraw();
}

/** Keep the clicked mask as an object in the list and start a new one. */
function commitClicks() {
  if (state.current) {
    const { mask, score } = state.current;
    const hue = colour(-1 - state.kept++);
    const kept = { ...mask, canvas: tint(mask, hue) };
    state.objects.unshift({ label: `click ${state.clickCount}`, score, bbox: state.box, mask: kept, colour: hue, selected: true, clicked: true });
  }
  resetClicks();
  redraw();
}

/** Start a new click object; an answer still on its way for the old one is dropped. */
function resetClicks() {
  Object.assign(state, { clicks: [], box: null, current: null, pending: null, undo: [] });
  state.requests += 1;
}

/** Take back the last click or box of the object being clicked (segmented again from the ones before). */
async function undoClick() {
  const before = state.undo.pop();
  if (!before) {
    report(new Error("Nothing to undo"));
    return;
  }
  const rest = state.undo;
  if (!before.clicks.length && !before.box) {
    resetClicks(); // it was the object's first click
    redraw();
    return;
  }
  state.current = null; // segment afresh from the earlier clicks (no refinement from the undone mask)
  state.clickCount -= 1;
  state.undoing = true;
  try {
    await segmentClicks(before.clicks, before.box);
  } finally {
    state.undoing = false;
    state.undo = rest;
  }
}

function clearAll() {
  Object.assign(state, { objects: [], kept: 0, fetchedAt: null });
  resetClicks();
  redraw();
}

/** Detections at or above the slider's confidence (kept clicks always show). */
function passes(o) {
  return o.clicked || o.score >= Number($("confidence").value);
}

async function detect(event) {
  event.preventDefault();
  if (!state.file) {
    report(new Error("Choose an image first"));
    return;
  }
  const prompts = $("text-input").value.split(",").map((s) => s.trim());
  const texts = prompts.filter(Boolean);
  const fields = { confidence: $("confidence").value };
  state.fetchedAt = Number(fields.confidence);
  // one prompt goes as `text` (also whitespace, so the service names the problem); several as `texts`
  if (texts.length > 1) fields.texts = JSON.stringify(texts);
  else fields.text = texts[0] ?? prompts[0];
  try {
    const result = await (await postImage("/detect", fields)).json();
    if (result.image_id) state.imageId = result.image_id;
    const detections = await Promise.all(
      result.objects.map(async (o, i) => {
        const hue = colour(1 + i); // by rank: the same prompt gives the same colours again
        const label = o.label ?? texts[o.prompt_index ?? 0];
        return { label, score: o.score, bbox: o.bbox, mask: await tintedMask(b64ToBlob(o.mask), hue), colour: hue, selected: true };
      }),
    );
    state.objects = state.objects.filter((o) => o.clicked).concat(detections);
  } catch (error) {
    report(error);
  }
  redraw();
}

function redraw() {
  const shown = state.objects.filter((o) => o.selected && passes(o));
  stage.drawMasks([...shown.map((o) => o.mask.canvas), ...(state.current ? [state.current.mask.canvas] : [])]);
  const ctx = stage.drawMarks(state.clicks, state.box);
  const labels = $("image-labels").checked;
  const taken = [];
  for (const o of state.objects.filter(passes)) {
    const caption = o.selected && labels ? `${o.label} ${o.score.toFixed(2)}` : "";
    if (o.bbox) drawBox(ctx, o.bbox, o.colour, caption, !o.selected, taken);
  }
  $("click-info").textContent = state.current
    ? `Clicked object: score ${state.current.score.toFixed(3)}, ${state.current.mask.area} px` +
      (state.current.refined ? " (refined)" : "")
    : "No clicks yet.";
  renderList();
}

function renderList() {
  const list = $("object-list");
  list.replaceChildren(
    ...state.objects.filter(passes).map((o) => {
      const item = document.createElement("li");
      item.className = o.selected ? "selected" : "off";
      item.innerHTML = `<span class="swatch"></span><span class="label"></span><span class="score"></span>`;
      item.querySelector(".swatch").style.background = o.colour;
      item.querySelector(".label").textContent = o.label;
      item.querySelector(".score").textContent = o.score.toFixed(3);
      item.title = "click to select or deselect";
      item.addEventListener("click", () => {
        o.selected = !o.selected;
        redraw();
      });
      return item;
    }),
  );
  const listed = state.objects.filter(passes);
  const selected = listed.filter((o) => o.selected).length;
  const below = state.objects.length - listed.length;
  $("object-count").textContent =
    (listed.length ? `${selected} of ${listed.length} selected` : "") + (below ? ` (${below} below the confidence)` : "");
}

async function downloadMask() {
  const masks = state.objects.filter((o) => o.selected && passes(o)).map((o) => o.mask.bits);
  if (state.current) masks.push(state.current.mask.bits);
  if (!masks.length) {
    report(new Error("Nothing selected: click the image or detect objects first"));
    return;
  }
  const png = await unionMaskPng(masks, stage.width, stage.height); // single-channel 0/255, as the API's
  const link = document.createElement("a");
  link.href = URL.createObjectURL(png);
  link.download = `${(state.file.name || "image").replace(/\.[^.]*$/, "")}_mask.png`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

export function setupImageMode() {
  $("image-file").addEventListener("change", (event) => {
    openImage(event.target.files[0]);
    event.target.value = ""; // choosing the same file again opens it again
  });
  const area = $("image-stage");
  area.addEventListener("dragover", (event) => {
    event.preventDefault();
    area.classList.add("dragover");
  });
  area.addEventListener("dragleave", () => area.classList.remove("dragover"));
  area.addEventListener("drop", (event) => {
    event.preventDefault();
    area.classList.remove("dragover");
    openImage(event.dataTransfer.files[0]);
  });
  $("new-object").addEventListener("click", commitClicks);
  $("clear-clicks").addEventListener("click", () => {
    resetClicks();
    redraw();
  });
  $("text-form").addEventListener("submit", detect);
  $("confidence").addEventListener("input", (event) => {
    $("confidence-value").textContent = Number(event.target.value).toFixed(2);
    redraw(); // live, on the detections already returned
  });
  $("confidence").addEventListener("change", (event) => {
    // below the confidence the detections were fetched at: fetch the ones that were left out
    if (state.fetchedAt !== null && Number(event.target.value) < state.fetchedAt && $("text-input").value.trim()) {
      detect(new Event("submit"));
    }
  });
  $("undo-click").addEventListener("click", undoClick);
  $("clear-all").addEventListener("click", clearAll);
  $("image-labels").addEventListener("change", redraw);
  $("image-opacity").addEventListener("input", (event) => {
    $("image-stage").querySelector(".layer-mask").style.opacity = event.target.value;
  });
  document.addEventListener("keydown", (event) => {
    const typing = event.target.closest?.("input:not([type=range]), textarea, select");
    if (!$("image-mode").hidden && !typing && (event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z") {
      event.preventDefault();
      undoClick();
    }
  });
  $("download-mask").addEventListener("click", downloadMask);
  setupEverything({
    button: $("everything"),
    stage,
    segment: (fields) => postImage("/segment/everything", fields),
    onPick: (region) => {
      const hue = colour(-1 - state.kept++); // kept like a clicked object
      const [x0, y0, x1, y1] = region.bbox;
      const mask = { ...region.mask, canvas: tint(region.mask, hue) };
      const label = `region ${region.index + 1}`;
      state.objects.unshift({ label, score: region.predicted_iou, bbox: [x0, y0, x1 + 1, y1 + 1], mask, colour: hue, selected: true, clicked: true });
      redraw();
    },
  });
}
