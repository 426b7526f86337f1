// Video mode: pick a video under the media roots (GET /media/videos) or upload one (video_files.js), open a
// session (/track/start), scrub its frames (GET /media/frame) on a timeline that shows computed and stale
// frames (timeline.js), prompt on a frame (/track/prompt), undo the last click or box, propagate with live
// progress (/track/propagate, streamed as NDJSON), cancel (/track/cancel), play the result, hide objects or
// change their opacity, remove objects (/track/remove_object, then /track/frames), export the masks
// (video_files.js) and stop the session (/track/stop). sessions.js keeps the session alive and lists others.

import { postJSON, report, request, ndjson, toast } from "./api.js";
import { setupEverything, stagePicture } from "./everything.js";
import { b64ToBlob, colour, drawBox, tintedMask } from "./overlay.js";
import { refreshSessions, setOwnSession, setupSessions } from "./sessions.js";
import { Stage } from "./stage.js";
import { drawTimeline, nextComputed, setupShortcuts } from "./timeline.js";
import { exportMasks, uploadFootage } from "./video_files.js";
import { objectItems } from "./video_objects.js";

const $ = (id) => document.getElementById(id);
const FRAME_CACHE = 240; // decoded frame pictures kept in the page
const MASK_ALPHA = 0.55;

const v = {
  session: null, // the /track/start answer plus video_path
  frame: 0, // the frame on screen
  results: new Map(), // frame_idx -> frame object (object_ids, scores, masks, boxes)
  stale: new Set(), // frames computed before the latest prompt changed the objects
  objects: new Set(), // object ids seen in any result
  target: null, // object id that clicks go to
  clicks: new Map(), // `${obj}/${frame}` -> [{x, y, label}]: the service replaces an object's points per frame
  boxes: new Map(), // frame -> [x0, y0, x1, y1] of the box prompted there (drawn until the next concept)
  history: [], // what undo takes back: {kind: "click", obj, frame} or {kind: "concept"}
  hidden: new Set(), // object ids whose masks are not drawn
  allHidden: false,
  opacity: new Map(), // object id -> 0..1 (default 1)
  pictures: new Map(), // frame_idx -> Promise<HTMLImageElement>
  propagation: null, // AbortController of the running propagation
  playing: false,
  shown: 0, // numbers the redraws, so that a slow one never paints over a newer one
};

const stage = new Stage($("video-stage"), { onPoint: clickPoint, onBox: promptBox });

async function listVideos(select = null) {
  try {
    const listing = await (await request("/media/videos")).json();
    const list = $("video-select");
    list.replaceChildren(
      ...listing.items.map((item) => {
        const option = new Option(`${item.name}${item.kind === "frames" ? "/ (frames)" : ""}`, item.path);
        option.title = item.path;
        return option;
      }),
    );
    if (!listing.items.length) list.append(new Option(`nothing under ${listing.roots.join(", ")}`, ""));
    if (select) list.value = select;
    if (listing.truncated) toast("The media roots hold more than the list shows", "info");
  } catch (error) {
    report(error);
  }
}

function clearResults() {
  Object.assign(v, { results: new Map(), stale: new Set(), objects: new Set(), clicks: new Map(), boxes: new Map() });
  Object.assign(v, { history: [], target: null, hidden: new Set(), opacity: new Map() });
  $("removal-note").hidden = true;
  setProgress(0, 0);
}

/** Show an opened (or adopted) session: ``session`` has session_id, num_frames, width, height, fps, video_path. */
async function useSession(session) {
  v.session = session;
  clearResults();
  v.frame = 0;
  const { num_frames, width, height, fps } = session;
  $("video-info").textContent = `${num_frames} frames, ${width}×${height}${fps ? `, ${fps.toFixed(1)} fps` : ""} · session ${session.session_id}`;
  $("frame-slider").max = num_frames - 1;
  $("frame-slider").value = 0;
  setEnabled(true);
  setOwnSession(session.session_id);
  await show(0);
}

async function openVideo(path = $("video-select").value) {
  if (!path) return;
  await stopSession();
  try {
    const session = await postJSON("/track/start", { video_path: path });
    await useSession({ ...session, video_path: path });
  } catch {
    refreshSessions(); // at the session cap: the list shows which ones to close
  }
}

/** Open a session another page (or a closed tab) left, with the results it has stored. */
async function adoptSession(info) {
  if (v.session?.session_id === info.session_id) return;
  await stopSession();
  await useSession({ ...info });
  if (await syncFrames()) {
    v.objects = new Set([...v.results.values()].flatMap((f) => f.object_ids));
    await show(v.frame);
  }
}

function setEnabled(on) {
  for (const id of ["frame-slider", "play", "video-stop", "prev-frame", "next-frame", "prev-computed", "next-computed"]) {
    $(id).disabled = !on;
  }
}

/** Forget the page's session (``stop``: and close it on the service). */
async function stopSession(stop = true) {
  if (!v.session) return;
  v.propagation?.abort();
  const { session_id } = v.session;
  v.session = null;
  clearResults();
  Object.assign(v, { pictures: new Map(), playing: false });
  setEnabled(false);
  $("video-info").textContent = "No session.";
  setOwnSession(null);
  renderObjects();
  paintTimeline();
  if (stop) await postJSON("/track/stop", { session_id }).catch(() => {});
  refreshSessions();
}

function picture(index) {
  if (!v.pictures.has(index)) {
    const url = `/media/frame?video_path=${encodeURIComponent(v.session.video_path)}&frame_idx=${index}`;
    const image = new Image();
    image.src = url;
    v.pictures.set(index, image.decode().then(() => image));
    if (v.pictures.size > FRAME_CACHE) v.pictures.delete(v.pictures.keys().next().value);
  }
  return v.pictures.get(index);
}

function paintTimeline() {
  drawTimeline($("timeline"), v.session?.num_frames || 0, v.results.keys(), v.stale, v.frame);
}

/** Put frame ``index`` on screen with the masks and boxes the service returned for it. */
async function show(index) {
  if (!v.session) return;
  const ticket = ++v.shown;
  v.frame = index;
  $("frame-slider").value = index;
  $("frame-label").textContent = `${index + 1} / ${v.session.num_frames}${v.stale.has(index) ? " (stale)" : ""}`;
  paintTimeline();
  let image;
  try {
    image = await picture(index);
  } catch {
    v.pictures.delete(index);
    // the <img> hides the service's message: ask again to show it
    await request(`/media/frame?video_path=${encodeURIComponent(v.session.video_path)}&frame_idx=${index}`).catch(() => {});
    return;
  }
  const result = v.results.get(index);
  const visible = (id) => !v.allHidden && !v.hidden.has(id);
  const masks = result
    ? await Promise.all(
        result.masks.map((m, i) => {
          const id = result.object_ids[i];
          return visible(id) ? tintedMask(b64ToBlob(m), colour(id), MASK_ALPHA * (v.opacity.get(id) ?? 1)) : null;
        }),
      )
    : [];
  if (ticket !== v.shown) return;
  stage.showPicture(image);
  stage.drawMasks(masks.filter(Boolean).map((m) => m.canvas));
  const ctx = stage.drawMarks(v.clicks.get(`${v.target}/${index}`) || [], v.boxes.get(index) || null);
  const taken = [];
  result?.boxes.forEach((box, i) => {
    const id = result.object_ids[i];
    if (visible(id)) drawBox(ctx, box, colour(id), `${id}: ${result.scores[i].toFixed(2)}`, false, taken);
  });
  renderObjects();
}

function store(frame) {
  const { frame_idx, object_ids, scores, masks, boxes } = frame;
  v.results.set(frame_idx, { frame_idx, object_ids, scores, masks, boxes });
  v.stale.delete(frame_idx);
  object_ids.forEach((id) => v.objects.add(id));
}

/** Every other computed frame predates this prompt: marked stale until a propagation recomputes it. */
function markStale(promptedFrame) {
  for (const t of v.results.keys()) if (t !== promptedFrame) v.stale.add(t);
  if (!v.stale.size) return;
  setProgress(0, 0); // the last propagation's 100% no longer holds
  $("progress-text").textContent = `${v.stale.size} frames stale since the last prompt: propagate again`;
}

async function prompt(body) {
  if (!v.session) {
    report(new Error("Open a video first"));
    return false;
  }
  let ok = true;
  try {
    store(await postJSON("/track/prompt", { session_id: v.session.session_id, frame_idx: v.frame, ...body }));
    if (!body.text && !body.boxes) markStale(v.frame);
  } catch {
    ok = false; // toasted
  }
  await show(v.frame);
  return ok;
}

function sendClicks(obj, frame) {
  const clicks = v.clicks.get(`${obj}/${frame}`) || [];
  return prompt({ obj_id: obj, points: clicks.map((c) => [c.x, c.y]), labels: clicks.map((c) => c.label) });
}

async function clickPoint(x, y, label) {
  if (v.target === null) v.target = Math.max(0, ...v.objects) + 1;
  v.objects.add(v.target); // listed even when the service finds nothing for it on this frame
  const key = `${v.target}/${v.frame}`;
  v.clicks.set(key, [...(v.clicks.get(key) || []), { x, y, label }]);
  const entry = { kind: "click", obj: v.target, frame: v.frame };
  if (await sendClicks(entry.obj, entry.frame)) v.history.push(entry);
  else v.clicks.get(key).pop();
}

/** A text or box prompt is a new concept: the service starts the video over, so the page does too. */
async function newConcept(body, box = null) {
  clearResults();
  if (box) v.boxes.set(v.frame, box);
  if (await prompt(body)) v.history.push({ kind: "concept" });
}

function promptBox(box) {
  newConcept({ boxes: stage.normalisedBox(box) }, box);
}

/** Take back the last click (the object's other clicks on that frame are sent again) or box/text prompt. */
async function undo() {
  const last = v.history.pop();
  if (!last || !v.session) {
    toast("Nothing to undo", "info");
    return;
  }
  if (last.kind === "concept") {
    await clearAll(); // a concept replaced every object: there is nothing earlier to go back to
    return;
  }
  const key = `${last.obj}/${last.frame}`;
  v.clicks.get(key)?.pop();
  if (v.clicks.get(key)?.length) {
    v.frame = last.frame;
    await sendClicks(last.obj, last.frame);
    return;
  }
  v.clicks.delete(key);
  const elsewhere = [...v.clicks.keys()].some((k) => k.startsWith(`${last.obj}/`));
  if (!elsewhere) await removeObject(last.obj); // its only click: the object goes
  else toast(`Object ${last.obj} keeps its clicks on other frames`, "info");
}

async function clearAll() {
  if (!v.session) return;
  try {
    await postJSON("/track/reset", { session_id: v.session.session_id });
  } catch {
    return; // toasted
  }
  clearResults();
  await show(v.frame);
}

function setProgress(done, total) {
  $("progress").max = Math.max(total, 1);
  $("progress").value = done;
  $("progress-text").textContent = total ? `${done} / ${total} frames (${Math.round((100 * done) / total)}%)` : "";
}

function showRemovals(removed) {
  const note = $("removal-note");
  note.hidden = !removed?.length;
  note.textContent = (removed || []).map((r) => `${r.detail[0].toUpperCase()}${r.detail.slice(1)}.`).join(" ");
  // a removed object has no mask on any frame any more: it leaves the list too
  for (const r of removed || []) {
    if (![...v.results.values()].some((f) => f.object_ids.includes(r.obj_id))) v.objects.delete(r.obj_id);
  }
}

async function propagate() {
  if (!v.session || v.propagation) return;
  const body = { session_id: v.session.session_id, direction: $("direction").value, start_frame: v.frame, stream: true };
  const abort = new AbortController();
  v.propagation = abort;
  setRunning(true);
  let total = 0;
  try {
    const response = await request("/track/propagate", { json: body, signal: abort.signal });
    for await (const event of ndjson(response)) {
      if (event.event === "start") setProgress(0, (total = event.total));
      else if (event.event === "frame") {
        store(event);
        setProgress(event.done, event.total);
        if (!v.playing) show(event.frame_idx);
      } else if (event.event === "end") {
        setProgress(event.num_frames_processed, total);
        showRemovals(event.removed_objects);
        if (event.cancelled) toast(`Cancelled after ${event.num_frames_processed} frames`, "info");
        if (v.stale.size) $("progress-text").textContent += ` · ${v.stale.size} frames still stale`;
      } else if (event.event === "error") {
        toast(`${event.status} /track/propagate: ${event.detail}`);
      }
    }
    await show(v.frame);
  } catch (error) {
    if (error.name === "AbortError") toast("Propagation stopped", "info");
  } finally {
    if (v.propagation === abort) v.propagation = null;
    setRunning(false);
    refreshSessions();
  }
}

function setRunning(running) {
  $("propagate").disabled = running;
  $("cancel").disabled = !running;
  if (!running) $("spinner").hidden = true;
}

async function cancel() {
  if (!v.session || !v.propagation) return;
  const answer = await postJSON("/track/cancel", { session_id: v.session.session_id }, { quiet: true }).catch(() => null);
  // Nothing to cancel yet (the propagation has not started there): drop the request, which stops it too.
  if (!answer?.cancelled) v.propagation?.abort();
}

/** Replace the page's results with what the service has stored (after it changed them). */
async function syncFrames() {
  try {
    const { frames } = await postJSON("/track/frames", { session_id: v.session.session_id }, { quiet: true });
    const stale = v.stale;
    v.results = new Map();
    frames.forEach(store);
    v.stale = new Set([...stale].filter((t) => v.results.has(t)));
    return true;
  } catch {
    return false;
  }
}

async function removeObject(id) {
  try {
    await postJSON("/track/remove_object", { session_id: v.session.session_id, obj_id: id });
  } catch {
    return;
  }
  if (v.target === id) v.target = null;
  for (const key of [...v.clicks.keys()]) if (key.startsWith(`${id}/`)) v.clicks.delete(key);
  v.history = v.history.filter((h) => h.obj !== id);
  await syncFrames();
  v.objects = new Set([...v.results.values()].flatMap((f) => f.object_ids));
  await show(v.frame);
}

function renderObjects() {
  $("video-hide-all").textContent = v.allHidden ? "Show all" : "Hide all";
  const state = { result: v.results.get(v.frame), target: v.target, hidden: v.hidden, opacity: v.opacity };
  $("video-objects").replaceChildren(
    ...objectItems([...v.objects].sort((a, b) => a - b), state, {
      select: (id) => {
        v.target = v.target === id ? null : id;
        show(v.frame);
      },
      opacity: (id, value) => {
        v.opacity.set(id, value);
        show(v.frame);
      },
      hide: (id) => {
        if (v.hidden.has(id)) v.hidden.delete(id);
        else v.hidden.add(id);
        show(v.frame);
      },
      remove: removeObject,
    }),
  );
}

async function play() {
  if (v.playing) {
    v.playing = false;
    return;
  }
  if (!v.session) return;
  v.playing = true;
  $("play").textContent = "Pause";
  const delay = 1000 / Math.min(v.session.fps || 10, 30);
  let index = v.frame >= v.session.num_frames - 1 ? 0 : v.frame;
  while (v.playing && v.session && index < v.session.num_frames) {
    const started = performance.now();
    await show(index++);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, delay - (performance.now() - started))));
  }
  v.playing = false;
  $("play").textContent = "Play";
}

function step(delta) {
  if (v.session) show(Math.min(Math.max(v.frame + delta, 0), v.session.num_frames - 1));
}

function jumpComputed(direction) {
  if (!v.session) return;
  const target = nextComputed(v.results.keys(), v.frame, direction);
  if (target === null) toast(`No computed frame ${direction > 0 ? "after" : "before"} this one`, "info");
  else show(target);
}

function newObject() {
  if (!v.session) return;
  v.target = Math.max(0, ...v.objects) + 1;
  v.objects.add(v.target);
  renderObjects();
}

function toggleAll() {
  v.allHidden = !v.allHidden;
  show(v.frame);
}

async function upload(event) {
  const file = event.target.files[0];
  event.target.value = "";
  if (!file) return;
  const answer = await uploadFootage(file);
  if (!answer) return;
  await listVideos(answer.video_path);
  await openVideo(answer.video_path);
}

async function exportAs(event) {
  if (!v.session) {
    report(new Error("Open a video first"));
    return;
  }
  const name = await exportMasks(v.session.session_id, event.currentTarget.dataset.format);
  if (name) toast(`Saved ${name}`, "info");
}

export function setupVideoMode() {
  $("video-refresh").addEventListener("click", () => listVideos());
  $("video-open").addEventListener("click", () => openVideo());
  $("video-stop").addEventListener("click", () => stopSession());
  $("video-upload").addEventListener("change", upload);
  $("frame-slider").addEventListener("input", (event) => show(Number(event.target.value)));
  $("play").addEventListener("click", play);
  $("prev-frame").addEventListener("click", () => step(-1));
  $("next-frame").addEventListener("click", () => step(1));
  $("prev-computed").addEventListener("click", () => jumpComputed(-1));
  $("next-computed").addEventListener("click", () => jumpComputed(1));
  $("video-text-form").addEventListener("submit", (event) => {
    event.preventDefault();
    newConcept({ text: $("video-text").value });
  });
  $("video-new-object").addEventListener("click", newObject);
  $("video-undo").addEventListener("click", undo);
  $("video-reset").addEventListener("click", clearAll);
  $("propagate").addEventListener("click", propagate);
  $("cancel").addEventListener("click", cancel);
  $("video-hide-all").addEventListener("click", toggleAll);
  $("video-opacity").addEventListener("input", (event) => {
    $("video-stage").querySelector(".layer-mask").style.opacity = event.target.value;
  });
  for (const id of ["export-png", "export-rle", "export-matte"]) $(id).addEventListener("click", exportAs);
  new ResizeObserver(paintTimeline).observe($("timeline"));
  setupShortcuts(() => !$("video-mode").hidden, {
    nextFrame: () => step(1),
    prevFrame: () => step(-1),
    nextComputed: () => jumpComputed(1),
    prevComputed: () => jumpComputed(-1),
    firstFrame: () => v.session && show(0),
    lastFrame: () => v.session && show(v.session.num_frames - 1),
    play,
    cancel,
    propagate,
    undo,
    newObject,
    hideAll: toggleAll,
  });
  setupSessions({
    onLost: () => stopSession(false),
    onAdopt: adoptSession,
  });
  setupEverything({
    button: $("video-everything"),
    stage,
    segment: async (fields) => {
      if (!v.session) throw new Error("Open a video first");
      const form = new FormData();
      form.append("image", await stagePicture(stage), `frame-${v.frame}.png`);
      for (const [key, value] of Object.entries(fields)) form.append(key, value);
      return request("/segment/everything", { form, quiet: true });
    },
    // the picked region becomes a new tracked object, prompted with the click that made its mask
    onPick: (region) => {
      v.target = null;
      clickPoint(Math.round(region.point[0]), Math.round(region.point[1]), 1);
    },
  });
  listVideos();
}
