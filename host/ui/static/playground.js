// The playground: a streamed chat (reasoning apart), an embeddings similarity matrix, a rerank ranking.

import { ApiError, api, stream } from "./api.js";
import { fill, h, latency, number } from "./dom.js";
import { t } from "./i18n.js";

const $ = (root, selector) => root.querySelector(selector);

/** Keep each model picker's options in step with the declared models of its task. */
export function setModels(root, models) {
  for (const select of root.querySelectorAll("select[data-task]")) {
    const ids = models.filter((m) => m.task === select.dataset.task).map((m) => m.id);
    if (select.dataset.ids === ids.join("\n")) continue;
    const keep = select.value;
    select.dataset.ids = ids.join("\n");
    fill(select, ids.map((id) => h("option", { value: id }, id)));
    if (ids.includes(keep)) select.value = keep;
    const form = select.closest("form");
    for (const b of form.querySelectorAll("button[type=submit]")) b.disabled = ids.length === 0;
    fill($(form, ".no-model"), ids.length ? "" : t("noModel", { task: t(`task_${select.dataset.task}`) }));
  }
}

function showError(box, error) {
  const rid = error instanceof ApiError && error.requestId ? ` (${t("requestId")} ${error.requestId})` : "";
  fill(box, h("div", { class: "alert" }, h("strong", {}, `${t("failed")}: `), `${error.message}${rid}`));
}

// -- chat ---------------------------------------------------------------------------------------------

function chatTurn(role, text) {
  return h("div", { class: `msg ${role}` }, h("div", { class: "who" }, t(role === "user" ? "you" : "assistant")), h("div", { class: "content" }, text));
}

function setupChat(root) {
  const form = $(root, "#chat-form");
  const log = $(root, "#chat-log");
  const input = $(form, "textarea");
  const stop = $(form, "[data-role=stop]");
  const history = [];
  let controller = null;

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  stop.addEventListener("click", () => controller?.abort());
  $(form, "[data-role=clear]").addEventListener("click", () => {
    controller?.abort();
    history.length = 0;
    fill(log);
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const prompt = input.value.trim();
    if (!prompt || controller) return;
    input.value = "";
    history.push({ role: "user", content: prompt });
    log.append(chatTurn("user", prompt));
    const reply = chatTurn("assistant", "");
    const thinking = h("details", { class: "thinking", open: true, hidden: true }, h("summary", {}, t("thinking")), h("div", { class: "reasoning" }));
    const content = $(reply, ".content");
    content.before(thinking);
    content.classList.add("streaming");
    const stats = h("div", { class: "stats" });
    reply.append(stats);
    log.append(reply);
    log.scrollTop = log.scrollHeight;

    controller = new AbortController();
    form.classList.add("running");
    const started = performance.now();
    let first = null;
    let tokens = null; // from the usage chunk (stream_options.include_usage)
    let answer = "";
    try {
      const body = {
        model: $(form, "select").value,
        messages: history,
        stream: true,
        stream_options: { include_usage: true },
        max_tokens: Number($(form, "[name=max_tokens]").value) || 256,
        temperature: Number($(form, "[name=temperature]").value),
      };
      for await (const chunk of stream("/v1/chat/completions", body, controller.signal)) {
        if (chunk.usage) tokens = chunk.usage.completion_tokens;
        const delta = chunk.choices?.[0]?.delta;
        if (!delta) continue;
        const reasoning = delta.reasoning_content ?? delta.reasoning;
        if (reasoning) {
          thinking.hidden = false;
          $(thinking, ".reasoning").append(reasoning);
        }
        if (delta.content) {
          first ??= performance.now();
          answer += delta.content;
          content.append(delta.content);
        }
        if (first === null && reasoning) first = performance.now();
        log.scrollTop = log.scrollHeight;
      }
      history.push({ role: "assistant", content: answer });
      const seconds = first === null ? null : (performance.now() - first) / 1000;
      const ttft = latency(first === null ? null : (first - started) / 1000);
      const rate = number(seconds && tokens !== null ? tokens / seconds : null);
      fill(stats, t("chatStats", { tokens: tokens ?? "—", ttft, rate }));
    } catch (error) {
      if (error.name === "AbortError") {
        history.push({ role: "assistant", content: answer });
      } else {
        history.pop();
        showError(stats, error);
      }
    } finally {
      content.classList.remove("streaming");
      if (!thinking.hidden && answer) thinking.open = false;
      form.classList.remove("running");
      controller = null;
      input.focus();
    }
  });
}

// -- embeddings ------------------------------------------------------------------------------------------

function cosine(a, b) {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i += 1) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / (Math.sqrt(na * nb) || 1);
}

function lines(textarea) {
  return textarea.value.split("\n").map((l) => l.trim()).filter(Boolean);
}

async function busy(form, out, work) {
  const button = $(form, "button[type=submit]");
  button.disabled = true;
  form.classList.add("running");
  fill(out, h("div", { class: "muted" }, t("working")));
  try {
    fill(out, await work());
  } catch (error) {
    showError(out, error);
  } finally {
    button.disabled = false;
    form.classList.remove("running");
  }
}

function setupEmbeddings(root) {
  const form = $(root, "#embed-form");
  const out = $(root, "#embed-out");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const inputs = lines($(form, "textarea")).slice(0, 12);
    if (!inputs.length) return;
    busy(form, out, async () => {
      const answer = await api("/v1/embeddings", { method: "POST", body: { model: $(form, "select").value, input: inputs, encoding_format: "float" } });
      const vectors = answer.data.sort((a, b) => a.index - b.index).map((d) => d.embedding);
      const label = (i) => h("th", { scope: "row", title: inputs[i] }, h("span", { class: "idx" }, i + 1), inputs[i]);
      return [
        h("div", { class: "out-title" }, t("similarity"), h("small", {}, `${vectors[0].length}-d · ${answer.usage.prompt_tokens} tokens`)),
        h(
          "table",
          { class: "matrix" },
          h("thead", {}, h("tr", {}, h("th"), inputs.map((_, j) => h("th", { scope: "col", title: inputs[j] }, j + 1)))),
          h(
            "tbody",
            {},
            vectors.map((a, i) =>
              h(
                "tr",
                {},
                label(i),
                vectors.map((b) => {
                  const sim = cosine(a, b);
                  const cell = h("td", { class: "sim", title: sim.toFixed(4) }, sim.toFixed(2));
                  cell.style.setProperty("--sim", Math.max(0, Math.min(1, sim)).toFixed(3));
                  return cell;
                }),
              ),
            ),
          ),
        ),
      ];
    });
  });
}

// -- rerank ------------------------------------------------------------------------------------------------

function setupRerank(root) {
  const form = $(root, "#rerank-form");
  const out = $(root, "#rerank-out");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const documents = lines($(form, "textarea")).slice(0, 50);
    const query = $(form, "[name=query]").value.trim();
    if (!documents.length || !query) return;
    busy(form, out, async () => {
      const answer = await api("/v1/rerank", { method: "POST", body: { model: $(form, "select").value, query, documents } });
      const top = Math.max(...answer.results.map((r) => r.relevance_score), 1e-9);
      return h(
        "ol",
        { class: "ranking" },
        answer.results.map((r, rank) => {
          const bar = h("span", { class: "fill" });
          bar.style.width = `${Math.max(2, (100 * r.relevance_score) / top)}%`;
          return h(
            "li",
            { dataset: { index: r.index } },
            h("span", { class: "rank" }, rank + 1),
            h("div", { class: "doc" }, h("div", {}, documents[r.index]), h("div", { class: "scorebar" }, bar)),
            h("span", { class: "score", title: t("score") }, r.relevance_score.toFixed(4)),
          );
        }),
      );
    });
  });
}

/** Wire the three tabs and their forms. */
export function setupPlayground(root) {
  const tabs = [...root.querySelectorAll("[role=tab]")];
  for (const tab of tabs) {
    tab.addEventListener("click", () => {
      for (const other of tabs) {
        const selected = other === tab;
        other.setAttribute("aria-selected", String(selected));
        $(root, `#${other.getAttribute("aria-controls")}`).hidden = !selected;
      }
    });
  }
  setupChat(root);
  setupEmbeddings(root);
  setupRerank(root);
}
