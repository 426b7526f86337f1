// The picture with its overlays: three stacked canvases of the image's size (image, masks, marks), scaled
// together by CSS. Pointer input is turned into image-pixel points and boxes:
//   click -> onPoint(x, y, label)  (label 0 with Shift or the right button, else 1)
//   drag  -> onBox([x0, y0, x1, y1])

import { pixelsPerScreenPixel } from "./overlay.js";

const DRAG_PX = 6; // screen pixels a press must move to count as a box drag

export class Stage {
  constructor(element, { onPoint, onBox }) {
    this.element = element;
    this.image = element.querySelector(".layer-image");
    this.mask = element.querySelector(".layer-mask");
    this.marks = element.querySelector(".layer-marks");
    this.width = 0;
    this.height = 0;
    this.onPoint = onPoint;
    this.onBox = onBox;
    this.press = null;
    this.marks.addEventListener("contextmenu", (event) => event.preventDefault());
    this.marks.addEventListener("pointerdown", (event) => this.down(event));
    this.marks.addEventListener("pointermove", (event) => this.move(event));
    this.marks.addEventListener("pointerup", (event) => this.up(event));
    new ResizeObserver(() => this.fit()).observe(element);
  }

  /** Scale the layers (up or down) to fill the stage's width, at most 75% of the window's height. */
  fit() {
    const room = this.element.clientWidth;
    if (!this.width || !room) return;
    const scale = Math.min(room / this.width, (0.75 * window.innerHeight) / this.height);
    for (const canvas of [this.image, this.mask, this.marks]) {
      canvas.style.width = `${Math.floor(this.width * scale)}px`;
      canvas.style.height = `${Math.floor(this.height * scale)}px`;
    }
  }

  /** Show a picture (an <img>, ImageBitmap or canvas); resizes every layer when the size changes. */
  showPicture(picture) {
    const { width, height } = picture;
    if (width !== this.width || height !== this.height) {
      for (const canvas of [this.image, this.mask, this.marks]) {
        canvas.width = width;
        canvas.height = height;
      }
      this.width = width;
      this.height = height;
      this.fit();
    }
    this.image.getContext("2d").drawImage(picture, 0, 0);
    for (const canvas of [this.image, this.mask, this.marks]) canvas.classList.add("ready");
  }

  clearMasks() {
    this.mask.getContext("2d").clearRect(0, 0, this.width, this.height);
  }

  /** Draw tinted mask canvases (see overlay.tintedMask) in order. */
  drawMasks(canvases) {
    const ctx = this.mask.getContext("2d");
    ctx.clearRect(0, 0, this.width, this.height);
    for (const canvas of canvases) ctx.drawImage(canvas, 0, 0);
  }

  /** Clicked points ({x, y, label}) and an optional box, on the marks layer; returns its context for more. */
  drawMarks(points = [], box = null) {
    const ctx = this.marks.getContext("2d");
    ctx.clearRect(0, 0, this.width, this.height);
    const radius = 6 * pixelsPerScreenPixel(this.marks);
    for (const { x, y, label } of points) {
      ctx.beginPath();
      ctx.arc(x, y, radius, 0, 2 * Math.PI);
      ctx.fillStyle = label ? "#16a34a" : "#dc2626";
      ctx.fill();
      ctx.lineWidth = radius / 3;
      ctx.strokeStyle = "#fff";
      ctx.stroke();
    }
    if (box) {
      ctx.save();
      ctx.setLineDash([radius, radius / 2]);
      ctx.lineWidth = radius / 3;
      ctx.strokeStyle = "#fff";
      ctx.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]);
      ctx.restore();
    }
    return ctx;
  }

  toImage(event) {
    const rect = this.marks.getBoundingClientRect();
    const x = ((event.clientX - rect.left) / rect.width) * this.width;
    const y = ((event.clientY - rect.top) / rect.height) * this.height;
    return [Math.min(Math.max(x, 0), this.width - 1), Math.min(Math.max(y, 0), this.height - 1)];
  }

  down(event) {
    if (!this.width) return;
    this.marks.setPointerCapture(event.pointerId);
    const negative = event.shiftKey || event.button === 2;
    this.press = { x: event.clientX, y: event.clientY, at: this.toImage(event), label: negative ? 0 : 1 };
  }

  move(event) {
    if (!this.press || !this.dragged(event)) return;
    const [x, y] = this.toImage(event);
    const [x0, y0] = this.press.at;
    this.rubber = [Math.min(x0, x), Math.min(y0, y), Math.max(x0, x), Math.max(y0, y)];
    this.drawMarks([], this.rubber);
  }

  up(event) {
    const press = this.press;
    this.press = null;
    if (!press) return;
    if (this.dragged(event, press)) {
      const [x, y] = this.toImage(event);
      const [x0, y0] = press.at;
      this.onBox([Math.min(x0, x), Math.min(y0, y), Math.max(x0, x), Math.max(y0, y)]);
    } else {
      this.onPoint(Math.round(press.at[0]), Math.round(press.at[1]), press.label);
    }
  }

  dragged(event, press = this.press) {
    return Math.hypot(event.clientX - press.x, event.clientY - press.y) >= DRAG_PX;
  }

  /** A pixel box [x0, y0, x1, y1] as the wire's normalised [cx, cy, w, h]. */
  normalisedBox([x0, y0, x1, y1]) {
    const [w, h] = [this.width, this.height];
    return [(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h];
  }
}
