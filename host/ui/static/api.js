// Talking to the host: the API key (session storage), JSON calls, and OpenAI's server-sent events.

const KEY = "plughost.key";

/** The API key: whether the server wants one (said by the page), and the one this tab holds. */
export const auth = {
  required: document.querySelector('meta[name="plughost-auth"]')?.content === "key",
  get key() {
    return sessionStorage.getItem(KEY);
  },
  set(key) {
    sessionStorage.setItem(KEY, key);
  },
  forget() {
    sessionStorage.removeItem(KEY);
  },
  /** Whether requests can be made now (no key needed, or one is held). */
  get ready() {
    return !this.required || Boolean(this.key);
  },
};

/** Fired with no detail when the server answers 401 (the key is gone or wrong). */
export const events = new EventTarget();

/** An error answer of the API, with its OpenAI envelope's message and the request id. */
export class ApiError extends Error {
  constructor(message, { status = 0, code = null, requestId = null } = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.requestId = requestId;
  }
}

function headers(json) {
  const out = { Accept: json ? "application/json" : "text/event-stream" };
  if (auth.key) out.Authorization = `Bearer ${auth.key}`;
  return out;
}

async function send(path, { method = "GET", body, signal, json = true } = {}) {
  const init = { method, headers: headers(json), signal, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.ok) return response;
  const requestId = response.headers.get("x-request-id");
  let message = `HTTP ${response.status}`;
  let code = null;
  try {
    const envelope = await response.json();
    message = envelope.error?.message || message;
    code = envelope.error?.code || null;
  } catch {
    // not the OpenAI envelope (a proxy's page): keep the status line
  }
  if (response.status === 401) events.dispatchEvent(new Event("unauthorized"));
  throw new ApiError(message, { status: response.status, code, requestId });
}

/** A JSON call: resolves to the decoded body, rejects with an {@link ApiError}. */
export async function api(path, options = {}) {
  const response = await send(path, options);
  return response.json();
}

/** A path segment per part of a model id (hub-style ids keep their slash). */
export function modelPath(id) {
  return id.split("/").map(encodeURIComponent).join("/");
}

/**
 * POST `body` and yield each `data:` event of the streamed answer as decoded JSON until `[DONE]`.
 * An `{"error": ...}` event (the host's streamed error) is thrown as an {@link ApiError}.
 */
export async function* stream(path, body, signal) {
  const response = await send(path, { method: "POST", body, signal, json: false });
  const requestId = response.headers.get("x-request-id");
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replaceAll("\r\n", "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).trimStart())
          .join("\n");
        if (!data) continue; // a keep-alive comment while the model loads
        if (data === "[DONE]") return;
        const event = JSON.parse(data);
        if (event.error) throw new ApiError(event.error.message, { code: event.error.code, requestId });
        yield event;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}
