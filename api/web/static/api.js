// The page's only way to the service: the public HTTP API under /v1, exactly as a script would call it.
// Every failure becomes an ApiError whose message is the problem+json `detail` (RFC 9457), so the page
// can show it in words.

const root = document.documentElement.dataset.root || "";
const KEY_STORAGE = "stylegan.apiKey";

export class ApiError extends Error {
  constructor(status, title, detail) {
    super(detail || title || `HTTP ${status}`);
    this.status = status;
    this.title = title;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(value) {
  if (value) sessionStorage.setItem(KEY_STORAGE, value);
  else sessionStorage.removeItem(KEY_STORAGE);
}

export function url(path, params) {
  const query = new URLSearchParams();
  for (const [name, value] of params || []) {
    if (value !== undefined && value !== null && value !== "") query.append(name, String(value));
  }
  const text = query.toString();
  return root + path + (text ? `?${text}` : "");
}

function headers(extra) {
  const out = { ...(extra || {}) };
  const key = apiKey();
  if (key) out.Authorization = `Bearer ${key}`;
  return out;
}

async function problemOf(response) {
  let title = response.statusText;
  let detail = "";
  try {
    const body = await response.json();
    title = body.title || title;
    detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch {
    detail = `the service answered ${response.status} ${response.statusText}`;
  }
  return new ApiError(response.status, title, detail);
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    });
  });
}

// A few retries on 429 (this caller asks too fast: sliders do) and 503 (the service is busy), after the
// Retry-After the service names; anything else is reported at once.
export async function request(method, path, { params, json, body, signal, accept } = {}) {
  const init = { method, signal, headers: headers(accept ? { Accept: accept } : {}) };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
  }
  for (let attempt = 0; ; attempt++) {
    let response;
    try {
      response = await fetch(url(path, params), init);
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, "Network error", "the service cannot be reached; is `stylegan serve` running?");
    }
    if ((response.status === 429 || response.status === 503) && attempt < 4 && method === "GET") {
      const wait = Number(response.headers.get("Retry-After")) || 1;
      await sleep(Math.min(wait, 5) * 1000, signal);
      continue;
    }
    if (!response.ok) throw await problemOf(response);
    return response;
  }
}

export async function getJson(path, options) {
  return (await request("GET", path, options)).json();
}

export async function sendJson(method, path, json) {
  const response = await request(method, path, { json });
  return response.status === 204 ? null : response.json();
}

export async function getBlob(path, options) {
  return (await request("GET", path, options)).blob();
}

// Every item of a paged list (`items`, `total`, `limit`, `offset`).
export async function listAll(path) {
  const items = [];
  for (let offset = 0; ; ) {
    const page = await getJson(path, { params: [["limit", 100], ["offset", offset]] });
    items.push(...page.items);
    offset += page.items.length;
    if (!page.items.length || offset >= page.total) return items;
  }
}

// An upload with progress: fetch() cannot report how much of a request body went out, XMLHttpRequest can.
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url(path));
    const key = apiKey();
    if (key) xhr.setRequestHeader("Authorization", `Bearer ${key}`);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new ApiError(xhr.status, body?.title || xhr.statusText, body?.detail || `HTTP ${xhr.status}`));
    });
    xhr.addEventListener("error", () =>
      reject(new ApiError(0, "Network error", "the upload did not reach the service")),
    );
    xhr.send(form);
  });
}

// A job's Server-Sent Events. EventSource cannot send an Authorization header, so the stream is read
// with fetch; `Last-Event-ID` resumes it after a dropped connection, as the API documents.
export async function followEvents(jobId, onEvent, signal) {
  let lastId = null;
  for (let attempt = 0; attempt < 30; attempt++) {
    const extra = lastId === null ? {} : { "Last-Event-ID": lastId };
    let response;
    try {
      response = await fetch(url(`/v1/jobs/${jobId}/events`), {
        headers: headers({ Accept: "text/event-stream", ...extra }),
        signal,
      });
    } catch (error) {
      if (error.name === "AbortError") return;
      await sleep(2000, signal);
      continue;
    }
    if (!response.ok) throw await problemOf(response);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let finished = false;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const fields = {};
          for (const line of frame.split("\n")) {
            if (!line || line.startsWith(":")) continue;
            const colon = line.indexOf(":");
            const name = colon < 0 ? line : line.slice(0, colon);
            const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
            fields[name] = fields[name] === undefined ? text : `${fields[name]}\n${text}`;
          }
          if (fields.id !== undefined) lastId = fields.id;
          if (fields.event === undefined || fields.data === undefined) continue;
          const data = JSON.parse(fields.data);
          onEvent(fields.event, data);
          if (fields.event === "state" && ["succeeded", "failed", "canceled"].includes(data.state)) {
            finished = true;
          }
        }
      }
    } catch (error) {
      if (error.name === "AbortError") return;
    }
    // The server closes the stream after the terminal state; any other end is a drop to resume from.
    if (finished) return;
    const job = await getJson(`/v1/jobs/${jobId}`, { signal });
    if (["succeeded", "failed", "canceled"].includes(job.state)) {
      onEvent("state", { state: job.state, ...(job.error ? { error: job.error } : {}) });
      return;
    }
    await sleep(1000, signal);
  }
}

// What this service offers, from its OpenAPI document: the page asks for an optional route (editing
// directions) only where it exists, instead of learning it from a 404.
let paths = null;
export async function hasRoute(path) {
  if (paths === null) {
    try {
      const response = await fetch(`${root}/openapi.json`);
      paths = response.ok ? Object.keys((await response.json()).paths || {}) : [];
    } catch {
      paths = [];
    }
  }
  const shape = (p) => p.replace(/\{[^}]*\}/g, "{}");
  return paths.some((p) => shape(p) === shape(path));
}
