// The live card: requests/s, tokens/s, time to first token and queue depth over the last minutes.

import { fill, h, latency, number, s } from "./dom.js";
import { t } from "./i18n.js";

const W = 300;
const H = 64;

/** What each chart shows: its title, the series (main, then faint) and how its headline is written. */
const CHARTS = [
  { id: "requests", title: "requestsPerS", help: "requestsPerSHelp", series: ["requests_per_s"], format: number, headline: recentMean },
  { id: "tokens", title: "tokensPerS", help: "tokensPerSHelp", series: ["generated_tokens_per_s", "prompt_tokens_per_s"], format: number, headline: recentMean },
  { id: "ttft", title: "ttft", help: "ttftHelp", series: ["ttft_s"], format: latency, headline: recentMean },
  { id: "queue", title: "queue", help: "queueHelp", series: ["queued", "in_flight"], format: number },
];

/** The mean of the non-empty values of the last minute: a rate over one minute, as Prometheus would
 * write it, and time to first token (which comes in bursts). */
function recentMean(points, key, now) {
  const values = points.filter((p) => p.t >= now - 60 && p[key] !== null).map((p) => p[key]);
  return values.length ? values.reduce((a, b) => a + b, 0) / values.length : null;
}

function path(points, key, start, span, top) {
  let d = "";
  let pen = false;
  for (const p of points) {
    const v = p[key];
    if (v === null || v === undefined) {
      pen = false;
      continue;
    }
    const x = ((p.t - start) / span) * W;
    const y = H - 2 - (v / top) * (H - 6);
    d += `${pen ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
    pen = true;
  }
  return d;
}

function chart(spec, points, now, window) {
  const start = now - window;
  const values = spec.series.flatMap((k) => points.map((p) => p[k])).filter((v) => typeof v === "number");
  const top = Math.max(...values, spec.id === "ttft" ? 0.05 : 1) * 1.15;
  const graph = s("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", class: "spark", "aria-hidden": "true" });
  graph.append(s("line", { x1: 0, x2: W, y1: H - 1, y2: H - 1, class: "axis" }));
  spec.series.forEach((key, i) => {
    const d = path(points, key, start, window, top);
    if (!d) return;
    if (i === 0 && spec.id !== "ttft") {
      const area = `${d}L${W},${H - 1}L${d.slice(1).split(",")[0]},${H - 1}Z`;
      graph.append(s("path", { d: area, class: "area" }));
    }
    graph.append(s("path", { d, class: i === 0 ? "line" : "line faint", "vector-effect": "non-scaling-stroke" }));
  });
  const last = points.length ? points[points.length - 1] : null;
  const head = spec.headline ? spec.headline(points, spec.series[0], now) : last ? last[spec.series[0]] : null;
  return h(
    "div",
    { class: "chart", dataset: { chart: spec.id } },
    h("div", { class: "chart-title" }, t(spec.title), spec.help ? h("small", {}, t(spec.help)) : null),
    h("div", { class: "chart-value" }, spec.format(head)),
    graph,
  );
}

/** Draw the four charts from the overview's history. */
export function renderLive(root, overview) {
  const points = overview.history;
  const window = Math.max(60, points.length ? overview.server_time - points[0].t : 60);
  const minutes = Math.max(1, Math.round(window / 60));
  fill(root.querySelector(".card-help"), minutes === 1 ? t("liveHelpOne") : t("liveHelp", { minutes }));
  fill(root.querySelector(".charts"), CHARTS.map((spec) => chart(spec, points, overview.server_time, window)));
}
