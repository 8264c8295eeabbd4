// Small DOM and formatting helpers. Text always goes in as text (textContent), never as markup.

import { t } from "./i18n.js";

/** An element: `h("button", {class: "primary", onclick: f}, "Load")`. */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  setProps(el, props);
  el.append(...nodes(children));
  return el;
}

/** An SVG element with attributes. */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) if (value !== undefined && value !== null) el.setAttribute(name, value);
  el.append(...nodes(children));
  return el;
}

function setProps(el, props) {
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "text") el.textContent = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : value);
  }
}

function nodes(children) {
  return children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false)
    .map((c) => (c instanceof Node ? c : document.createTextNode(String(c))));
}

/** Replace the children of `el` with `children`. */
export function fill(el, ...children) {
  el.replaceChildren(...nodes(children));
  return el;
}

/** Rebuild `el` only when `signature` changed since the last call (keeps focus and hover otherwise). */
export function update(el, signature, build) {
  const sig = typeof signature === "string" ? signature : JSON.stringify(signature);
  if (el.dataset.sig !== sig) {
    el.dataset.sig = sig;
    fill(el, build());
  }
  return el;
}

/** `1536` → "1.5 KiB", `0` → "0 B". */
export function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v >= 100 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

/** Seconds as "45 s", "4 m 10 s", "2 h 5 m". */
export function duration(seconds) {
  const sec = Math.max(0, Math.round(seconds));
  const [S, M, H] = [t("unitS"), t("unitM"), t("unitH")];
  if (sec < 60) return `${sec} ${S}`;
  if (sec < 3600) return `${Math.floor(sec / 60)} ${M} ${sec % 60} ${S}`;
  return `${Math.floor(sec / 3600)} ${H} ${Math.floor((sec % 3600) / 60)} ${M}`;
}

/** A rate or a count, short: "0", "3.2", "41", "1.2k". */
export function number(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  if (v >= 1000) return `${(v / 1000).toFixed(1)}k`;
  if (v >= 10 || Number.isInteger(v)) return String(Math.round(v));
  return v.toFixed(1);
}

/** Seconds as milliseconds below one second ("320 ms"), else "1.4 s". */
export function latency(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  return seconds < 1 ? `${Math.round(seconds * 1000)} ms` : `${seconds.toFixed(1)} s`;
}

/** "12 s ago" for a Unix time, measured against the server's clock. */
export function ago(unix, serverNow) {
  if (!unix) return t("never");
  return t("ago", { t: duration(serverNow - unix) });
}
