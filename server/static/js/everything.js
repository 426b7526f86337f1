// "Everything": every region of the picture on a stage (POST /segment/everything), shown on a layer of its own
// above the stage. Hovering a region highlights it (the smallest region under the pointer); clicking it hands
// the region to the mode (image: a new object; video: a tracked object), then the layer goes away. The button
// again, or Escape, leaves without picking.
//
// Random weights (development mode) give no mask that passes SAM 2's default filters, so there the page opens
// them up (no IoU or stability filter, a coarser grid); with real weights it sends no knob: SAM 2's defaults.

import { report, request, toast } from "./api.js";
import { b64ToBlob, colour, maskBits, tint } from "./overlay.js";

const DEV_KNOBS = { points_per_side: "8", pred_iou_thresh: "0", stability_score_thresh: "0" };
const HOVER = "#facc15";

async function knobs() {
  try {
    const health = await (await request("/health", { quiet: true })).json();
    return health.random_weights ? DEV_KNOBS : {};
  } catch {
    return {};
  }
}

/**
 * Wire an "Everything" button to a stage.
 *   segment(fields) -> Promise<Response> of POST /segment/everything for the picture on the stage
 *   onPick(region)  -> the picked region: {mask: {bits, width, height, area}, bbox, area, predicted_iou,
 *                      stability_score, point: [x, y], index}
 */
export function setupEverything({ button, stage, segment, onPick }) {
  let layer = null; // {canvas, regions, hovered}

  function leave() {
    layer?.canvas.remove();
    layer = null;
    button.classList.remove("active");
    button.textContent = "Everything";
  }

  function draw() {
    const ctx = layer.canvas.getContext("2d");
    ctx.clearRect(0, 0, layer.canvas.width, layer.canvas.height);
    for (const region of layer.regions) ctx.drawImage(region.outline, 0, 0);
    if (layer.hovered) ctx.drawImage(layer.hovered.highlight, 0, 0);
  }

  function regionAt(event) {
    const [x, y] = stage.toImage(event);
    const p = Math.floor(y) * stage.width + Math.floor(x);
    // largest first: the last region holding the pixel is the smallest one there
    for (let i = layer.regions.length - 1; i >= 0; i--) if (layer.regions[i].mask.bits[p]) return layer.regions[i];
    return null;
  }

  async function enter() {
    button.disabled = true;
    button.textContent = "Segmenting…";
    try {
      const answer = await (await segment(await knobs())).json();
      const regions = await Promise.all(
        answer.objects.map(async (o, index) => {
          const mask = await maskBits(b64ToBlob(o.mask));
          return {
            ...o, index, mask, point: o.point_coords[0],
            outline: tint(mask, colour(index), 0.25), highlight: tint(mask, HOVER, 0.6),
          };
        }),
      );
      if (!regions.length) {
        toast("Everything: no region found", "info");
        return;
      }
      const canvas = document.createElement("canvas");
      canvas.className = "layer-everything ready";
      canvas.width = stage.width;
      canvas.height = stage.height;
      canvas.style.width = stage.marks.style.width;
      canvas.style.height = stage.marks.style.height;
      canvas.dataset.regions = String(regions.length);
      canvas.addEventListener("pointermove", (event) => {
        const region = regionAt(event);
        if (region === layer.hovered) return;
        layer.hovered = region;
        canvas.dataset.hovered = region ? String(region.index) : "";
        draw();
      });
      canvas.addEventListener("click", (event) => {
        const region = regionAt(event);
        if (!region) return;
        leave();
        onPick(region);
      });
      stage.element.append(canvas);
      layer = { canvas, regions, hovered: null };
      button.classList.add("active");
      draw();
    } catch (error) {
      report(error);
    } finally {
      button.disabled = false;
      if (!layer) button.textContent = "Everything";
      else {
        const n = layer.regions.length;
        button.textContent = `Everything: ${n} region${n === 1 ? "" : "s"} (pick one, Esc to leave)`;
      }
    }
  }

  button.addEventListener("click", () => {
    if (layer) leave();
    else if (stage.width) enter();
    else report(new Error("Everything: nothing on the stage yet"));
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && layer) leave();
  });
  // the stage's own layers are resized by CSS when the window changes: follow them
  new ResizeObserver(() => {
    if (!layer) return;
    layer.canvas.style.width = stage.marks.style.width;
    layer.canvas.style.height = stage.marks.style.height;
  }).observe(stage.element);
  return { leave };
}

/** The picture on a stage as a PNG Blob (a video frame has no file of its own in the page). */
export function stagePicture(stage) {
  return new Promise((resolve) => stage.image.toBlob(resolve, "image/png"));
}
