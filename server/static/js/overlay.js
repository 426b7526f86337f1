// Masks as coloured overlays: the service sends single-channel 0/255 PNGs (base64 inside JSON); each becomes a
// canvas of the image's size, transparent where the mask is 0 and tinted with the object's colour where it is 255.

const PALETTE = [
  "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
  "#469990", "#9a6324", "#800000", "#808000", "#000075", "#fabed4", "#dcbeff", "#aaffc3",
];

export function colour(index) {
  return PALETTE[((index % PALETTE.length) + PALETTE.length) % PALETTE.length];
}

function rgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

export function b64ToBlob(b64) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type: "image/png" });
}

/** A mask PNG (Blob) -> {bits: Uint8Array of 0/1 (row-major), width, height, area: pixels set}. */
export async function maskBits(blob) {
  const bitmap = await createImageBitmap(blob);
  const { width, height } = bitmap;
  const ctx = new OffscreenCanvas(width, height).getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const data = ctx.getImageData(0, 0, width, height).data;
  const bits = new Uint8Array(width * height);
  let area = 0;
  for (let p = 0; p < bits.length; p++) area += bits[p] = data[4 * p] > 127 ? 1 : 0;
  return { bits, width, height, area };
}

/** A canvas of the mask's size: transparent where the mask is 0, tinted with ``hex`` where it is 1. */
export function tint({ bits, width, height }, hex, alpha = 0.55) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  const pixels = ctx.createImageData(width, height);
  const [r, g, b] = rgb(hex);
  const a = Math.round(alpha * 255);
  for (let p = 0, i = 0; p < bits.length; p++, i += 4) {
    if (!bits[p]) continue;
    pixels.data[i] = r;
    pixels.data[i + 1] = g;
    pixels.data[i + 2] = b;
    pixels.data[i + 3] = a;
  }
  ctx.putImageData(pixels, 0, 0);
  return canvas;
}

/** A mask PNG (Blob) -> maskBits(...) plus ``canvas``, its tinted overlay (``alpha``: its opacity). */
export async function tintedMask(blob, hex, alpha = 0.55) {
  const mask = await maskBits(blob);
  return { ...mask, canvas: tint(mask, hex, alpha) };
}

/** Image pixels per CSS pixel of a displayed canvas (1 while it is not laid out). */
export function pixelsPerScreenPixel(canvas) {
  return canvas.clientWidth ? canvas.width / canvas.clientWidth : 1;
}

function overlaps(a, b) {
  return a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3];
}

/**
 * A box [x0, y0, x1, y1] in image pixels with a caption above it. ``taken`` (optional, shared by the boxes of
 * one drawing) holds the caption rectangles already drawn: a caption that would cover one moves down.
 */
export function drawBox(ctx, box, hex, caption = "", dashed = false, taken = null) {
  const [x0, y0, x1, y1] = box;
  const scale = pixelsPerScreenPixel(ctx.canvas); // same size on screen whatever the image's size
  ctx.save();
  ctx.strokeStyle = hex;
  ctx.lineWidth = 2 * scale;
  if (dashed) ctx.setLineDash([6 * scale, 4 * scale]);
  ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
  if (caption) {
    ctx.font = `${Math.round(12 * scale)}px system-ui, sans-serif`;
    const width = ctx.measureText(caption).width + 8 * scale;
    const height = 16 * scale;
    let top = y0 >= height ? y0 - height : y0;
    for (let tries = 0; taken && tries < 20 && taken.some((r) => overlaps(r, [x0, top, x0 + width, top + height])); tries++) {
      top += height;
    }
    taken?.push([x0, top, x0 + width, top + height]);
    ctx.fillStyle = hex;
    ctx.fillRect(x0, top, width, height);
    ctx.fillStyle = "#fff";
    ctx.fillText(caption, x0 + 4 * scale, top + 12 * scale);
  }
  ctx.restore();
}
