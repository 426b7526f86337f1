// Sessions: the page keeps its own tracking session alive (POST /track/heartbeat, again after a third of the
// time the service says is left, at most every 30 s; the service closes a session whose page stops,
// SAM_SESSION_HEARTBEAT_S, default 120 s), closes it when the page
// goes away (sendBeacon to /track/stop), and lists every open session (GET /track/sessions), its own and
// others', with their age, so that a person at the session cap can close one, or open one left by a closed tab.

import { postJSON, request, toast } from "./api.js";

const $ = (id) => document.getElementById(id);
const HEARTBEAT_MS = [1000, 30000]; // bounds of the wait between heartbeats
const LIST_MS = 10000;

let own = null; // the id of this page's session
let beat = null;
let hooks = { onLost: () => {}, onAdopt: () => {} };

function age(seconds) {
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

async function heartbeat() {
  if (!own) return;
  const id = own;
  try {
    const { expires_in } = await postJSON("/track/heartbeat", { session_id: id }, { quiet: true });
    if (own !== id) return;
    const wait = Math.min(Math.max((1000 * expires_in) / 3, HEARTBEAT_MS[0]), HEARTBEAT_MS[1]);
    clearTimeout(beat);
    beat = setTimeout(heartbeat, wait);
  } catch (error) {
    if (own !== id) return;
    if (error.status !== 404) beat = setTimeout(heartbeat, HEARTBEAT_MS[0] * 5); // unreachable: try again
    if (error.status === 404) {
      const lost = own;
      setOwnSession(null);
      toast(`Session ${lost} was closed by the service (idle or stopped elsewhere)`, "info");
      hooks.onLost(lost);
    }
  }
}

/** The page's session changed (null: none); starts or stops the heartbeat. */
export function setOwnSession(sessionId) {
  own = sessionId;
  clearTimeout(beat);
  beat = null;
  if (sessionId) heartbeat();
  refreshSessions();
}

export async function refreshSessions() {
  let listing;
  try {
    listing = await (await request("/track/sessions", { quiet: true })).json();
  } catch {
    return;
  }
  $("session-count").textContent = `${listing.sessions.length} of ${listing.max_sessions} open`;
  $("session-list").replaceChildren(
    ...listing.sessions.map((s) => {
      const item = document.createElement("li");
      item.className = s.session_id === own ? "own" : "";
      item.dataset.sessionId = s.session_id;
      const name = s.video_path.split("/").pop();
      const what = document.createElement("span");
      what.className = "what";
      what.textContent = `${s.session_id === own ? "this page · " : ""}${name} · ${age(s.age_s)} old · ${
        s.busy ? "busy" : `idle ${age(s.idle_s)}`
      } · ${s.frames_computed}/${s.num_frames} frames`;
      what.title = `${s.session_id}\n${s.video_path}\ncloses in ${age(s.expires_in)} unless used`;
      item.append(what);
      if (s.session_id !== own) {
        const open = document.createElement("button");
        open.textContent = "Open";
        open.className = "adopt";
        open.title = "Continue this session in this page (e.g. one left by a closed tab)";
        open.addEventListener("click", () => hooks.onAdopt(s));
        item.append(open);
      }
      const close = document.createElement("button");
      close.textContent = "Close";
      close.className = "close";
      close.title = "Stop this session and free its memory";
      close.addEventListener("click", async () => {
        await postJSON("/track/stop", { session_id: s.session_id }).catch(() => {});
        if (s.session_id === own) hooks.onLost(own);
        refreshSessions();
      });
      item.append(close);
      return item;
    }),
  );
}

/** onLost(id): the page's session is gone; onAdopt(info): open a listed session in this page. */
export function setupSessions(callbacks) {
  hooks = { ...hooks, ...callbacks };
  setInterval(() => {
    if (!$("video-mode").hidden) refreshSessions();
  }, LIST_MS);
  // Free the session's memory when the page goes away (a crash or a killed browser: the heartbeat stops instead).
  window.addEventListener("pagehide", () => {
    if (own) navigator.sendBeacon("/track/stop", new Blob([JSON.stringify({ session_id: own })], { type: "application/json" }));
  });
  refreshSessions();
}
