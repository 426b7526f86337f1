// Video mode: pick a video under the media roots (GET /media/videos), open a session (/track/start), scrub its
// frames (GET /media/frame), prompt on a frame (/track/prompt), propagate with live progress (/track/propagate,
// streamed as NDJSON where the service supports it), cancel (/track/cancel), play the result, remove objects
// (/track/remove_object, then /track/frames for what the service kept) and stop the session (/track/stop).

import { postJSON, report, request, ndjson, toast } from "./api.js";
import { setupEverything, stagePicture } from "./everything.js";
import { b64ToBlob, colour, drawBox, tintedMask } from "./overlay.js";
import { Stage } from "./stage.js";

const $ = (id) => document.getElementById(id);
const FRAME_CACHE = 240; // decoded frame pictures kept in the page

const v = {
  session: null, // the /track/start answer plus video_path
  frame: 0, // the frame on screen
  results: new Map(), // frame_idx -> frame object (object_ids, scores, masks, boxes)
  objects: new Set(), // object ids seen in any result
  target: null, // object id that clicks go to
  clicks: new Map(), // `${obj}/${frame}` -> [{x, y, label}]: the service replaces an object's points per frame
  pictures: new Map(), // frame_idx -> Promise<HTMLImageElement>
  propagation: null, // AbortController of the running propagation
  playing: false,
  shown: 0, // numbers the redraws, so that a slow one never paints over a newer one
};

const stage = new Stage($("video-stage"), { onPoint: clickPoint, onBox: promptBox });

async function listVideos() {
  try {
    const listing = await (await request("/media/videos")).json();
    const select = $("video-select");
    select.replaceChildren(
      ...listing.items.map((item) => {
        const option = new Option(`${item.name}${item.kind === "frames" ? "/ (frames)" : ""}`, item.path);
        option.title = item.path;
        return option;
      }),
    );
    if (!listing.items.length) select.append(new Option(`nothing under ${listing.roots.join(", ")}`, ""));
    if (listing.truncated) toast("The media roots hold more than the list shows", "info");
  } catch (error) {
    report(error);
  }
}

async function openVideo() {
  const path = $("video-select").value;
  if (!path) return;
  await stopSession();
  try {
    const session = await postJSON("/track/start", { video_path: path });
    v.session = { ...session, video_path: path };
  } catch {
    return; // toasted
  }
  Object.assign(v, { frame: 0, target: null });
  const { num_frames, width, height, fps } = v.session;
  $("video-info").textContent = `${num_frames} frames, ${width}×${height}${fps ? `, ${fps.toFixed(1)} fps` : ""} · session ${v.session.session_id}`;
  $("frame-slider").max = num_frames - 1;
  $("frame-slider").value = 0;
  for (const id of ["frame-slider", "play", "video-stop"]) $(id).disabled = false;
  setProgress(0, 0);
  await show(0);
}

async function stopSession() {
  if (!v.session) return;
  v.propagation?.abort();
  const { session_id } = v.session;
  v.session = null;
  Object.assign(v, { results: new Map(), objects: new Set(), clicks: new Map(), pictures: new Map(), playing: false });
  for (const id of ["frame-slider", "play", "video-stop"]) $(id).disabled = true;
  $("video-info").textContent = "No session.";
  renderObjects();
  await postJSON("/track/stop", { session_id }).catch(() => {});
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

/** Put frame ``index`` on screen with the masks and boxes the service returned for it. */
async function show(index) {
  if (!v.session) return;
  const ticket = ++v.shown;
  v.frame = index;
  $("frame-slider").value = index;
  $("frame-label").textContent = `${index + 1} / ${v.session.num_frames}`;
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
  const masks = result ? await Promise.all(result.masks.map((m, i) => tintedMask(b64ToBlob(m), colour(result.object_ids[i])))) : [];
  if (ticket !== v.shown) return;
  stage.showPicture(image);
  stage.drawMasks(masks.map((m) => m.canvas));
  const ctx = stage.drawMarks(v.clicks.get(`${v.target}/${index}`) || []);
  result?.boxes.forEach((box, i) => {
    const id = result.object_ids[i];
    drawBox(ctx, box, colour(id), `${id}: ${result.scores[i].toFixed(2)}`);
  });
  renderObjects();
}

function store(frame) {
  const { frame_idx, object_ids, scores, masks, boxes } = frame;
  v.results.set(frame_idx, { frame_idx, object_ids, scores, masks, boxes });
  object_ids.forEach((id) => v.objects.add(id));
}

async function prompt(body) {
  if (!v.session) {
    report(new Error("Open a video first"));
    return;
  }
  try {
    store(await postJSON("/track/prompt", { session_id: v.session.session_id, frame_idx: v.frame, ...body }));
  } catch {
    /* toasted */
  }
  await show(v.frame);
}

function clickPoint(x, y, label) {
  if (v.target === null) v.target = Math.max(0, ...v.objects) + 1;
  v.objects.add(v.target); // listed even when the service finds nothing for it on this frame
  const key = `${v.target}/${v.frame}`;
  const clicks = [...(v.clicks.get(key) || []), { x, y, label }];
  v.clicks.set(key, clicks);
  prompt({ obj_id: v.target, points: clicks.map((c) => [c.x, c.y]), labels: clicks.map((c) => c.label) });
}

/** A text or box prompt is a new concept: the service starts the video over, so the page does too. */
function newConcept(body) {
  Object.assign(v, { results: new Map(), objects: new Set(), clicks: new Map(), target: null });
  setProgress(0, 0);
  return prompt(body);
}

function promptBox(box) {
  newConcept({ boxes: stage.normalisedBox(box) });
}

function setProgress(done, total) {
  $("progress").max = Math.max(total, 1);
  $("progress").value = done;
  $("progress-text").textContent = total ? `${done} / ${total} frames (${Math.round((100 * done) / total)}%)` : "";
}

async function propagate() {
  if (!v.session) return;
  const body = { session_id: v.session.session_id, direction: $("direction").value, start_frame: v.frame, stream: true };
  const abort = new AbortController();
  v.propagation = abort;
  setRunning(true);
  let total = 0;
  try {
    let response;
    try {
      response = await request("/track/propagate", { json: body, signal: abort.signal, quiet: true });
    } catch (error) {
      if (error.status !== 422 || !error.detail.includes("stream")) throw error;
      // a service without streamed propagation: the plain call, with a spinner instead of progress
      delete body.stream;
      $("spinner").hidden = false;
      response = await request("/track/propagate", { json: body, signal: abort.signal, quiet: true });
    }
    if ((response.headers.get("Content-Type") || "").includes("ndjson")) {
      for await (const event of ndjson(response)) {
        if (event.event === "start") setProgress(0, (total = event.total));
        else if (event.event === "frame") {
          store(event);
          setProgress(event.done, event.total);
          if (!v.playing) show(event.frame_idx);
        } else if (event.event === "end") {
          setProgress(event.num_frames_processed, total);
          if (event.cancelled) toast(`Cancelled after ${event.num_frames_processed} frames`, "info");
        } else if (event.event === "error") {
          toast(`${event.status} /track/propagate: ${event.detail}`);
        }
      }
    } else {
      const result = await response.json();
      result.frames.forEach(store);
      setProgress(result.num_frames_processed, result.num_frames_processed);
      await show(v.frame);
    }
  } catch (error) {
    if (error.name === "AbortError") toast("Propagation stopped", "info");
    else report(error);
  } finally {
    if (v.propagation === abort) v.propagation = null;
    setRunning(false);
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
  // Nothing to cancel yet (the propagation has not started there) or no /track/cancel: drop the request,
  // which stops the service's propagation too.
  if (!answer?.cancelled) v.propagation?.abort();
}

/** Replace the page's results with what the service has stored (after it changed them). */
async function syncFrames() {
  try {
    const { frames } = await postJSON("/track/frames", { session_id: v.session.session_id }, { quiet: true });
    v.results = new Map();
    frames.forEach(store);
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
  v.objects.delete(id);
  if (v.target === id) v.target = null;
  if (!(await syncFrames())) {
    // no /track/frames: drop the object from the results the page holds
    for (const frame of v.results.values()) {
      const keep = frame.object_ids.map((oid) => oid !== id);
      for (const key of ["object_ids", "scores", "masks", "boxes"]) frame[key] = frame[key].filter((_, i) => keep[i]);
    }
  }
  v.objects = new Set([...v.results.values()].flatMap((f) => f.object_ids));
  await show(v.frame);
}

function renderObjects() {
  const result = v.results.get(v.frame);
  $("video-objects").replaceChildren(
    ...[...v.objects].sort((a, b) => a - b).map((id) => {
      const item = document.createElement("li");
      item.className = v.target === id ? "selected" : "";
      item.innerHTML = `<span class="swatch"></span><span class="label"></span><span class="score"></span><button class="remove" title="remove from the session">×</button>`;
      item.querySelector(".swatch").style.background = colour(id);
      item.querySelector(".label").textContent = `object ${id}`;
      const at = result ? result.object_ids.indexOf(id) : -1;
      item.querySelector(".score").textContent = at >= 0 ? result.scores[at].toFixed(3) : "–";
      item.title = "click to send clicks to this object";
      item.addEventListener("click", () => {
        v.target = v.target === id ? null : id;
        show(v.frame);
      });
      item.querySelector(".remove").addEventListener("click", (event) => {
        event.stopPropagation();
        removeObject(id);
      });
      return item;
    }),
  );
}

async function play() {
  if (v.playing) {
    v.playing = false;
    return;
  }
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

export function setupVideoMode() {
  $("video-refresh").addEventListener("click", listVideos);
  $("video-open").addEventListener("click", openVideo);
  $("video-stop").addEventListener("click", stopSession);
  $("frame-slider").addEventListener("input", (event) => show(Number(event.target.value)));
  $("play").addEventListener("click", play);
  $("video-text-form").addEventListener("submit", (event) => {
    event.preventDefault();
    newConcept({ text: $("video-text").value });
  });
  $("video-new-object").addEventListener("click", () => {
    v.target = Math.max(0, ...v.objects) + 1;
    v.objects.add(v.target);
    renderObjects();
  });
  $("video-reset").addEventListener("click", async () => {
    if (!v.session) return;
    try {
      await postJSON("/track/reset", { session_id: v.session.session_id });
      Object.assign(v, { results: new Map(), objects: new Set(), clicks: new Map(), target: null });
      setProgress(0, 0);
      await show(v.frame);
    } catch {
      /* toasted */
    }
  });
  $("propagate").addEventListener("click", propagate);
  $("cancel").addEventListener("click", cancel);
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
  // Free the session's memory when the page goes away.
  window.addEventListener("pagehide", () => {
    if (v.session) {
      const body = new Blob([JSON.stringify({ session_id: v.session.session_id })], { type: "application/json" });
      navigator.sendBeacon("/track/stop", body);
    }
  });
  listVideos();
}
