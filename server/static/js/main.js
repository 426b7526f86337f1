// The page: two modes behind tabs, and the model's state from GET /health in the header.

import { request } from "./api.js";
import { setupImageMode } from "./image_mode.js";
import { setupVideoMode } from "./video_mode.js";

const $ = (id) => document.getElementById(id);

async function pollHealth() {
  let next = 30000;
  const badge = $("health");
  try {
    const health = await (await request("/health", { quiet: true })).json();
    const where = [health.device, health.preset, health.precision].filter(Boolean).join(" · ");
    if (health.model_loaded) {
      badge.className = "health ok";
      badge.textContent = `model loaded · ${where}${health.random_weights ? " · RANDOM WEIGHTS" : ""}`;
    } else if (health.loading) {
      badge.className = "health loading";
      badge.textContent = `model loading… · ${where}`;
      next = 2000;
    } else {
      badge.className = "health bad";
      badge.textContent = `model not loaded: ${health.error || "unknown reason"}`;
      next = 10000;
    }
    badge.title = JSON.stringify(health, null, 2);
    $("dev-banner").hidden = !health.random_weights;
    if (health.note) $("dev-banner").textContent = `${health.note[0].toUpperCase()}${health.note.slice(1)}.`;
  } catch (error) {
    badge.className = "health bad";
    badge.textContent = `service unreachable (${error.message})`;
    next = 5000;
  }
  setTimeout(pollHealth, next);
}

function setupTabs() {
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => {
      for (const other of document.querySelectorAll(".tab")) other.classList.toggle("active", other === tab);
      $("image-mode").hidden = tab.dataset.mode !== "image";
      $("video-mode").hidden = tab.dataset.mode !== "video";
    });
  }
}

setupTabs();
setupImageMode();
setupVideoMode();
pollHealth();
