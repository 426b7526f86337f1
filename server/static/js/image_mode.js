// Image mode: clicks and boxes -> POST /predict/mask (refined by object_id), text -> POST /detect, the selected
// objects -> a merged mask PNG. The image is uploaded once; later requests send its image_id.

import { report, request } from "./api.js";
import { b64ToBlob, colour, drawBox, mergedMaskPng, tint, tintedMask } from "./overlay.js";
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
  nextColour: 1, // colour(0) is the object being clicked; kept and detected objects take the next ones
  objects: [], // {label, score, bbox, mask, colour, selected}, kept clicks first, then detections
};

const stage = new Stage($("image-stage"), {
  onPoint: (x, y, label) => {
    state.clicks.push({ x, y, label });
    segmentClicks();
  },
  onBox: (box) => {
    state.box = box;
    segmentClicks();
  },
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
  if (!file.type.startsWith("image/")) {
    report(new Error(`${file.name}: not an image`));
    return;
  }
  const bitmap = await createImageBitmap(file).catch(() => null);
  if (!bitmap) {
    report(new Error(`${file.name}: the browser cannot decode this image`));
    return;
  }
  Object.assign(state, { file, imageId: null, clicks: [], box: null, current: null, objects: [] });
  stage.showPicture(bitmap);
  bitmap.close();
  redraw();
}

async function segmentClicks() {
  if (!state.file) return;
  const refine = state.current !== null;
  if (!refine) state.clickCount += 1;
  const fields = { object_id: `click-${state.clickCount}`, refine: String(refine) };
  if (state.clicks.length) {
    fields.points = JSON.stringify(state.clicks.map((c) => [c.x, c.y]));
    fields.labels = JSON.stringify(state.clicks.map((c) => c.label));
  }
  if (state.box) fields.boxes = JSON.stringify(stage.normalisedBox(state.box));
  redraw();
  const ticket = ++state.requests;
  try {
    const response = await postImage("/predict/mask", fields);
    const score = Number(response.headers.get("X-Mask-Score"));
    const mask = await tintedMask(await response.blob(), colour(0));
    if (ticket !== state.requests) return;
    state.current = { mask, score };
  } catch (error) {
    report(error);
  }
  redraw();
}

/** Keep the clicked mask as an object in the list and start a new one. */
function commitClicks() {
  if (state.current) {
    const { mask, score } = state.current;
    const hue = colour(state.nextColour++);
    const kept = { ...mask, canvas: tint(mask, hue) };
    state.objects.unshift({ label: `click ${state.clickCount}`, score, bbox: state.box, mask: kept, colour: hue, selected: true, clicked: true });
  }
  Object.assign(state, { clicks: [], box: null, current: null });
  redraw();
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
  // one prompt goes as `text` (also whitespace, so the service names the problem); several as `texts`
  if (texts.length > 1) fields.texts = JSON.stringify(texts);
  else fields.text = texts[0] ?? prompts[0];
  try {
    const result = await (await postImage("/detect", fields)).json();
    if (result.image_id) state.imageId = result.image_id;
    const detections = await Promise.all(
      result.objects.map(async (o, i) => {
        const hue = colour(state.nextColour + i);
        const label = o.label ?? texts[o.prompt_index ?? 0];
        return { label, score: o.score, bbox: o.bbox, mask: await tintedMask(b64ToBlob(o.mask), hue), colour: hue, selected: true };
      }),
    );
    state.nextColour += detections.length;
    state.objects = state.objects.filter((o) => o.clicked).concat(detections);
  } catch (error) {
    report(error);
  }
  redraw();
}

function redraw() {
  const shown = state.objects.filter((o) => o.selected);
  stage.drawMasks([...shown.map((o) => o.mask.canvas), ...(state.current ? [state.current.mask.canvas] : [])]);
  const ctx = stage.drawMarks(state.clicks, state.box);
  for (const o of state.objects) {
    if (o.bbox) drawBox(ctx, o.bbox, o.colour, o.selected ? `${o.label} ${o.score.toFixed(2)}` : "", !o.selected);
  }
  $("click-info").textContent = state.current
    ? `Clicked object: score ${state.current.score.toFixed(3)}, ${state.current.mask.area} px`
    : state.clicks.length || state.box ? "Segmenting…" : "No clicks yet.";
  renderList();
}

function renderList() {
  const list = $("object-list");
  list.replaceChildren(
    ...state.objects.map((o) => {
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
  const selected = state.objects.filter((o) => o.selected).length;
  $("object-count").textContent = state.objects.length ? `${selected} of ${state.objects.length} selected` : "";
}

async function downloadMask() {
  const masks = state.objects.filter((o) => o.selected).map((o) => o.mask.bits);
  if (state.current) masks.push(state.current.mask.bits);
  if (!masks.length) {
    report(new Error("Nothing selected: click the image or detect objects first"));
    return;
  }
  const png = await mergedMaskPng(masks, stage.width, stage.height);
  const link = document.createElement("a");
  link.href = URL.createObjectURL(png);
  link.download = `${(state.file.name || "image").replace(/\.[^.]*$/, "")}_mask.png`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

export function setupImageMode() {
  $("image-file").addEventListener("change", (event) => openImage(event.target.files[0]));
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
    Object.assign(state, { clicks: [], box: null, current: null });
    redraw();
  });
  $("text-form").addEventListener("submit", detect);
  $("confidence").addEventListener("input", (event) => {
    $("confidence-value").textContent = Number(event.target.value).toFixed(2);
  });
  $("download-mask").addEventListener("click", downloadMask);
}
