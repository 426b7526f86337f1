// Video mode's object list: per object its colour, id, score on the frame on screen, an opacity slider, hide /
// show and remove. A click on the row chooses the object that clicks on the frame go to.

import { colour } from "./overlay.js";

/**
 * The rows for ``ids``. ``state``: {result (the frame on screen's answer or undefined), target, hidden (Set),
 * opacity (Map id -> 0..1)}; ``on``: {select(id), opacity(id, value), hide(id), remove(id)}.
 */
export function objectItems(ids, { result, target, hidden, opacity }, on) {
  return ids.map((id) => {
    const item = document.createElement("li");
    item.className = `${target === id ? "selected" : ""} ${hidden.has(id) ? "hidden-mask" : ""}`;
    item.dataset.objId = id;
    item.innerHTML = `<span class="swatch"></span><span class="label"></span><span class="score"></span>
      <input type="range" class="opacity" min="0" max="1" step="0.05" title="opacity of this object's mask">
      <button class="hide" title="hide or show this object's mask"></button>
      <button class="remove" title="remove from the session">×</button>`;
    item.querySelector(".swatch").style.background = colour(id);
    item.querySelector(".label").textContent = `object ${id}`;
    const at = result ? result.object_ids.indexOf(id) : -1;
    item.querySelector(".score").textContent = at >= 0 ? result.scores[at].toFixed(3) : "–";
    item.title = "click to send clicks to this object";
    item.addEventListener("click", () => on.select(id));
    const slider = item.querySelector(".opacity");
    slider.value = opacity.get(id) ?? 1;
    slider.addEventListener("click", (event) => event.stopPropagation());
    slider.addEventListener("input", (event) => on.opacity(id, Number(event.target.value)));
    const hide = item.querySelector(".hide");
    hide.textContent = hidden.has(id) ? "show" : "hide";
    hide.addEventListener("click", (event) => {
      event.stopPropagation();
      on.hide(id);
    });
    item.querySelector(".remove").addEventListener("click", (event) => {
      event.stopPropagation();
      on.remove(id);
    });
    return item;
  });
}
