// The video timeline: a strip under the frame slider that shows which frames have results (green), which are
// stale because a prompt changed since they were computed (amber), and the frame on screen; plus the
// keyboard shortcuts of video mode (listed on the page under "Keyboard shortcuts").

const COMPUTED = "#16a34a";
const STALE = "#f59e0b";
const NONE = "#d1d5db";

/** Paint the strip: one column per frame (several frames share a pixel on long videos; stale wins). */
export function drawTimeline(canvas, numFrames, computed, stale, current) {
  const width = Math.max(1, Math.round(canvas.clientWidth || 300));
  if (canvas.width !== width) canvas.width = width;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = NONE;
  ctx.fillRect(0, 0, width, canvas.height);
  if (!numFrames) return;
  const x = (t) => Math.floor((t / numFrames) * width);
  const w = Math.max(1, Math.ceil(width / numFrames));
  ctx.fillStyle = COMPUTED;
  for (const t of computed) if (!stale.has(t)) ctx.fillRect(x(t), 0, w, canvas.height);
  ctx.fillStyle = STALE;
  for (const t of stale) ctx.fillRect(x(t), 0, w, canvas.height);
  ctx.fillStyle = "#111827";
  ctx.fillRect(x(current) + Math.floor(w / 2) - 1, 0, 2, canvas.height);
}

/** The nearest computed frame after (step 1) or before (step -1) ``from``; null when there is none. */
export function nextComputed(computed, from, step) {
  let best = null;
  for (const t of computed) {
    if (step > 0 ? t > from && (best === null || t < best) : t < from && (best === null || t > best)) best = t;
  }
  return best;
}

/** Video mode's keys; ignored while typing in a field, or when video mode is not on screen. */
export function setupShortcuts(isActive, actions) {
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (!isActive() || target.closest?.("input:not([type=range]), textarea, select")) return;
    const key = event.key;
    let action = null;
    if ((event.ctrlKey || event.metaKey) && key.toLowerCase() === "z") action = actions.undo;
    else if (event.ctrlKey || event.metaKey || event.altKey) return;
    else if (key === "ArrowRight") action = event.shiftKey ? actions.nextComputed : actions.nextFrame;
    else if (key === "ArrowLeft") action = event.shiftKey ? actions.prevComputed : actions.prevFrame;
    else if (key === "Home") action = actions.firstFrame;
    else if (key === "End") action = actions.lastFrame;
    else if (key === " ") action = actions.play;
    else if (key === "Escape") action = actions.cancel;
    else if (key.toLowerCase() === "p") action = actions.propagate;
    else if (key.toLowerCase() === "n") action = actions.newObject;
    else if (key.toLowerCase() === "h") action = actions.hideAll;
    if (!action) return;
    event.preventDefault();
    action();
  });
}
