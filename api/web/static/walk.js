// Latent walk: POST /v1/models/{id}/videos queues a video job; its progress, then the video plays.

import { getBlob, getJson, hasRoute, sendJson } from "./api.js";
import { waitForJob } from "./jobs.js";
import { errorBox, field, h, modelPicker, progressBar, root, seedList, slider } from "./ui.js";

export async function mount(container) {
  const query = new URLSearchParams(location.search);
  const errors = errorBox();
  const seeds = h("input", { type: "text", name: "seeds", value: query.get("seeds") || "0,1,2", inputmode: "numeric" });
  const frames = h("input", { type: "number", name: "frames", min: 1, max: 10000, value: query.get("frames") || 48 });
  const fps = h("input", { type: "number", name: "fps", min: 1, max: 120, step: "any", value: 24 });
  const space = h("select", { name: "space" }, h("option", { value: "w" }, "w (straight lines)"), h("option", { value: "z" }, "z (great circles)"));
  const format = h("select", { name: "format" }, ["mp4", "webp", "gif"].map((f) => h("option", { value: f }, f)));
  const loop = h("input", { type: "checkbox", name: "loop", checked: true });
  const psi = slider("Truncation ψ", { min: -1, max: 2, step: 0.05, value: 0.7, name: "psi", format: (v) => v.toFixed(2) });
  const classSelect = h("select", { name: "class" });
  const classField = field("Class", classSelect);
  const translate = h("input", { type: "text", name: "translate", placeholder: "-0.2,0 → 0.2,0", value: "" });
  const rotate = h("input", { type: "text", name: "rotate", placeholder: "0 → 30", value: "" });
  const transform = h(
    "fieldset",
    { class: "panel" },
    h("legend", {}, "StyleGAN3 transform path"),
    field("Translate from x,y to x,y", translate, "For example -0.2,0 0.2,0; empty for none."),
    field("Rotate from to (degrees)", rotate, "For example 0 30; empty for none."),
  );
  // A direction sweep: the walk moves along one editing direction too (with one seed: an editing clip).
  const sweepDirection = h("select", { name: "sweep-direction" }, h("option", { value: "" }, "none"));
  const sweepStart = h("input", { type: "number", name: "sweep-start", step: "any", value: -3 });
  const sweepStop = h("input", { type: "number", name: "sweep-stop", step: "any", value: 3 });
  const sweep = h(
    "fieldset",
    { class: "panel", hidden: true },
    h("legend", {}, "Direction sweep"),
    field("Direction", sweepDirection),
    h("div", { class: "row" }, field("From strength", sweepStart), field("To strength", sweepStop)),
  );
  // A walk can start at a projected photo's w (from the Projection page): space w only.
  const from = query.get("from");
  const fromNote = h("p", { class: "hint", hidden: !from }, `The walk starts at projection ${from}, then goes through the seeds.`);
  if (from) {
    space.value = "w";
    space.disabled = true;
  }
  const start = h("button", { type: "submit" }, "Make the video");
  const progress = progressBar("Video");
  const video = h("video", { class: "result", controls: true, loop: true, muted: true, playsinline: true, hidden: true });
  const still = h("img", { class: "result", alt: "The walk as an animated image", hidden: true });
  const download = h("a", { class: "button secondary", hidden: true }, "Download");
  let model = null;
  let controller = null;

  const picker = await modelPicker(errors, query.get("model"), (chosen) => setModel(chosen));
  function setModel(chosen) {
    model = chosen;
    if (!model) return;
    classField.hidden = !model.c_dim;
    classSelect.replaceChildren(...Array.from({ length: model.c_dim }, (_, i) => h("option", { value: i }, `class ${i}`)));
    transform.hidden = !model.architecture.startsWith("stylegan3");
    loadDirections().catch((error) => errors.show(error));
  }

  async function loadDirections() {
    sweepDirection.replaceChildren(h("option", { value: "" }, "none"));
    if (!(await hasRoute("/v1/models/{model_id}/directions"))) return;
    const { items } = await getJson(`/v1/models/${model.id}/directions`, { params: [["method", "sefa"], ["layers", "all"], ["k", 8]] });
    sweepDirection.append(...items.map((d) => h("option", { value: d.id }, d.name || `SeFa all #${d.rank}`)));
    sweep.hidden = false;
  }

  function numbers(text, name, count) {
    const values = text.split(/[\s,→]+/).filter(Boolean).map(Number);
    if (values.length !== count || values.some((v) => !Number.isFinite(v))) {
      throw new Error(`${name}: give ${count} numbers`);
    }
    return values;
  }

  async function run(event) {
    event.preventDefault();
    if (!model) return;
    controller?.abort();
    controller = new AbortController();
    errors.clear();
    const body = {
      seeds: [],
      frames: Number(frames.value),
      fps: Number(fps.value),
      space: space.value,
      format: format.value,
      loop: loop.checked,
      psi: Number(psi.input.value),
    };
    try {
      body.seeds = seedList(seeds.value, "Seeds");
      if (model.c_dim) body.class = Number(classSelect.value);
      if (!transform.hidden && translate.value.trim()) {
        const [x0, y0, x1, y1] = numbers(translate.value, "Translate", 4);
        body.translate = [[x0, y0], [x1, y1]];
      }
      if (!transform.hidden && rotate.value.trim()) body.rotate = numbers(rotate.value, "Rotate", 2);
      if (from) body.start_projection = from;
      if (sweepDirection.value) {
        body.sweep = { direction: sweepDirection.value, start: Number(sweepStart.value), stop: Number(sweepStop.value) };
      }
    } catch (error) {
      errors.node.textContent = error.message;
      errors.node.hidden = false;
      return;
    }
    history.replaceState(null, "", `${root}/walk?${new URLSearchParams({ model: model.id, seeds: seeds.value, frames: frames.value, ...(from ? { from } : {}) })}`);
    start.disabled = true;
    video.hidden = still.hidden = download.hidden = true;
    progress.set(0, "queueing");
    try {
      const job = await sendJson("POST", `/v1/models/${model.id}/videos`, body);
      const done = await waitForJob(job.id, (fraction, words) => progress.set(fraction, words), controller.signal);
      if (done.state !== "succeeded") throw new Error(`the video job ${done.state}: ${done.error || "no reason given"}`);
      const blob = await getBlob(done.result.url, { signal: controller.signal });
      const objectUrl = URL.createObjectURL(blob);
      download.href = objectUrl;
      download.download = `walk-${model.name}.${body.format}`;
      download.hidden = false;
      if (body.format === "mp4") {
        video.src = objectUrl;
        video.hidden = false;
        await video.play().catch(() => {});
      } else {
        still.src = objectUrl;
        still.hidden = false;
      }
      progress.set(1, `done: ${done.result.size_bytes} bytes`);
    } catch (error) {
      progress.hide();
      errors.show(error);
    } finally {
      start.disabled = false;
    }
  }

  const form = h(
    "form",
    { class: "controls", onsubmit: run },
    picker.wrapper,
    fromNote,
    field("Seeds, in walk order", seeds, "Comma-separated, or a range like 0-5."),
    h("div", { class: "row" }, field("Frames", frames), field("Frames per second", fps)),
    h("div", { class: "row" }, field("Interpolate in", space), field("Format", format)),
    h("label", { class: "field check" }, loop, "Loop back to the first seed"),
    psi.wrapper,
    classField,
    transform,
    sweep,
    start,
  );
  container.append(h("div", { class: "split" }, form, h("section", { class: "output", "aria-label": "Video" }, errors.node, progress.wrapper, video, still, h("div", { class: "actions" }, download))));
  setModel(picker.current());
}
