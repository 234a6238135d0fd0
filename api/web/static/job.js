// A training job, live: GET /v1/training-jobs/{id}, then its Server-Sent Events from the first one (so
// a reload rebuilds the charts): kimg, ETA, sec/kimg, previews, losses, augment p, metrics, checkpoints.

import { followEvents, getBlob, getJson, request } from "./api.js";
import { LineChart } from "./chart.js";
import { errorBox, formatBytes, formatDuration, formatTime, h, root, showBlob } from "./ui.js";

const TERMINAL = ["succeeded", "failed", "canceled"];

export async function mount(container) {
  const jobId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop());
  const errors = errorBox();
  const stat = (label, key) => {
    const value = h("dd", { dataset: { stat: key } }, "-");
    return { node: h("div", {}, h("dt", {}, label), value), value };
  };
  const stats = {
    state: stat("State", "state"),
    kimg: stat("Progress", "kimg"),
    eta: stat("Time left", "eta"),
    speed: stat("sec/kimg", "speed"),
    augment: stat("Augment p", "augment"),
    updates: stat("Updates", "updates"),
  };
  const statList = h("dl", { class: "stats" }, Object.values(stats).map((s) => s.node));
  const bar = h("progress", { class: "job-progress", max: 1, value: 0, "aria-label": "Training progress" });
  const preview = h("img", { class: "preview", alt: "The latest preview grid", hidden: true, dataset: { count: 0 } });
  const strip = h("div", { class: "strip", "aria-label": "Earlier previews", role: "list" });
  const losses = new LineChart("Losses");
  const augment = new LineChart("Augment p");
  const metrics = new LineChart("Metrics");
  const checkpoints = h("tbody");
  const cancel = h("button", { type: "button", class: "danger" }, "Cancel training");
  const sample = h("a", { class: "button", hidden: true, href: "#" }, "Sample from this model");
  const note = h("p", { class: "hint", role: "status" });
  metrics.figure.hidden = true;
  let updates = 0;
  let previews = 0;

  container.append(
    h("p", {}, "Job ", h("code", {}, jobId), " · ", h("a", { href: `${root}/library` }, "all jobs")),
    errors.node,
    statList,
    bar,
    h("div", { class: "actions" }, cancel, sample, note),
    h("h2", {}, "Latest preview"),
    preview,
    strip,
    h("h2", {}, "Charts"),
    h("div", { class: "charts" }, losses.figure, augment.figure, metrics.figure),
    h("h2", {}, "Checkpoints"),
    h("div", { class: "table-wrap" }, h("table", { class: "list" }, h("thead", {}, h("tr", {}, h("th", {}, "kimg"), h("th", {}, "size"), h("th", {}, "metrics"), h("th", {}, "time"))), checkpoints)),
  );

  function setState(state, error) {
    stats.state.value.textContent = state;
    stats.state.value.className = `state state-${state}`;
    cancel.hidden = TERMINAL.includes(state);
    if (error) errors.show(new Error(`The job ${state}: ${error}`));
  }

  function onProgress(data) {
    updates += 1;
    stats.updates.value.textContent = String(updates);
    const kimg = Number(data.kimg);
    if (Number.isFinite(kimg)) stats.kimg.value.textContent = `${kimg.toFixed(3)} / ${data.total_kimg} kimg`;
    if (typeof data.fraction === "number") bar.value = data.fraction;
    if (typeof data.eta_seconds === "number") stats.eta.value.textContent = formatDuration(data.eta_seconds);
    if (data.sec_per_kimg) stats.speed.value.textContent = Number(data.sec_per_kimg).toFixed(1);
    if (typeof data.augment_p === "number") {
      stats.augment.value.textContent = data.augment_p.toFixed(3);
      augment.add("p", kimg, data.augment_p);
      augment.draw();
    }
    for (const [name, value] of Object.entries(data.losses || {})) losses.add(name, kimg, value);
    for (const [name, value] of Object.entries(data.metrics || {})) metrics.add(name, kimg, value);
    if (data.losses) losses.draw();
    if (data.metrics && Object.keys(data.metrics).length) showMetrics();
  }

  // The metrics chart appears with its first value: most fine-tunes compute none (they cost minutes).
  function showMetrics() {
    metrics.figure.hidden = false;
    metrics.draw();
  }

  // Previews come one after another; they are shown in order, each fetched with the API key.
  let previewChain = Promise.resolve();
  function onPreview(data) {
    previewChain = previewChain.then(async () => {
      try {
        const blob = await getBlob(data.url);
        if (!preview.hidden && preview.src) {
          const old = h("img", { src: preview.src, alt: `Preview ${previews}`, role: "listitem" });
          strip.prepend(old);
        }
        // The strip keeps the object URLs of earlier previews, so the latest gets a fresh one.
        preview.dataset.objectUrl = "";
        await showBlob(preview, blob);
        previews += 1;
        preview.hidden = false;
        preview.alt = `The latest preview grid (${data.name})`;
        preview.dataset.count = String(previews);
      } catch (error) {
        errors.show(error);
      }
    });
  }

  function onCheckpoint(data) {
    const metricText = Object.entries(data.metrics || {}).map(([k, v]) => `${k} ${Number(v).toFixed(3)}`).join(", ");
    checkpoints.prepend(h("tr", {}, h("td", {}, Number(data.kimg).toFixed(3)), h("td", {}, formatBytes(data.size_bytes)), h("td", {}, metricText || "-"), h("td", {}, formatTime(new Date().toISOString()))));
    for (const [name, value] of Object.entries(data.metrics || {})) metrics.add(name, data.kimg, value);
    if (Object.keys(data.metrics || {}).length) showMetrics();
  }

  async function finished() {
    const job = await getJson(`/v1/training-jobs/${jobId}`);
    setState(job.state, job.error);
    if (job.state === "succeeded") bar.value = 1;
    const modelId = job.model_id || job.result?.model_id;
    if (job.state === "succeeded" && modelId) {
      sample.href = `${root}/?model=${encodeURIComponent(modelId)}`;
      sample.hidden = false;
      note.textContent = "Training finished: the new model is in the Library.";
    }
    await previewChain;
  }

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      await request("POST", `/v1/jobs/${jobId}/cancel`);
      note.textContent = "Cancel requested: the job stops at its next step.";
    } catch (error) {
      errors.show(error);
      cancel.disabled = false;
    }
  });

  let job;
  try {
    job = await getJson(`/v1/training-jobs/${jobId}`);
  } catch (error) {
    errors.show(error);
    cancel.hidden = true;
    return;
  }
  setState(job.state);
  // The stream replays every event from the first, checkpoints included.
  followEvents(jobId, (event, data) => {
    if (event === "progress") onProgress(data);
    else if (event === "preview") onPreview(data);
    else if (event === "checkpoint") onCheckpoint(data);
    else if (event === "state") {
      setState(data.state);
      if (TERMINAL.includes(data.state)) finished().catch((error) => errors.show(error));
    }
  }).catch((error) => errors.show(error));
}
