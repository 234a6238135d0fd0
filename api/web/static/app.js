// The entry module of every page: navigation, the API-key field, then the page's own module.

import { apiKey, request, setApiKey } from "./api.js";

const PAGES = {
  generate: "./generate.js",
  mix: "./mix.js",
  walk: "./walk.js",
  project: "./project.js",
  train: "./train.js",
  job: "./job.js",
  library: "./library.js",
};

const page = document.documentElement.dataset.page;
for (const link of document.querySelectorAll("[data-nav]")) {
  const current = link.dataset.nav === page || (page === "job" && link.dataset.nav === "train");
  if (current) link.setAttribute("aria-current", "page");
}

const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("api-key");
const keyNeeded = document.getElementById("key-needed");

function showKeyField(needed) {
  keyForm.hidden = false;
  keyNeeded.hidden = !needed;
}

keyInput.value = apiKey();
keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  setApiKey(keyInput.value.trim());
  // The page's lists and images depend on the key: start again with it.
  location.reload();
});
document.addEventListener("api-key-needed", () => showKeyField(true));

// The field is shown only when the service has keys on: an unauthenticated list answers 401 then.
async function probeKeys() {
  if (apiKey()) showKeyField(false);
  try {
    await request("GET", "/v1/models", { params: [["limit", 1]] });
  } catch (error) {
    if (error.status === 401) showKeyField(true);
  }
}

await probeKeys();
const module = await import(PAGES[page] || PAGES.generate);
await module.mount(document.getElementById("page"));
document.documentElement.dataset.ready = "true";
