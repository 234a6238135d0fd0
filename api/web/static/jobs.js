// Following a job to its end, and its progress in words.

import { getJson } from "./api.js";

// Words for a progress event's detail, whatever the job kind reports (stage, frame, step, kimg).
export function progressWords(detail) {
  const parts = [];
  if (detail.stage) parts.push(detail.stage);
  if (detail.phase) parts.push(detail.phase);
  if (detail.frames) parts.push(`frame ${detail.frame ?? 0} of ${detail.frames}`);
  if (detail.steps) parts.push(`step ${detail.step ?? 0} of ${detail.steps}`);
  if (detail.cells) parts.push(`${detail.cells} cells`);
  if (detail.total_kimg) parts.push(`${Number(detail.kimg).toFixed(2)} of ${detail.total_kimg} kimg`);
  if (typeof detail.distance === "number") parts.push(`distance ${detail.distance.toFixed(3)}`);
  if (detail.files_total) parts.push(`${detail.files_done} of ${detail.files_total} files`);
  return parts.join(", ");
}

const TERMINAL = ["succeeded", "failed", "canceled"];

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Resolves with the job once it is terminal; `onProgress(fraction, words, job)` as it moves. Only
// training jobs send progress as events; every job's row carries `progress` and `progress_detail`, so
// the row is what is read here (twice a second, as cheap as a keep-alive).
export async function waitForJob(jobId, onProgress, signal) {
  for (;;) {
    const job = await getJson(`/v1/jobs/${jobId}`, { signal });
    const words = job.state === "running" ? progressWords(job.progress_detail || {}) : job.state;
    onProgress(job.progress, words || job.state, job);
    if (TERMINAL.includes(job.state)) return job;
    await sleep(500);
    if (signal?.aborted) throw signal.reason;
  }
}
