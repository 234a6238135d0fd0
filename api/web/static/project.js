// Projection: drop a photo, POST /v1/models/{id}/projections, follow the job, show the reconstruction
// beside the image the model saw; then edit it with the direction sliders or mix it with seeds
// (mix.png?row=w:{id}), as the API's render_url and mix route allow.

import { getBlob, getJson, upload } from "./api.js";
import { directionsPanel } from "./directions.js";
import { waitForJob } from "./jobs.js";
import { errorBox, field, h, modelPicker, progressBar, root, showBlob } from "./ui.js";

export async function mount(container) {
  const query = new URLSearchParams(location.search);
  const errors = errorBox();
  const file = h("input", { type: "file", name: "image", accept: "image/png,image/jpeg,image/webp" });
  const drop = h(
    "div",
    { class: "drop" },
    h("p", {}, "Drop a photo here, or choose one:"),
    field("Photo (PNG, JPEG or WebP)", file),
  );
  const steps = h("input", { type: "number", name: "steps", min: 1, max: 5000, value: query.get("steps") || 200 });
  const space = h("select", { name: "space" }, h("option", { value: "w" }, "w (one latent)"), h("option", { value: "w+" }, "w+ (one per layer: closer, less editable)"));
  const classSelect = h("select", { name: "class_idx" });
  const classField = field("Class", classSelect);
  const start = h("button", { type: "submit" }, "Project");
  const progress = progressBar("Projection");
  const target = h("img", { alt: "The photo as the model sees it", width: 256, height: 256 });
  const recon = h("img", { alt: "The reconstruction", width: 256, height: 256, class: "reconstruction", dataset: { state: "empty" } });
  const pair = h(
    "div",
    { class: "pair", hidden: true },
    h("figure", {}, target, h("figcaption", {}, "Your photo, cropped and resized")),
    h("figure", {}, recon, h("figcaption", {}, "Reconstruction (with your edits)")),
  );
  const mixSeeds = h("input", { type: "text", name: "mix-seeds", value: "1,2,3", inputmode: "numeric" });
  const mixStyles = h("select", { name: "mix-styles" }, ["coarse", "middle", "fine"].map((b) => h("option", { value: b }, b)));
  const mixButton = h("button", { type: "button", class: "secondary" }, "Mix with these seeds");
  const mixRow = h("div", { class: "strip mix-strip" });
  const walkLink = h("a", { class: "button secondary", href: `${root}/walk` }, "Make a latent walk that starts here");
  const after = h(
    "section",
    { class: "panel", hidden: true, "aria-label": "Use the projection" },
    h("h2", {}, "Mix it with seeds"),
    h("div", { class: "row" }, field("Seeds", mixSeeds), field("Their styles", mixStyles), mixButton),
    mixRow,
    h("h2", {}, "Walk from it"),
    h("p", {}, walkLink),
  );
  let model = null;
  let projection = null;
  let controller = null;
  const directions = directionsPanel(() => render());

  const picker = await modelPicker(errors, query.get("model"), (chosen) => setModel(chosen));
  function setModel(chosen) {
    model = chosen;
    if (!model) return;
    classField.hidden = !model.c_dim;
    classSelect.replaceChildren(...Array.from({ length: model.c_dim }, (_, i) => h("option", { value: i }, `class ${i}`)));
  }

  async function render() {
    if (!projection) return;
    controller?.abort();
    controller = new AbortController();
    const params = directions.edits().map((e) => ["edit", e]);
    recon.dataset.state = "loading";
    try {
      await showBlob(recon, await getBlob(`/v1/models/${projection.model_id}/images/w/${projection.id}.png`, { params, signal: controller.signal }));
      recon.dataset.state = "ready";
      errors.clear();
    } catch (error) {
      if (error.name !== "AbortError") errors.show(error);
    }
  }

  async function mix() {
    if (!projection) return;
    errors.clear();
    const seeds = mixSeeds.value.split(",").map((s) => s.trim()).filter(Boolean);
    mixRow.replaceChildren();
    for (const seed of seeds) {
      const img = h("img", { alt: `The projection with the ${mixStyles.value} styles of seed ${seed}`, width: 96, height: 96 });
      mixRow.append(img);
      try {
        const params = [["row", `w:${projection.id}`], ["col", seed], ["styles", mixStyles.value]];
        await showBlob(img, await getBlob(`/v1/models/${projection.model_id}/mix.png`, { params }));
      } catch (error) {
        errors.show(error);
        return;
      }
    }
  }
  mixButton.addEventListener("click", mix);

  async function run(event) {
    event?.preventDefault();
    if (!model) return;
    const photo = file.files[0];
    errors.clear();
    if (!photo) {
      errors.node.textContent = "Choose or drop a photo first.";
      errors.node.hidden = false;
      return;
    }
    const form = new FormData();
    form.append("image", photo, photo.name);
    form.append("steps", steps.value);
    form.append("space", space.value);
    if (model.c_dim) form.append("class_idx", classSelect.value);
    start.disabled = true;
    pair.hidden = after.hidden = true;
    try {
      const queued = await upload(`/v1/models/${model.id}/projections`, form, (f) => progress.set(f, `uploading ${(f * 100).toFixed(0)} %`));
      const done = await waitForJob(queued.id, (fraction, words) => progress.set(fraction, words));
      if (done.state !== "succeeded") throw new Error(`the projection ${done.state}: ${done.error || "no reason given"}`);
      projection = await getJson(`/v1/projections/${queued.id}`);
      await showBlob(target, await getBlob(projection.target_url));
      pair.hidden = after.hidden = false;
      walkLink.href = `${root}/walk?${new URLSearchParams({ model: model.id, from: projection.id, seeds: "1,2" })}`;
      directions.panel.hidden = false;
      progress.set(1, projection.distance === null ? "done" : `done: distance ${projection.distance.toFixed(3)}`);
      history.replaceState(null, "", `${root}/project?${new URLSearchParams({ model: model.id })}`);
      await directions.setModel(projection.model_id, []);
      await render();
    } catch (error) {
      progress.hide();
      errors.show(error);
    } finally {
      start.disabled = false;
    }
  }

  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files.length) {
      file.files = event.dataTransfer.files;
      run();
    }
  });
  directions.panel.hidden = true;
  const form = h(
    "form",
    { class: "controls", onsubmit: run },
    picker.wrapper,
    drop,
    h("div", { class: "row" }, field("Steps", steps, "NVIDIA's projector uses 1000; fewer is quicker and rougher."), field("Space", space)),
    classField,
    start,
    directions.panel,
  );
  container.append(h("div", { class: "split" }, form, h("section", { class: "output", "aria-label": "Projection" }, errors.node, progress.wrapper, pair, after)));
  setModel(picker.current());
}
