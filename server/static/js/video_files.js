// Footage in and results out: upload a video or a zip of frames (POST /media/upload, stored under the media
// roots), and export a session's masks (POST /track/export: PNG zip, COCO-RLE JSON, matte MP4), saved under
// the file name the service gives in Content-Disposition.

import { request } from "./api.js";

const $ = (id) => document.getElementById(id);

/** Upload ``file``; returns the service's answer ({video_path, num_frames, ...}) or null (toasted). */
export async function uploadFootage(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  $("upload-status").textContent = `uploading ${file.name} (${(file.size / 1e6).toFixed(1)} MB)…`;
  try {
    const answer = await (await request("/media/upload", { form })).json();
    $("upload-status").textContent = `uploaded: ${answer.num_frames} frames, ${answer.width}×${answer.height}`;
    return answer;
  } catch {
    $("upload-status").textContent = "upload refused";
    return null;
  }
}

function fileName(response, fallback) {
  const header = response.headers.get("Content-Disposition") || "";
  const match = header.match(/filename="([^"]+)"/);
  return match ? match[1] : fallback;
}

/** Export the session's masks in ``format`` and save the file; returns its name, or null (toasted). */
export async function exportMasks(sessionId, format, options = {}) {
  let response;
  try {
    response = await request("/track/export", { json: { session_id: sessionId, format, ...options } });
  } catch {
    return null;
  }
  const name = fileName(response, `${sessionId}_${format}`);
  const blob = await response.blob();
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  return name;
}
