// Train: upload a dataset (a zip, a folder or images, with upload progress; the accepted count and every
// rejected file with its reason), choose a base model and a preset, start; then the job's own page.

import { getJson, listAll, sendJson, upload } from "./api.js";
import { waitForJob } from "./jobs.js";
import { errorBox, field, formatBytes, h, modelLabel, progressBar, root } from "./ui.js";

// "Fine-tune a small dataset": ADA (StyleGAN2-ADA's answer to few images), x-flips, and a length a
// machine finishes in a sitting; the demo fine-tunes at about 50 s/kimg on 2 CPU cores (README), so a
// CPU-only service gets a short run and a GPU one a real one.
const PRESETS = {
  small: { label: "Fine-tune a small dataset", cpu: { kimg: 10, snap: 2, tick: 1 }, gpu: { kimg: 200, snap: 10, tick: 4 }, aug: "ada", mirror: true },
  custom: { label: "Custom (the API's defaults)" },
};

export async function mount(container) {
  const query = new URLSearchParams(location.search);
  const errors = errorBox();

  // --- the dataset --------------------------------------------------------------------------------
  const zip = h("input", { type: "file", name: "dataset-files", multiple: true, accept: ".zip,image/*" });
  const folder = h("input", { type: "file", name: "dataset-folder", webkitdirectory: true, multiple: true });
  const drop = h(
    "div",
    { class: "drop" },
    h("p", {}, "Drop a zip or a folder of images here, or choose:"),
    h("div", { class: "row" }, field("A zip or images", zip), field("A folder", folder)),
  );
  const datasetName = h("input", { type: "text", name: "dataset-name", placeholder: "my photos" });
  const resolution = h("select", { name: "resolution" }, h("option", { value: "" }, "the base model's"), [32, 64, 128, 256, 512, 1024].map((r) => h("option", { value: r }, `${r} px`)));
  const transform = h("select", { name: "transform" }, ["center-crop", "center-crop-wide", "pad"].map((t) => h("option", { value: t }, t)));
  const uploadButton = h("button", { type: "button" }, "Upload");
  const uploadProgress = progressBar("Upload");
  const report = h("div", { class: "dataset-report", role: "status" });
  const datasetSelect = h("select", { name: "dataset" });

  // --- the base model and options ----------------------------------------------------------------------
  const baseSelect = h("select", { name: "base-model" });
  const importProgress = progressBar("Import");
  const preset = h("select", { name: "preset" }, Object.entries(PRESETS).map(([k, p]) => h("option", { value: k }, p.label)));
  const num = (name, attrs) => h("input", { type: "number", name, step: "any", ...attrs });
  const options = {
    kimg: num("kimg", { min: 0.001, value: 10 }),
    batch: num("batch", { min: 1, step: 1, placeholder: "preset" }),
    gamma: num("gamma", { min: 0, placeholder: "preset" }),
    aug: h("select", { name: "aug" }, ["ada", "fixed", "noaug"].map((a) => h("option", { value: a }, a))),
    target: num("target", { min: 0, max: 1, value: 0.6 }),
    mirror: h("input", { type: "checkbox", name: "mirror", checked: true }),
    snap: num("snap", { min: 1, step: 1, value: 2 }),
    tick: num("tick", { min: 0.001, value: 1 }),
    freezed: num("freezed", { min: 0, max: 64, step: 1, value: 0 }),
    cbase: num("cbase", { min: 1, step: 1, placeholder: "preset" }),
    cmax: num("cmax", { min: 1, step: 1, placeholder: "preset" }),
    seed: num("training-seed", { min: 0, step: 1, value: 0 }),
    preview_images: num("preview_images", { min: 1, max: 256, step: 1, value: 16 }),
  };
  const cfg = h("select", { name: "cfg" }, h("option", { value: "" }, "from the base model"));
  const start = h("button", { type: "submit" }, "Start training");
  let device = "cpu";
  let models = [];
  let catalog = [];

  function applyPreset() {
    const p = PRESETS[preset.value];
    if (!p.cpu) return;
    const size = device.startsWith("cuda") ? p.gpu : p.cpu;
    options.kimg.value = size.kimg;
    options.snap.value = size.snap;
    options.tick.value = size.tick;
    options.aug.value = p.aug;
    options.mirror.checked = p.mirror;
  }
  preset.addEventListener("change", applyPreset);

  async function loadDatasets(selected) {
    try {
      const items = await listAll("/v1/datasets");
      datasetSelect.replaceChildren(
        h("option", { value: "" }, items.length ? "Choose a dataset" : "Upload a dataset first"),
        ...items.map((d) => h("option", { value: d.id }, `${d.name}: ${d.image_count} images, ${d.resolution} px`)),
      );
      if (selected) datasetSelect.value = selected;
      else if (query.get("dataset")) datasetSelect.value = query.get("dataset");
    } catch (error) {
      errors.show(error);
    }
  }

  async function loadModels() {
    try {
      models = await listAll("/v1/models");
      catalog = (await getJson("/v1/catalog")).items;
    } catch (error) {
      errors.show(error);
    }
    baseSelect.replaceChildren(
      h("option", { value: "" }, "none: train from scratch"),
      h("optgroup", { label: "Models here" }, models.map((m) => h("option", { value: m.id }, modelLabel(m)))),
      catalog.length
        ? h("optgroup", { label: "Official catalogue (imported first)" }, catalog.map((c) => h("option", { value: `catalog:${c.name}` }, `${c.name} (${c.resolution} px, ${c.license})`)))
        : null,
    );
    const wanted = query.get("base");
    const demo = models.find((m) => m.demo);
    baseSelect.value = wanted || (demo ? demo.id : "");
  }

  function chosenFiles() {
    return [...zip.files, ...folder.files];
  }

  async function sendDataset(files) {
    errors.clear();
    report.replaceChildren();
    if (!files.length) {
      errors.node.textContent = "Choose a zip, a folder or some images first.";
      errors.node.hidden = false;
      return;
    }
    const form = new FormData();
    for (const file of files) form.append("file", file, file.webkitRelativePath || file.name);
    const base = models.find((m) => m.id === baseSelect.value);
    const res = resolution.value || (base ? String(base.resolution) : "");
    if (res) form.append("resolution", res);
    form.append("transform", transform.value);
    if (datasetName.value.trim()) form.append("name", datasetName.value.trim());
    uploadButton.disabled = true;
    try {
      let answer = await upload("/v1/datasets", form, (f) => uploadProgress.set(f, `${(f * 100).toFixed(0)} % sent`));
      if (answer.kind === "dataset_prepare") {
        const done = await waitForJob(answer.id, (f, words) => uploadProgress.set(f, `preparing: ${words}`));
        if (done.state !== "succeeded") throw new Error(`preparing the dataset ${done.state}: ${done.error || ""}`);
        answer = await getJson(`/v1/datasets/${done.result.dataset_id}`);
      }
      uploadProgress.set(1, "done");
      showReport(answer);
      await loadDatasets(answer.id);
    } catch (error) {
      uploadProgress.hide();
      errors.show(error);
    } finally {
      uploadButton.disabled = false;
    }
  }

  function showReport(dataset) {
    const rejected = dataset.rejected || [];
    // The service keeps the first rejections only (names cut); rejected_count says how many there were.
    const count = Math.max(dataset.rejected_count ?? 0, rejected.length);
    report.replaceChildren(
      h("p", { class: "ok accepted" }, `${dataset.image_count} images accepted into "${dataset.name}" (${dataset.resolution} px, ${formatBytes(dataset.size_bytes)}).`),
      count
        ? h(
            "details",
            { open: rejected.length <= 20 },
            h("summary", {}, `${count} files rejected`),
            h("ul", { class: "rejected" }, rejected.map((r) => h("li", {}, h("strong", {}, r.name), `: ${r.reason}${r.detail ? ` (${r.detail})` : ""}`))),
            count > rejected.length ? h("p", { class: "hint" }, `The first ${rejected.length} are listed.`) : null,
          )
        : h("p", {}, "No file was rejected."),
    );
  }

  uploadButton.addEventListener("click", () => sendDataset(chosenFiles()));
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", async (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    sendDataset(await droppedFiles(event.dataTransfer));
  });

  async function baseModelId() {
    const value = baseSelect.value;
    if (!value.startsWith("catalog:")) return value || null;
    const job = await sendJson("POST", "/v1/models", { catalog: value.slice("catalog:".length) });
    const done = await waitForJob(job.id, (f, words) => importProgress.set(f, words));
    if (done.state !== "succeeded") throw new Error(`importing the base model ${done.state}: ${done.error || ""}`);
    importProgress.set(1, "imported");
    return done.result.model_id;
  }

  async function startTraining(event) {
    event.preventDefault();
    errors.clear();
    if (!datasetSelect.value) {
      errors.node.textContent = "Upload or choose a dataset first.";
      errors.node.hidden = false;
      return;
    }
    start.disabled = true;
    try {
      const body = { dataset_id: datasetSelect.value, base_model_id: await baseModelId() };
      for (const [name, input] of Object.entries(options)) {
        if (input.type === "checkbox") body[name] = input.checked;
        else if (input.tagName === "SELECT") body[name] = input.value;
        else if (input.value !== "") body[name] = Number(input.value);
      }
      if (cfg.value) body.cfg = cfg.value;
      const job = await sendJson("POST", "/v1/training-jobs", body);
      location.assign(`${root}/train/${job.id}`);
    } catch (error) {
      errors.show(error);
      start.disabled = false;
    }
  }

  const labelled = (text, input) => (input.type === "checkbox" ? h("label", { class: "field check" }, input, text) : field(text, input));
  const advanced = h(
    "details",
    { class: "panel" },
    h("summary", {}, "Advanced options"),
    h(
      "div",
      { class: "row" },
      field("Network config", cfg),
      labelled("kimg (thousands of images shown)", options.kimg),
      labelled("Batch", options.batch),
      labelled("R1 gamma", options.gamma),
      labelled("Augmentation", options.aug),
      labelled("ADA target", options.target),
      labelled("Snapshot every (ticks)", options.snap),
      labelled("Tick (kimg)", options.tick),
      labelled("Freeze D layers", options.freezed),
      labelled("cbase", options.cbase),
      labelled("cmax", options.cmax),
      labelled("Seed", options.seed),
      labelled("Preview images", options.preview_images),
    ),
    labelled("Mirror (x-flips)", options.mirror),
  );
  const form = h(
    "form",
    { class: "controls train", onsubmit: startTraining },
    h("h2", {}, "1. Images"),
    drop,
    h("div", { class: "row" }, field("Dataset name", datasetName), field("Resolution", resolution), field("Squaring", transform)),
    uploadButton,
    uploadProgress.wrapper,
    report,
    field("Dataset", datasetSelect),
    h("h2", {}, "2. Base model and preset"),
    field("Base model", baseSelect),
    importProgress.wrapper,
    field("Preset", preset),
    advanced,
    h("h2", {}, "3. Start"),
    errors.node,
    start,
  );
  container.append(form);
  for (const name of ["auto", "stylegan2", "stylegan3-t", "stylegan3-r", "paper256", "paper512", "paper1024", "cifar"]) cfg.append(h("option", { value: name }, name));
  await Promise.all([loadDatasets(), loadModels()]);
  try {
    const { items } = await getJson("/v1/workers");
    device = items.find((w) => w.queues.includes("training"))?.device || "cpu";
  } catch {
    device = "cpu";
  }
  applyPreset();
}

// Files from a drop: a dropped folder arrives as a directory entry, read recursively.
async function droppedFiles(transfer) {
  const entries = [...transfer.items].map((item) => item.webkitGetAsEntry?.()).filter(Boolean);
  if (!entries.length) return [...transfer.files];
  const files = [];
  const walk = async (entry, prefix) => {
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
      files.push(new File([file], prefix + file.name, { type: file.type }));
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (!batch.length) break;
        for (const child of batch) await walk(child, `${prefix}${entry.name}/`);
      }
    }
  };
  for (const entry of entries) await walk(entry, "");
  return files;
}
