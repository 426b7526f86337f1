// Talking to the service: fetch wrappers that turn every non-2xx answer into an ApiError and, unless told to
// stay quiet, show the service's own message as a toast. Nothing here knows about the page's modes.

export class ApiError extends Error {
  constructor(status, path, detail, retryAfter = null) {
    const retry = retryAfter ? ` (retry after ${retryAfter} s)` : "";
    super(status ? `${status} ${path}: ${detail}${retry}` : `${path}: ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}

export function toast(message, kind = "error") {
  const box = document.createElement("div");
  box.className = `toast ${kind}`;
  box.textContent = message;
  box.title = "click to close";
  box.addEventListener("click", () => box.remove());
  document.getElementById("toasts").append(box);
  setTimeout(() => box.remove(), kind === "error" ? 10000 : 5000);
}

/** Show what went wrong, unless it was the user aborting a request. */
export function report(error) {
  if (error.name !== "AbortError") toast(error.message);
}

/**
 * fetch() that throws ApiError on a network failure or a non-2xx answer (toasted unless `quiet`).
 * `json` sends a JSON body, `form` a FormData; either makes it a POST.
 */
export async function request(path, { json, form, quiet = false, signal } = {}) {
  const init = { method: "GET", signal, headers: {} };
  if (json !== undefined) {
    Object.assign(init, { method: "POST", body: JSON.stringify(json) });
    init.headers["Content-Type"] = "application/json";
  } else if (form !== undefined) {
    Object.assign(init, { method: "POST", body: form });
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    const failure = new ApiError(0, path, `the service cannot be reached (${error.message})`);
    if (!quiet) report(failure);
    throw failure;
  }
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const body = await response.json();
      detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch {
      /* not JSON: keep the status text */
    }
    const failure = new ApiError(response.status, path, detail, response.headers.get("Retry-After"));
    if (!quiet) report(failure);
    throw failure;
  }
  return response;
}

export async function postJSON(path, body, options = {}) {
  return (await request(path, { ...options, json: body })).json();
}

/** Yield the parsed lines of an NDJSON response body as they arrive. */
export async function* ndjson(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline).trim();
      buffer = buffer.slice(newline + 1);
      if (line) yield JSON.parse(line);
    }
  }
  if (buffer.trim()) yield JSON.parse(buffer);
}
