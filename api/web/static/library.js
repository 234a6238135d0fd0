// The library: models, datasets and jobs with their state, size and time; delete and cancel; upload a
// network file or import one from the official catalogue.

import { getJson, listAll, request, sendJson, upload } from "./api.js";
import { waitForJob } from "./jobs.js";
import { errorBox, field, formatBytes, formatTime, h, progressBar, root } from "./ui.js";

const ACTIVE = ["queued", "running"];

function table(headings, rows, empty) {
  if (!rows.length) return h("p", { class: "hint" }, empty);
  return h(
    "div",
    { class: "table-wrap" },
    h("table", { class: "list" }, h("thead", {}, h("tr", {}, headings.map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows)),
  );
}

export async function mount(container) {
  const errors = errorBox();
  const models = h("section", { "aria-labelledby": "models-h" });
  const datasets = h("section", { "aria-labelledby": "datasets-h" });
  const jobs = h("section", { "aria-labelledby": "jobs-h" });

  const networkFile = h("input", { type: "file", name: "network", accept: ".pkl,.safetensors,.pt" });
  const networkName = h("input", { type: "text", name: "network-name" });
  const uploadButton = h("button", { type: "button" }, "Upload network");
  const uploadProgress = progressBar("Upload");
  const catalogSelect = h("select", { name: "catalog" });
  const importButton = h("button", { type: "button", class: "secondary" }, "Import");
  const importProgress = progressBar("Import");

  async function confirmThen(what, action) {
    if (!window.confirm(`Delete ${what}? This cannot be undone.`)) return;
    try {
      await action();
      await refresh();
    } catch (error) {
      errors.show(error);
    }
  }

  async function refresh() {
    errors.clear();
    let modelItems = [];
    let datasetItems = [];
    let jobItems = [];
    try {
      [modelItems, datasetItems, jobItems] = await Promise.all([
        listAll("/v1/models"),
        listAll("/v1/datasets"),
        getJson("/v1/jobs", { params: [["limit", 50]] }).then((page) => page.items),
      ]);
    } catch (error) {
      errors.show(error);
    }
    models.replaceChildren(
      h("h2", { id: "models-h" }, `Models (${modelItems.length})`),
      table(
        ["Name", "Architecture", "Size", "Added", ""],
        modelItems.map((m) =>
          h(
            "tr",
            { dataset: { id: m.id } },
            h("td", {}, m.name, m.demo && !m.name.toLowerCase().includes("demo") ? " (demo)" : "", m.license_note ? h("small", { class: "hint", title: m.license_note }, " · licence noted") : null),
            h("td", {}, `${m.architecture}, ${m.resolution} px${m.c_dim ? `, ${m.c_dim} classes` : ""}`),
            h("td", {}, formatBytes(m.size_bytes)),
            h("td", {}, formatTime(m.created_at)),
            h(
              "td",
              { class: "actions" },
              h("a", { href: `${root}/?model=${m.id}` }, "Generate"),
              m.demo ? null : h("button", { type: "button", class: "danger", "aria-label": `Delete model ${m.name}`, onclick: () => confirmThen(`the model ${m.name}`, () => request("DELETE", `/v1/models/${m.id}`)) }, "Delete"),
            ),
          ),
        ),
        "No models yet.",
      ),
    );
    datasets.replaceChildren(
      h("h2", { id: "datasets-h" }, `Datasets (${datasetItems.length})`),
      table(
        ["Name", "Images", "Size", "Added", ""],
        datasetItems.map((d) =>
          h(
            "tr",
            { dataset: { id: d.id } },
            h("td", {}, d.name),
            h("td", {}, `${d.image_count} at ${d.resolution} px${d.rejected_count ? `, ${d.rejected_count} rejected` : ""}`),
            h("td", {}, formatBytes(d.size_bytes)),
            h("td", {}, formatTime(d.created_at)),
            h(
              "td",
              { class: "actions" },
              h("a", { href: `${root}/train?dataset=${d.id}` }, "Train on it"),
              h("button", { type: "button", class: "danger", "aria-label": `Delete dataset ${d.name}`, onclick: () => confirmThen(`the dataset ${d.name}`, () => request("DELETE", `/v1/datasets/${d.id}`)) }, "Delete"),
            ),
          ),
        ),
        "No datasets yet: upload one on the Train page.",
      ),
    );
    jobs.replaceChildren(
      h("h2", { id: "jobs-h" }, `Recent jobs (${jobItems.length})`),
      table(
        ["Kind", "State", "Progress", "Created", ""],
        jobItems.map((j) =>
          h(
            "tr",
            { dataset: { id: j.id } },
            h("td", {}, j.kind === "training" ? h("a", { href: `${root}/train/${j.id}` }, "training") : j.kind),
            h("td", { class: `state state-${j.state}` }, j.state, j.error ? h("small", { class: "hint" }, ` ${j.error}`) : null),
            h("td", {}, `${Math.round(j.progress * 100)} %`),
            h("td", {}, formatTime(j.created_at)),
            h(
              "td",
              { class: "actions" },
              ACTIVE.includes(j.state)
                ? h("button", { type: "button", class: "danger", "aria-label": `Cancel job ${j.id}`, onclick: async () => {
                    try {
                      await request("POST", `/v1/jobs/${j.id}/cancel`);
                      await refresh();
                    } catch (error) {
                      errors.show(error);
                    }
                  } }, "Cancel")
                : null,
            ),
          ),
        ),
        "No jobs yet.",
      ),
    );
  }

  uploadButton.addEventListener("click", async () => {
    errors.clear();
    const file = networkFile.files[0];
    if (!file) {
      errors.show(new Error("Choose a network file (.pkl or .safetensors) first."));
      return;
    }
    const form = new FormData();
    form.append("file", file, file.name);
    if (networkName.value.trim()) form.append("name", networkName.value.trim());
    uploadButton.disabled = true;
    try {
      await upload("/v1/models", form, (f) => uploadProgress.set(f, `${(f * 100).toFixed(0)} % sent; then checked and imported`));
      uploadProgress.set(1, "imported");
      await refresh();
    } catch (error) {
      uploadProgress.hide();
      errors.show(error);
    } finally {
      uploadButton.disabled = false;
    }
  });

  importButton.addEventListener("click", async () => {
    errors.clear();
    if (!catalogSelect.value) return;
    importButton.disabled = true;
    try {
      const job = await sendJson("POST", "/v1/models", { catalog: catalogSelect.value });
      const done = await waitForJob(job.id, (f, words) => importProgress.set(f, words));
      if (done.state !== "succeeded") throw new Error(`the import ${done.state}: ${done.error || "no reason given"}`);
      importProgress.set(1, "imported");
      await refresh();
    } catch (error) {
      importProgress.hide();
      errors.show(error);
    } finally {
      importButton.disabled = false;
    }
  });

  const add = h(
    "section",
    { class: "panel", "aria-labelledby": "add-h" },
    h("h2", { id: "add-h" }, "Add a model"),
    h("div", { class: "row" }, field("Network file", networkFile, "An official .pkl (StyleGAN2-ADA, StyleGAN3) or our .safetensors."), field("Name", networkName), uploadButton),
    uploadProgress.wrapper,
    h("div", { class: "row" }, field("From the official catalogue", catalogSelect, "Downloaded by the service; needs its internet access."), importButton),
    importProgress.wrapper,
  );
  container.append(errors.node, models, add, datasets, jobs);
  await refresh();
  try {
    const { items } = await getJson("/v1/catalog");
    catalogSelect.replaceChildren(...items.map((c) => h("option", { value: c.name }, `${c.name} (${c.resolution} px, ${c.license})`)));
  } catch (error) {
    errors.show(error);
  }
}
