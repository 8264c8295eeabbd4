// The dashboard: asks for the API key when the server wants one, then polls the models and the
// overview every few seconds and draws them; actions are POSTs to the model routes.

import { ApiError, api, auth, events, modelPath } from "./api.js";
import { fill, h } from "./dom.js";
import { language, setLanguage, t, translate } from "./i18n.js";
import { renderLive } from "./live.js";
import { confirmUnload, renderMemory, renderModels } from "./models.js";
import { setModels, setupPlayground } from "./playground.js";

const POLL_MS = 2000;
const $ = (selector) => document.querySelector(selector);

const pending = new Set(); // models with an action on its way
let last = null; // the latest {models, overview}, redrawn when the language changes
let timer = null;

function toast(message, requestId) {
  const note = h("div", { class: "toast", role: "status" }, message, requestId ? h("code", {}, requestId) : null);
  $("#toasts").append(note);
  setTimeout(() => note.remove(), 8000);
}

function showKeyPrompt(refused = false) {
  clearTimeout(timer);
  timer = null;
  $("#dashboard").hidden = true;
  fill($("#models tbody")); // nothing the previous key could see stays in the page
  fill($("#devices"));
  $("#key-prompt").hidden = false;
  $("#forget-key").hidden = true;
  $("#key-error").hidden = !refused;
  $("#key-input").focus();
}

function setStatus(kind) {
  const pill = $("#server-status");
  pill.className = `pill ${kind}`;
  pill.dataset.status = kind;
  fill(pill, h("i", { class: "dot" }), t(kind === "ok" ? "ready" : kind === "closing" ? "shuttingDown" : "unreachable"));
}

function draw() {
  if (!last) return;
  const { models, overview } = last;
  $("#version").textContent = `v${overview.version}`;
  setStatus(overview.ready ? "ok" : "closing");
  const banner = $("#demo-banner");
  banner.hidden = overview.demo.length === 0;
  if (overview.demo.length) banner.textContent = t("demoBanner", { models: overview.demo.join(", ") });
  renderMemory($("#devices"), overview.devices, models);
  renderLive($("#live-card"), overview);
  renderModels($("#models tbody"), models, overview, pending, act);
  setModels($("#playground"), models);
}

async function poll() {
  clearTimeout(timer);
  try {
    const [list, overview] = await Promise.all([api("/v1/models"), api("/ui/api/overview")]);
    if (!auth.ready) return; // the key was forgotten while this poll was out
    const demo = new Set(overview.demo);
    last = { models: list.data.map((m) => ({ ...m, demo: demo.has(m.id) })), overview };
    draw();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return; // the key prompt is shown
    setStatus("down");
  }
  clearTimeout(timer); // polls started by an action end here too: one timer, one loop
  if (auth.ready && !$("#dashboard").hidden) timer = setTimeout(poll, POLL_MS);
}

async function act(id, action) {
  const model = last?.models.find((m) => m.id === id);
  if (!model) return;
  let query = "";
  if (action === "unload" && (model.status.in_flight || model.status.queued)) {
    if (!(await confirmUnload($("#confirm"), model))) return;
    query = "?wait_s=60";
  }
  pending.add(model.id);
  draw();
  setTimeout(poll, 150); // show "loading" while the load runs
  try {
    await api(`/v1/models/${modelPath(model.id)}/${action}${query}`, { method: "POST" });
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) toast(`${model.id}: ${error.message}`, error.requestId);
  } finally {
    pending.delete(model.id);
    poll();
  }
}

function start() {
  $("#key-prompt").hidden = true;
  $("#dashboard").hidden = false;
  $("#forget-key").hidden = !auth.required;
  poll();
}

function setup() {
  translate();
  $("#lang").textContent = t("otherLang");
  $("#lang").addEventListener("click", () => {
    setLanguage(language() === "zh" ? "en" : "zh");
    $("#lang").textContent = t("otherLang");
    draw();
  });
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("#key-input").value.trim();
    if (!key) return;
    auth.set(key);
    $("#key-input").value = "";
    start();
  });
  $("#forget-key").addEventListener("click", () => {
    auth.forget();
    last = null;
    showKeyPrompt();
  });
  events.addEventListener("unauthorized", () => {
    auth.forget();
    showKeyPrompt(true);
  });
  const dialog = $("#confirm");
  for (const button of dialog.querySelectorAll("button[value]")) button.addEventListener("click", () => dialog.close(button.value));
  setupPlayground($("#playground"));
  if (auth.ready) start();
  else showKeyPrompt();
}

setup();
