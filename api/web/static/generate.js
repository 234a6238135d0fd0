// Generate: one image by seed, with truncation, noise, class, the StyleGAN3 transform and editing
// directions; GET /v1/models/{id}/images/{seed}.png with the same query a script would send.

import { getBlob } from "./api.js";
import { directionsPanel } from "./directions.js";
import { errorBox, field, h, modelPicker, randomSeed, root, showBlob, slider } from "./ui.js";

export async function mount(container) {
  const query = new URLSearchParams(location.search);
  const errors = errorBox();
  const image = h("img", { class: "result", alt: "The generated image", width: 512, height: 512, dataset: { state: "empty" } });
  const busy = h("span", { class: "busy", role: "status", "aria-live": "polite" }, "");
  const download = h("a", { class: "button", download: "image.png", href: "#", "aria-disabled": "true" }, "Download PNG");
  const permalink = h("a", { class: "button secondary", href: location.href }, "Permalink");
  const copy = h("button", { type: "button", class: "secondary" }, "Copy link");

  const seed = h("input", { type: "number", name: "seed", min: 0, max: 4294967295, step: 1, value: query.get("seed") ?? 0, inputmode: "numeric" });
  const random = h("button", { type: "button" }, "Random");
  const psi = slider("Truncation ψ", { min: -1, max: 2, step: 0.05, value: query.get("psi") ?? 0.7, name: "psi", format: (v) => v.toFixed(2) });
  const cutoff = slider("Truncate layers", { min: 1, max: 2, step: 1, value: 2, name: "cutoff" });
  const noise = h(
    "select",
    { name: "noise" },
    h("option", { value: "const" }, "constant"),
    h("option", { value: "random" }, "random (from the seed)"),
    h("option", { value: "none" }, "none"),
  );
  noise.value = query.get("noise") || "const";
  const classSelect = h("select", { name: "class" });
  const classField = field("Class", classSelect);
  const tx = slider("Translate x", { min: -1, max: 1, step: 0.05, value: 0, name: "translate-x", format: (v) => v.toFixed(2) });
  const ty = slider("Translate y", { min: -1, max: 1, step: 0.05, value: 0, name: "translate-y", format: (v) => v.toFixed(2) });
  const rotate = slider("Rotate", { min: -180, max: 180, step: 1, value: 0, name: "rotate", format: (v) => `${v}°` });
  const transform = h("fieldset", { class: "panel" }, h("legend", {}, "StyleGAN3 input transform"), tx.wrapper, ty.wrapper, rotate.wrapper);

  let controller = null;
  let model = null;
  const directions = directionsPanel(() => render());

  const picker = await modelPicker(errors, query.get("model"), (chosen) => {
    setModel(chosen, null);
    render();
  });

  function cutoffAll() {
    return Number(cutoff.input.value) >= Number(cutoff.input.max);
  }

  function setModel(chosen, fromQuery) {
    model = chosen;
    if (!model) return;
    cutoff.input.max = model.num_ws;
    const wanted = fromQuery?.get("cutoff");
    cutoff.input.value = wanted ? Math.min(Number(wanted), model.num_ws) : model.num_ws;
    cutoff.refresh();
    classField.hidden = !model.c_dim;
    classSelect.replaceChildren(...Array.from({ length: model.c_dim }, (_, i) => h("option", { value: i }, `class ${i}`)));
    if (fromQuery?.get("class")) classSelect.value = fromQuery.get("class");
    transform.hidden = !model.architecture.startsWith("stylegan3");
    if (fromQuery?.get("translate")) {
      const [x, y] = fromQuery.get("translate").split(",").map(Number);
      tx.input.value = x;
      ty.input.value = y;
    }
    if (fromQuery?.get("rotate")) rotate.input.value = fromQuery.get("rotate");
    for (const s of [tx, ty, rotate]) s.refresh();
    image.width = image.height = Math.min(512, Math.max(256, model.resolution));
    directions.setModel(model.id, fromQuery?.getAll("edit"));
  }

  cutoff.input.addEventListener("input", () => {
    if (cutoffAll()) cutoff.input.setAttribute("aria-valuetext", "all layers");
  });
  const cutoffFormat = () => {
    cutoff.wrapper.querySelector("output").textContent = cutoffAll() ? "all layers" : `first ${cutoff.input.value}`;
  };
  cutoff.input.addEventListener("input", cutoffFormat);

  // The image's query, as a script would send it; also the permalink's (with `model` and `seed`).
  function params() {
    const out = [["psi", psi.input.value], ["noise", noise.value]];
    if (!cutoffAll()) out.push(["cutoff", cutoff.input.value]);
    if (model?.c_dim) out.push(["class", classSelect.value]);
    if (model?.architecture.startsWith("stylegan3")) {
      if (Number(tx.input.value) || Number(ty.input.value)) out.push(["translate", `${tx.input.value},${ty.input.value}`]);
      if (Number(rotate.input.value)) out.push(["rotate", rotate.input.value]);
    }
    for (const edit of directions.edits()) out.push(["edit", edit]);
    return out;
  }

  async function render() {
    if (!model) return;
    controller?.abort();
    controller = new AbortController();
    const signal = controller.signal;
    const seedText = seed.value.trim();
    const page = new URLSearchParams([["model", model.id], ["seed", seedText], ...params()]);
    history.replaceState(null, "", `${root}/?${page}`);
    permalink.href = location.href;
    image.dataset.state = "loading";
    image.setAttribute("aria-busy", "true");
    busy.textContent = "Rendering...";
    try {
      const blob = await getBlob(`/v1/models/${model.id}/images/${encodeURIComponent(seedText)}.png`, { params: params(), signal });
      const objectUrl = await showBlob(image, blob);
      if (signal.aborted) return;
      errors.clear();
      image.alt = `Seed ${seedText} of ${model.name}`;
      download.href = objectUrl;
      download.download = `${model.name}-seed${seedText}.png`;
      download.removeAttribute("aria-disabled");
      image.dataset.state = "ready";
      image.dataset.query = page.toString();
      busy.textContent = "";
    } catch (error) {
      if (error.name === "AbortError" || signal.aborted) return;
      image.dataset.state = "error";
      busy.textContent = "";
      errors.show(error);
    } finally {
      if (!signal.aborted) image.removeAttribute("aria-busy");
    }
  }

  random.addEventListener("click", () => {
    seed.value = randomSeed();
    render();
  });
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(location.href);
      copy.textContent = "Copied";
    } catch {
      copy.textContent = "Copy blocked: use Permalink";
    }
  });
  for (const control of [seed, psi.input, cutoff.input, tx.input, ty.input, rotate.input]) {
    control.addEventListener("input", render);
  }
  for (const control of [noise, classSelect]) control.addEventListener("change", render);

  const controls = h(
    "form",
    { class: "controls", onsubmit: (e) => { e.preventDefault(); render(); } },
    picker.wrapper,
    h("div", { class: "row seed-row" }, field("Seed", seed), random),
    psi.wrapper,
    cutoff.wrapper,
    field("Noise", noise),
    classField,
    transform,
    directions.panel,
  );
  container.append(
    h(
      "div",
      { class: "split" },
      controls,
      h("section", { class: "output", "aria-label": "Image" }, errors.node, image, h("div", { class: "actions" }, download, permalink, copy, busy)),
    ),
  );
  setModel(picker.current(), query);
  cutoffFormat();
  await render();
}
