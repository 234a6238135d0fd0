// Style mixing: row seeds down the left, column seeds on top, each cell the row's latent with the chosen
// styles of the column's: GET /v1/models/{id}/mix.png per cell, so the grid fills in cell by cell.

import { getBlob } from "./api.js";
import { errorBox, field, h, modelPicker, progressBar, root, seedList, showBlob, slider } from "./ui.js";

// Cells rendered at once: enough to keep the inference worker's micro-batcher fed, few enough that the
// per-caller rate limit is not hit.
const PARALLEL = 3;

export async function mount(container) {
  const query = new URLSearchParams(location.search);
  const errors = errorBox();
  const rows = h("input", { type: "text", name: "rows", value: query.get("rows") || "1,2,3", inputmode: "numeric" });
  const cols = h("input", { type: "text", name: "cols", value: query.get("cols") || "4,5,6,7", inputmode: "numeric" });
  const psi = slider("Truncation ψ", { min: -1, max: 2, step: 0.05, value: query.get("psi") ?? 0.7, name: "psi", format: (v) => v.toFixed(2) });
  const noise = h("select", { name: "noise" }, ["const", "random", "none"].map((n) => h("option", { value: n }, n)));
  const bandsMode = h("input", { type: "radio", name: "styles-mode", value: "bands", checked: true });
  const layersMode = h("input", { type: "radio", name: "styles-mode", value: "layers" });
  const bandBoxes = ["coarse", "middle", "fine"].map((band) =>
    h("input", { type: "checkbox", name: "band", value: band, checked: band === "coarse" }),
  );
  const bands = h(
    "div",
    { class: "layers", role: "group", "aria-label": "Style bands from the column seed" },
    bandBoxes.map((box) => h("label", {}, box, box.value)),
  );
  const layers = h("div", { class: "layers", role: "group", "aria-label": "Layers (ws indices) from the column seed", hidden: true });
  const classSelect = h("select", { name: "class" });
  const classField = field("Class", classSelect);
  const start = h("button", { type: "submit" }, "Mix");
  const progress = progressBar("Cells");
  const grid = h("div", { class: "mix-grid", "aria-label": "Style mixing grid", role: "group" });
  let model = null;
  let controller = null;

  const picker = await modelPicker(errors, query.get("model"), (chosen) => setModel(chosen));

  function setModel(chosen) {
    model = chosen;
    if (!model) return;
    layers.replaceChildren(
      ...Array.from({ length: model.num_ws }, (_, i) =>
        h("label", {}, h("input", { type: "checkbox", name: "layer", value: i, checked: i < 2 }), String(i)),
      ),
    );
    classField.hidden = !model.c_dim;
    classSelect.replaceChildren(...Array.from({ length: model.c_dim }, (_, i) => h("option", { value: i }, `class ${i}`)));
  }

  function styles() {
    if (bandsMode.checked) return bandBoxes.filter((b) => b.checked).map((b) => b.value).join(",");
    return [...layers.querySelectorAll("input:checked")].map((b) => b.value).join(",");
  }
  for (const radio of [bandsMode, layersMode]) {
    radio.addEventListener("change", () => {
      bands.hidden = !bandsMode.checked;
      layers.hidden = bandsMode.checked;
    });
  }

  function cellImage(label) {
    return h("img", { alt: label, width: 128, height: 128, dataset: { state: "loading" } });
  }

  async function fill(img, path, params, signal) {
    try {
      await showBlob(img, await getBlob(path, { params, signal }));
      img.dataset.state = "ready";
    } catch (error) {
      if (error.name === "AbortError" || signal.aborted) return;
      img.dataset.state = "error";
      throw error;
    }
  }

  async function run(event) {
    event?.preventDefault();
    if (!model) return;
    controller?.abort();
    controller = new AbortController();
    const signal = controller.signal;
    errors.clear();
    let rowSeeds;
    let colSeeds;
    try {
      rowSeeds = seedList(rows.value, "Row seeds");
      colSeeds = seedList(cols.value, "Column seeds");
      if (!rowSeeds.length || !colSeeds.length) throw new Error("give at least one row seed and one column seed");
    } catch (error) {
      errors.node.textContent = error.message;
      errors.node.hidden = false;
      return;
    }
    const chosen = styles();
    const base = [["psi", psi.input.value], ["noise", noise.value]];
    if (model.c_dim) base.push(["class", classSelect.value]);
    const page = new URLSearchParams([["model", model.id], ["rows", rows.value], ["cols", cols.value], ["psi", psi.input.value]]);
    history.replaceState(null, "", `${root}/mix?${page}`);

    grid.style.gridTemplateColumns = `repeat(${colSeeds.length + 1}, minmax(56px, 128px))`;
    const tasks = [];
    const cells = [h("div", { class: "corner" }, "rows ↓ take styles from columns →")];
    for (const col of colSeeds) {
      const img = cellImage(`Column seed ${col}`);
      cells.push(h("figure", {}, img, h("figcaption", {}, `col ${col}`)));
      tasks.push(() => fill(img, `/v1/models/${model.id}/images/${col}.png`, base, signal));
    }
    for (const row of rowSeeds) {
      const img = cellImage(`Row seed ${row}`);
      cells.push(h("figure", {}, img, h("figcaption", {}, `row ${row}`)));
      tasks.push(() => fill(img, `/v1/models/${model.id}/images/${row}.png`, base, signal));
      for (const col of colSeeds) {
        const cell = cellImage(`Seed ${row} with the ${chosen} styles of seed ${col}`);
        cell.classList.add("mix-cell");
        cells.push(h("figure", {}, cell));
        const params = [...base, ["row", row], ["col", col], ["styles", chosen]];
        tasks.push(() => fill(cell, `/v1/models/${model.id}/mix.png`, params, signal));
      }
    }
    grid.replaceChildren(...cells);
    grid.dataset.state = "loading";
    let done = 0;
    progress.set(0, `0 of ${tasks.length} images`);
    let failed = null;
    const next = async () => {
      while (tasks.length && !signal.aborted && !failed) {
        const task = tasks.shift();
        try {
          await task();
        } catch (error) {
          failed = error;
        }
        done += 1;
        progress.set(done / (done + tasks.length), `${done} of ${done + tasks.length} images`);
      }
    };
    await Promise.all(Array.from({ length: PARALLEL }, next));
    if (signal.aborted) return;
    if (failed) {
      errors.show(failed);
      grid.dataset.state = "error";
    } else {
      grid.dataset.state = "ready";
      progress.set(1, `all ${done} images`);
    }
  }

  const form = h(
    "form",
    { class: "controls", onsubmit: run },
    picker.wrapper,
    field("Row seeds", rows, "Comma-separated, or a range like 0-5."),
    field("Column seeds", cols),
    h(
      "fieldset",
      { class: "panel" },
      h("legend", {}, "Styles taken from the column seeds"),
      h("div", { class: "row" }, h("label", {}, bandsMode, " coarse / middle / fine"), h("label", {}, layersMode, " per layer")),
      bands,
      layers,
    ),
    psi.wrapper,
    field("Noise", noise),
    classField,
    start,
  );
  container.append(h("div", { class: "split" }, form, h("section", { class: "output", "aria-label": "Grid" }, errors.node, progress.wrapper, grid)));
  setModel(picker.current());
  run();
}
