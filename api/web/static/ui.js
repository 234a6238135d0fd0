// Small helpers the pages share: building elements, showing errors in words, the model picker.

import { ApiError, getBlob, listAll } from "./api.js";

export const root = document.documentElement.dataset.root || "";

// h("label", { for: "x" }, "Seed") -> <label for="x">Seed</label>; `on*` attributes become listeners.
export function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

let uid = 0;
export function nextId(prefix) {
  uid += 1;
  return `${prefix}-${uid}`;
}

// A labelled control: field("Seed", input) -> <div class="field"><label for=..>Seed</label>input</div>.
export function field(label, control, hint) {
  if (!control.id) control.id = nextId("f");
  const parts = [h("label", { for: control.id }, label), control];
  if (hint) {
    const hintNode = h("small", { id: nextId("hint"), class: "hint" }, hint);
    control.setAttribute("aria-describedby", hintNode.id);
    parts.push(hintNode);
  }
  return h("div", { class: "field" }, parts);
}

// A slider with its value shown next to it; `format` turns the value into words.
export function slider(label, { min, max, step, value, name, format }) {
  const input = h("input", { type: "range", min, max, step, value, name });
  const output = h("output", { for: "" });
  const show = () => {
    output.textContent = format ? format(Number(input.value)) : input.value;
    input.setAttribute("aria-valuetext", output.textContent);
  };
  input.addEventListener("input", show);
  show();
  const wrapper = field(label, input);
  output.htmlFor = input.id;
  wrapper.classList.add("slider");
  wrapper.append(output);
  return { wrapper, input, refresh: show };
}

// Where a part of the page tells the person what went wrong: role=alert, so screen readers say it.
export function errorBox() {
  const node = h("p", { class: "error", role: "alert", hidden: true });
  return {
    node,
    show(error) {
      if (error?.name === "AbortError") return;
      node.textContent = describe(error);
      node.hidden = false;
    },
    clear() {
      node.textContent = "";
      node.hidden = true;
    },
  };
}

export function describe(error) {
  if (error instanceof ApiError) {
    if (error.status === 401) document.dispatchEvent(new CustomEvent("api-key-needed"));
    const title = error.title && error.status ? `${error.title} (${error.status})` : error.title;
    return title ? `${title}: ${error.message}` : error.message;
  }
  return error?.message || String(error);
}

export function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = "B";
  for (const next of units) {
    if (value < 1024) break;
    value /= 1024;
    unit = next;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${unit}`;
}

export function formatTime(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleString();
}

export function formatDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "unknown";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export function modelLabel(model) {
  const arch = model.architecture.replace("stylegan", "StyleGAN");
  const cond = model.c_dim ? `, ${model.c_dim} classes` : "";
  const demo = model.demo && !model.name.toLowerCase().includes("demo") ? " (demo)" : "";
  return `${model.name}${demo}: ${arch}, ${model.resolution} px${cond}`;
}

// The model picker: every model this key can use; `wanted` (a permalink's id) or else the demo selected.
export async function modelPicker(errors, wanted, onChange) {
  const select = h("select", { name: "model" });
  const wrapper = field("Model", select);
  let models = [];
  const byId = new Map();
  const load = async () => {
    select.replaceChildren(h("option", { value: "" }, "Loading models..."));
    try {
      models = await listAll("/v1/models");
    } catch (error) {
      errors.show(error);
      select.replaceChildren(h("option", { value: "" }, "No models could be listed"));
      return;
    }
    byId.clear();
    for (const model of models) byId.set(model.id, model);
    if (!models.length) {
      select.replaceChildren(h("option", { value: "" }, "No models yet: upload one in the Library"));
      return;
    }
    select.replaceChildren(...models.map((m) => h("option", { value: m.id }, modelLabel(m))));
    const chosen = byId.get(wanted) || models.find((m) => m.demo) || models[0];
    select.value = chosen.id;
  };
  await load();
  select.addEventListener("change", () => onChange(byId.get(select.value)));
  return {
    wrapper,
    select,
    current: () => byId.get(select.value) || null,
  };
}

export function seedList(text, name) {
  const seeds = [];
  for (const part of text.split(",")) {
    const item = part.trim();
    if (!item) continue;
    const range = item.match(/^(\d+)\s*-\s*(\d+)$/);
    if (range) {
      const [a, b] = [Number(range[1]), Number(range[2])];
      if (b < a || b - a > 64) throw new Error(`${name}: the range ${item} must go up, by at most 64 seeds`);
      for (let s = a; s <= b; s++) seeds.push(s);
    } else if (/^\d+$/.test(item)) {
      seeds.push(Number(item));
    } else {
      throw new Error(`${name}: "${item}" is not a seed (whole numbers, "1,2,3" or "0-5")`);
    }
  }
  return seeds;
}

export function randomSeed() {
  const buffer = new Uint32Array(1);
  crypto.getRandomValues(buffer);
  return buffer[0];
}

// Show an image fetched with the API key: the old picture stays until the new one is decoded (no
// flicker), and the superseded object URL is released.
export async function showBlob(img, blob) {
  const next = URL.createObjectURL(blob);
  const probe = new Image();
  probe.src = next;
  await probe.decode();
  const previous = img.dataset.objectUrl;
  img.src = next;
  img.dataset.objectUrl = next;
  if (previous) URL.revokeObjectURL(previous);
  return next;
}

export async function loadImage(img, path, options) {
  const blob = await getBlob(path, options);
  return showBlob(img, blob);
}

// A progress bar with words beside it.
export function progressBar(label) {
  const bar = h("progress", { max: 1, value: 0 });
  const text = h("span", { class: "progress-text", role: "status" }, "");
  const wrapper = h("div", { class: "progress", hidden: true }, h("span", { class: "progress-label" }, label), bar, text);
  bar.setAttribute("aria-label", label);
  return {
    wrapper,
    set(fraction, words) {
      wrapper.hidden = false;
      if (fraction === null) bar.removeAttribute("value");
      else bar.value = Math.max(0, Math.min(1, fraction));
      text.textContent = words || "";
    },
    hide() {
      wrapper.hidden = true;
    },
  };
}
