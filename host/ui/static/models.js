// The memory card (a bar per device) and the models table with its actions.

import { ago, bytes, duration, fill, h, update } from "./dom.js";
import { t } from "./i18n.js";

const COLORS = 6; // .c0 … .c5 in style.css
const ACTIVE = new Set(["loading", "offloading", "unloading", "downloading"]);

/** Bytes a model holds on each device, by device name ("cuda:0", "cpu"). */
function holdings(status) {
  const out = {};
  if (status.gpu_bytes && status.device && status.device !== "cpu") out[status.device] = status.gpu_bytes;
  if (status.host_bytes) out.cpu = status.host_bytes;
  return out;
}

function deviceLabel(device) {
  return device.kind === "host" ? t("hostRam") : t("gpu", { n: device.name.replace("cuda:", "") });
}

/** The memory card: one stacked bar per GPU and one for host RAM, each model in its colour. */
export function renderMemory(root, devices, models) {
  const color = new Map(models.map((m, i) => [m.id, `c${i % COLORS}`]));
  update(root, { devices, held: models.map((m) => [m.id, holdings(m.status)]), lang: t("hostRam") }, () =>
    devices.map((device) => {
      const held = models
        .map((m) => ({ id: m.id, bytes: holdings(m.status)[device.name] || 0 }))
        .filter((m) => m.bytes > 0);
      const scale = device.budget_bytes || Math.max(device.used_bytes, 1);
      const bar = h("div", { class: "bar", role: "img", "aria-label": `${deviceLabel(device)}: ${bytes(device.used_bytes)}` });
      for (const m of held) {
        const seg = h("span", { class: `seg ${color.get(m.id)}`, dataset: { model: m.id }, title: `${m.id}: ${bytes(m.bytes)}` });
        seg.style.width = `${Math.min(100, (100 * m.bytes) / scale)}%`;
        bar.append(seg);
      }
      const total = device.budget_bytes === null ? t("noBudget") : bytes(device.budget_bytes);
      return h(
        "div",
        { class: "device", dataset: { device: device.name } },
        h(
          "div",
          { class: "device-head" },
          h("span", { class: "device-name" }, deviceLabel(device), h("small", {}, device.name)),
          h("span", { class: "device-use" }, h("strong", {}, bytes(device.used_bytes)), " / ", total),
        ),
        bar,
        device.budget_bytes === null
          ? null
          : h("div", { class: "device-free" }, t("free", { bytes: bytes(Math.max(0, device.budget_bytes - device.used_bytes)) })),
        held.length
          ? h(
              "ul",
              { class: "legend" },
              held.map((m) => h("li", {}, h("i", { class: `chip ${color.get(m.id)}` }), m.id, h("span", {}, bytes(m.bytes)))),
            )
          : null,
      );
    }),
  );
}

/** A download's percent while the weights are being pulled (`weights.state: "downloading"` on the model
 * card, where the server can pull), else null. */
function downloadPercent(model) {
  const w = model.weights;
  if (!w || w.state !== "downloading") return null;
  if (typeof w.percent === "number") return w.percent;
  return w.total_bytes ? (100 * (w.done_bytes || 0)) / w.total_bytes : 0;
}

/** Whether the server can pull this model's weights now: it says where they are (`weights`, the
 * feature check) and they are not here. */
function pullable(model) {
  const w = model.weights;
  return Boolean(w && w.repo && ["absent", "demo", "failed"].includes(w.state));
}

function stateCell(model) {
  const percent = downloadPercent(model);
  const state = percent === null ? model.status.state : "downloading";
  return h(
    "span",
    { class: `state s-${state}`, dataset: { state } },
    h("i", { class: "dot" }),
    t(`state_${state}`),
    percent === null ? null : h("span", { class: "percent" }, ` ${percent.toFixed(0)}%`),
  );
}

function memoryCell(status, devices) {
  const held = holdings(status);
  const total = Object.values(held).reduce((a, b) => a + b, 0);
  if (!total) return h("span", { class: "muted" }, "—");
  const parts = Object.entries(held).map(([dev, n]) => `${dev === "cpu" ? "RAM" : dev} ${bytes(n)}`);
  const main = devices.find((d) => d.name === Object.keys(held)[0]);
  const bar = h("div", { class: "minibar" }, h("span", { class: "fill", dataset: { bytes: total } }));
  bar.firstChild.style.width = `${main && main.budget_bytes ? Math.min(100, (100 * total) / main.budget_bytes) : 100}%`;
  return [h("div", { class: "mem-text" }, parts.join(" + ")), bar];
}

function requestsCell(status) {
  if (!status.in_flight && !status.queued) return h("span", { class: "muted" }, t("idle"));
  return [
    status.in_flight ? h("span", { class: "busy" }, t("inFlight", { n: status.in_flight })) : null,
    status.queued ? h("span", { class: "queued" }, t("queued", { n: status.queued })) : null,
  ];
}

function keepAliveCell(status) {
  if (status.expires_in_s !== null && status.expires_in_s !== undefined) return t("left", { t: duration(status.expires_in_s) });
  if (status.keep_alive_s === null || status.keep_alive_s === undefined) return h("span", { class: "muted" }, t("forever"));
  return duration(status.keep_alive_s);
}

function actions(model, features, pending, onAction) {
  const { state, pinned } = model.status;
  const busy = pending.has(model.id) || ACTIVE.has(state) || downloadPercent(model) !== null;
  const button = (action, label, kind = "") =>
    h("button", { type: "button", class: `small ${kind}`, dataset: { action }, disabled: busy, onclick: () => onAction(model.id, action) }, t(label));
  const out = [];
  if (pullable(model)) out.push(button("pull", "pull"));
  if (["available", "offloaded", "failed"].includes(state)) out.push(button("load", "load", "primary"));
  if (["resident", "offloaded"].includes(state)) out.push(button("unload", "unload"));
  if (features.pin) out.push(button(pinned ? "unpin" : "pin", pinned ? "unpin" : "pin", pinned ? "on" : ""));
  if (pending.has(model.id)) out.unshift(h("span", { class: "spinner", "aria-label": t("working") }));
  return out;
}

/** The models table, a row per model keyed by id (cells are rebuilt only when they change, so an
 * action names its model by id: `onAction(id, action)`). */
export function renderModels(tbody, models, overview, pending, onAction) {
  const now = overview.server_time;
  const seen = new Set();
  for (const model of models) {
    seen.add(model.id);
    const st = model.status;
    let row = tbody.querySelector(`tr.model[data-model="${CSS.escape(model.id)}"]`);
    if (!row) {
      row = h("tr", { class: "model", dataset: { model: model.id } }, Array.from({ length: 8 }, () => h("td")));
      const error = h("tr", { class: "error-row", dataset: { errorFor: model.id }, hidden: true }, h("td", { colspan: 8 }));
      tbody.append(row, error);
    }
    const [name, state, placement, memory, requests, lastUsed, keepAlive, acts] = row.children;
    update(name, [model.id, model.task, model.aliases, model.demo, st.pinned, t("pinnedNote")], () => [
      h("div", { class: "model-name" }, model.id),
      h(
        "div",
        { class: "tags" },
        h("span", { class: `tag task-${model.task}` }, t(`task_${model.task}`)),
        model.demo ? h("span", { class: "tag demo" }, "DEMO") : null,
        st.pinned ? h("span", { class: "tag pinned" }, t("pinnedNote")) : null,
        model.aliases.length ? h("span", { class: "aliases" }, model.aliases.join(", ")) : null,
      ),
    ]);
    update(state, [st.state, downloadPercent(model), t("idle")], () => stateCell(model));
    update(placement, [st.placement, st.device], () =>
      st.placement
        ? [h("div", {}, st.placement), st.device && st.device !== st.placement ? h("small", { class: "muted" }, st.device) : null]
        : h("span", { class: "muted" }, "—"),
    );
    update(memory, [holdings(st), overview.devices.map((d) => d.budget_bytes)], () => memoryCell(st, overview.devices));
    update(requests, [st.in_flight, st.queued, t("idle")], () => requestsCell(st));
    update(lastUsed, [ago(st.last_used, now)], () => ago(st.last_used, now));
    update(keepAlive, [st.expires_in_s === null ? null : Math.round(st.expires_in_s), st.keep_alive_s, t("forever")], () => keepAliveCell(st));
    update(acts, [st.state, st.pinned, overview.features, pending.has(model.id), model.weights, t("load")], () =>
      h("div", { class: "actions" }, actions(model, overview.features, pending, onAction)),
    );
    const errorRow = row.nextElementSibling;
    const pullError = model.weights?.state === "failed" ? model.weights.error || t("failed") : null;
    errorRow.hidden = !st.error && !pullError;
    update(errorRow.firstChild, [st.error, st.error_request_id, pullError, t("errorTitle")], () => [
      st.error
        ? h(
            "div",
            { class: "model-error" },
            h("strong", {}, t("errorTitle")),
            " ",
            st.error,
            st.error_request_id ? h("span", { class: "rid" }, `${t("requestId")}: `, h("code", {}, st.error_request_id)) : null,
          )
        : null,
      pullError ? h("div", { class: "model-error" }, h("strong", {}, t("pullFailed")), " ", pullError) : null,
    ]);
  }
  for (const row of [...tbody.querySelectorAll("tr.model")]) {
    if (!seen.has(row.dataset.model)) {
      row.nextElementSibling.remove();
      row.remove();
    }
  }
}

/** Ask before unloading a busy model; resolves true when the operator confirms. */
export function confirmUnload(dialog, model) {
  fill(dialog.querySelector(".dialog-text"), t("confirmBusy", { model: model.id, running: model.status.in_flight, queued: model.status.queued }));
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
  });
}
