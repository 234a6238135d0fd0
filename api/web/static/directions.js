// Editing directions: a slider per direction of the model (GET /v1/models/{id}/directions), whose
// strengths go to the image routes as repeated `edit=ID:STRENGTH` parameters.

import { getJson, hasRoute, sendJson, upload } from "./api.js";
import { waitForJob } from "./jobs.js";
import { describe, field, h, progressBar, slider } from "./ui.js";

// GANSpace samples for a run started here: the PCA settles well before the API's default 100,000, and a
// CPU maps 10,000 in seconds.
const GANSPACE_SAMPLES = 10000;

// The service refuses more edits than this on one image (gan.editing.MAX_EDITS); only non-zero sliders
// are sent, so that many sliders are listed.
const SLIDERS = 8;

export function directionsPanel(onChange) {
  const method = h(
    "select",
    { name: "direction-method" },
    h("option", { value: "sefa" }, "SeFa (closed form)"),
    h("option", { value: "ganspace" }, "GANSpace (principal components)"),
    h("option", { value: "user" }, "My own directions"),
  );
  const layers = h(
    "select",
    { name: "direction-layers" },
    h("option", { value: "all" }, "all layers"),
    h("option", { value: "coarse" }, "coarse (pose, shape)"),
    h("option", { value: "middle" }, "middle (features)"),
    h("option", { value: "fine" }, "fine (colour, texture)"),
  );
  const list = h("div", { class: "directions" });
  const note = h("p", { class: "hint", role: "status" });
  const reset = h("button", { type: "button", class: "secondary" }, "Reset edits");
  // On request: a GANSpace run for this model, or a direction of the person's own (.npy of w_dim numbers).
  const computeProgress = progressBar("GANSpace");
  const compute = h("button", { type: "button", class: "secondary" }, "Find GANSpace directions");
  const ownName = h("input", { type: "text", name: "direction-name", placeholder: "smile" });
  const ownFile = h("input", { type: "file", name: "direction-file", accept: ".npy" });
  const ownSave = h("button", { type: "button", class: "secondary" }, "Add direction");
  const extra = h("div", { class: "panel-extra" });
  const panel = h(
    "fieldset",
    { class: "panel" },
    h("legend", {}, "Editing directions"),
    h("div", { class: "row" }, field("Method", method), field("Layers", layers)),
    list,
    note,
    extra,
    reset,
  );
  let sliders = [];
  let modelId = null;
  let controller = null;
  // Strengths a permalink asked for, applied when the directions arrive.
  let pending = new Map();

  const edits = () =>
    sliders.filter((s) => Number(s.input.value) !== 0).map((s) => `${s.input.dataset.id}:${s.input.value}`);

  async function load() {
    controller?.abort();
    controller = new AbortController();
    sliders = [];
    list.replaceChildren();
    extra.replaceChildren();
    if (!modelId) return;
    if (!(await hasRoute("/v1/models/{model_id}/directions"))) {
      note.textContent = "This service offers no editing directions.";
      panel.dataset.available = "false";
      return;
    }
    panel.dataset.available = "true";
    note.textContent = "Finding directions...";
    const query = [["method", method.value], ["layers", layers.value]];
    if (method.value !== "user") query.push(["k", SLIDERS]);
    let items;
    try {
      ({ items } = await getJson(`/v1/models/${modelId}/directions`, { params: query, signal: controller.signal }));
    } catch (error) {
      if (error.name === "AbortError") return;
      note.textContent = describe(error);
      return;
    }
    note.textContent = items.length ? "" : "No directions of this kind for this model yet.";
    if (method.value === "ganspace") extra.replaceChildren(compute, computeProgress.wrapper);
    if (method.value === "user") {
      extra.replaceChildren(h("div", { class: "row" }, field("Name", ownName), field("Direction (.npy)", ownFile)), ownSave);
    }
    for (const item of items) {
      const name = item.name || `${item.method === "sefa" ? "SeFa" : item.method === "ganspace" ? "GANSpace" : "Direction"} ${item.layers} #${item.rank}`;
      const unit = item.sigma ? " σ" : "";
      const control = slider(name, {
        min: -5,
        max: 5,
        step: 0.1,
        value: pending.get(item.id) ?? 0,
        name: `edit-${item.id}`,
        format: (v) => `${v > 0 ? "+" : ""}${v.toFixed(1)}${unit}`,
      });
      control.input.dataset.id = item.id;
      control.input.addEventListener("input", () => onChange());
      sliders.push(control);
      list.append(control.wrapper);
    }
    const hadPending = pending.size > 0;
    pending = new Map();
    if (hadPending) onChange();
  }

  compute.addEventListener("click", async () => {
    compute.disabled = true;
    try {
      const job = await sendJson("POST", `/v1/models/${modelId}/directions`, { method: "ganspace", samples: GANSPACE_SAMPLES, k: SLIDERS });
      const done = await waitForJob(job.id, (f, words) => computeProgress.set(f, words));
      if (done.state !== "succeeded") throw new Error(`GANSpace ${done.state}: ${done.error || "no reason given"}`);
      await load();
    } catch (error) {
      note.textContent = describe(error);
    } finally {
      compute.disabled = false;
    }
  });
  ownSave.addEventListener("click", async () => {
    if (!ownFile.files[0] || !ownName.value.trim()) {
      note.textContent = "Give the direction a name and choose its .npy file.";
      return;
    }
    const form = new FormData();
    form.append("name", ownName.value.trim());
    form.append("layers", layers.value);
    form.append("file", ownFile.files[0], ownFile.files[0].name);
    try {
      await upload(`/v1/models/${modelId}/directions`, form, () => {});
      await load();
    } catch (error) {
      note.textContent = describe(error);
    }
  });
  method.addEventListener("change", load);
  layers.addEventListener("change", load);
  reset.addEventListener("click", () => {
    for (const s of sliders) {
      s.input.value = 0;
      s.refresh();
    }
    onChange();
  });

  return {
    panel,
    edits,
    setModel(id, wanted) {
      modelId = id;
      pending = new Map(
        (wanted || []).map((text) => {
          const cut = text.lastIndexOf(":");
          return [text.slice(0, cut), Number(text.slice(cut + 1))];
        }),
      );
      const first = [...pending.keys()][0] || "";
      const [m, l] = first.split("-");
      if (["sefa", "ganspace"].includes(m) && [...layers.options].some((o) => o.value === l)) {
        method.value = m;
        layers.value = l;
      }
      return load();
    },
  };
}
