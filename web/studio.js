// The prompt studio: a course's versions and labels, an editor whose errors show as you type,
// a line diff of two versions, a preview of the prompt a learner would get, the eval cases,
// replays of real turns, experiments, promotion and rollback. Every call carries the token.
(function () {
  "use strict";

  const { $, el, notice, callApi, failureMessage, startWithToken } = window.CompanionStaff;
  const TOKEN_KEY = "companion-studio-token";
  const state = { token: null, course: null, template: "system", overview: null, selected: null, head: null, replay: null, poll: null };
  const api = (path, options) => callApi(state.token, path, options);

  function short(id) {
    if (!id) return "";
    return id.startsWith("default:") ? id : id.slice(-8);
  }

  const coursePath = (rest) => `/api/v1/courses/${encodeURIComponent(state.course)}${rest}`;
  const templatePath = (rest) => coursePath(`/prompts/${state.template}${rest}`);

  // The claims of a token, read only to prefill the course; the server checks everything.
  function claimsOf(token) {
    try {
      const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(part));
    } catch {
      return {};
    }
  }

  // ---- versions, labels, promotion ----

  function templateView() {
    return state.overview.templates.find((t) => t.template === state.template);
  }

  function allVersions() {
    const view = templateView();
    return [{ id: view.default_version, message: "the shipped default", author: "companion" }, ...view.versions];
  }

  // Previews, evals and replays are of system prompts; experiments split the answer's templates
  // only (a coaching note or a digest is chosen by label).
  function showPanels() {
    for (const panel of document.querySelectorAll("[data-templates]")) {
      panel.hidden = !panel.dataset.templates.split(" ").includes(state.template);
    }
  }

  async function loadOverview() {
    state.overview = await api(coursePath("/prompts"));
    showPanels();
    const view = templateView();
    state.head = view.head;
    const labels = view.labels.map((l) => `${l.label} → ${short(l.version)}`).join(", ");
    $("labels").textContent = labels ? `Labels: ${labels}` : "No label: the shipped default serves.";
    const list = $("version-list");
    list.replaceChildren();
    for (const version of allVersions()) {
      const tags = view.labels.filter((l) => l.version === version.id).map((l) => el("span", { class: "label", text: l.label }));
      list.append(el("li", {
        class: "version" + (version.id === state.selected ? " selected" : ""),
        "data-version": version.id,
        onclick: () => select(version.id),
      },
      el("div", {}, el("span", { class: "id", text: short(version.id) }), tags),
      el("div", { class: "meta", text: `${version.author}: ${version.message}` })));
    }
    for (const id of ["diff-a", "diff-b", "exp-a", "exp-b"]) {
      const box = $(id);
      const kept = box.value;
      box.replaceChildren(...allVersions().map((v) => el("option", { value: v.id, text: `${short(v.id)} · ${v.message}` })));
      if (kept) box.value = kept;
    }
    await loadExperiments();
  }

  async function select(id) {
    state.selected = id;
    const version = await api(templatePath(`/versions/${encodeURIComponent(id)}`));
    $("editor").value = version.text;
    $("editing").textContent = `from ${short(id)}`;
    for (const item of document.querySelectorAll(".version")) {
      item.classList.toggle("selected", item.dataset.version === id);
    }
    validate();
  }

  async function promote() {
    if (!state.selected) return notice("Select a version first.");
    try {
      await api(templatePath("/labels/production"), { method: "PUT", body: JSON.stringify({ version: state.selected }) });
      notice(`production now points at ${short(state.selected)}.`);
      await loadOverview();
    } catch (e) { notice(e.message); }
  }

  async function rollback() {
    try {
      const moved = await api(templatePath("/labels/production/rollback"), { method: "POST", body: "{}" });
      notice(`production rolled back to ${moved.to ? short(moved.to) : "the shipped default"}.`);
      await loadOverview();
    } catch (e) { notice(e.message); }
  }

  // ---- the editor ----

  let validateTimer = null;
  function validate() {
    clearTimeout(validateTimer);
    validateTimer = setTimeout(async () => {
      const box = $("validation");
      try {
        const result = await api(templatePath("/validate"), { method: "POST", body: JSON.stringify({ text: $("editor").value }) });
        box.className = "validation " + (result.valid ? "ok" : "bad");
        box.textContent = result.valid ? "No error: this text can be saved." :
          (result.line ? `Line ${result.line}: ${result.message}` : result.message);
      } catch (e) {
        box.className = "validation bad";
        box.textContent = e.message;
      }
    }, 250);
  }

  async function save() {
    try {
      const saved = await api(templatePath("/versions"), {
        method: "POST",
        body: JSON.stringify({ text: $("editor").value, message: $("message").value, parent: state.head || undefined }),
      });
      notice(`Saved as ${short(saved.id)}.`);
      state.selected = saved.id;
      await loadOverview();
    } catch (e) { notice(e.message); }
  }

  // ---- the diff: a longest-common-subsequence over lines ----

  function lineDiff(a, b) {
    const x = a.split("\n"), y = b.split("\n");
    const n = x.length, m = y.length;
    const table = Array.from({ length: n + 1 }, () => new Array(m + 1).fill(0));
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        table[i][j] = x[i] === y[j] ? table[i + 1][j + 1] + 1 : Math.max(table[i + 1][j], table[i][j + 1]);
      }
    }
    const out = [];
    let i = 0, j = 0;
    while (i < n && j < m) {
      if (x[i] === y[j]) { out.push(["same", x[i]]); i++; j++; }
      else if (table[i + 1][j] >= table[i][j + 1]) out.push(["del", x[i++]]);
      else out.push(["add", y[j++]]);
    }
    while (i < n) out.push(["del", x[i++]]);
    while (j < m) out.push(["add", y[j++]]);
    return out;
  }

  async function showDiff() {
    try {
      const [a, b] = await Promise.all(["diff-a", "diff-b"].map((id) =>
        api(templatePath(`/versions/${encodeURIComponent($(id).value)}`))));
      const lines = lineDiff(a.text, b.text);
      const sign = { same: "  ", add: "+ ", del: "- " };
      $("diff").replaceChildren(...lines.map(([kind, text]) => el("span", { class: kind, text: sign[kind] + text })));
    } catch (e) { notice(e.message); }
  }

  // ---- preview, eval ----

  function promptView(view) {
    const parts = el("table", {}, el("tr", {}, el("th", { text: "part" }), el("th", { text: "tokens" })),
      view.parts.filter((p) => p.tokens > 0).map((p) => el("tr", {}, el("td", { text: p.part }), el("td", { text: p.tokens }))));
    const dropped = view.dropped.length
      ? el("ul", {}, view.dropped.map((d) => el("li", { text: `${d.part}: ${d.dropped} of ${d.of} left out ${d.detail.join("; ")}` })))
      : el("p", { class: "meta", text: "The budget left nothing out." });
    return el("div", { class: "prompt-view" },
      el("p", { class: "meta", text: `${view.tokens} of ${view.limit} tokens` }),
      view.messages.map((m) => el("div", { class: "prompt-message " + m.role },
        el("strong", { text: `${m.role} · ${m.tokens} tokens` }), el("pre", { text: m.content }))),
      parts, el("h3", { text: "Left out" }), dropped);
  }

  async function preview() {
    const box = $("preview");
    box.textContent = "Assembling…";
    try {
      const view = await api(templatePath("/preview"), {
        method: "POST",
        body: JSON.stringify({ text: $("editor").value, learner: $("preview-learner").value.trim(), question: $("preview-question").value }),
      });
      box.replaceChildren(promptView(view));
    } catch (e) { box.textContent = e.message; }
  }

  async function runEval() {
    const box = $("eval-result");
    box.textContent = "Running the eval cases…";
    try {
      const report = await api(templatePath("/eval"), { method: "POST", body: JSON.stringify({ text: $("editor").value }) });
      const cell = (v) => el("td", { class: v.failed.length ? "fail" : "pass",
        text: v.failed.length ? `fail: ${v.failed.join(", ")}` : "pass" + (v.skipped.length ? ` (skipped ${v.skipped.join(", ")})` : "") });
      const rows = report.cases.map((c) => el("tr", { class: "eval-case" }, el("td", { text: c.id }), cell(c.baseline), cell(c.candidate)));
      const verdict = report.regressions.length
        ? el("p", { class: "fail eval-verdict", text: `Regressions: ${report.regressions.join(", ")}` })
        : el("p", { class: "pass eval-verdict", text: "No regression against the shipped prompt." });
      box.replaceChildren(
        el("p", { class: "meta", text: `model: ${report.model}${report.offline ? " (no model configured: a deterministic fake that follows the prompt's plain instructions)" : ""}` }),
        el("table", {}, el("tr", {}, el("th", { text: "case" }), el("th", { text: report.baseline }), el("th", { text: "candidate" })), rows),
        verdict);
    } catch (e) { box.textContent = e.message; }
  }

  // ---- replays ----

  function dayMs(value, endOfDay) {
    if (!value) return undefined;
    return Date.parse(value + "T00:00:00Z") + (endOfDay ? 86400000 : 0);
  }

  async function startReplay() {
    if (!state.selected) return notice("Select the candidate version in the list first.");
    const filter = {
      thumbs_down: $("replay-down").checked,
      flagged: $("replay-flagged").checked,
      from_ms: dayMs($("replay-from").value, false),
      to_ms: dayMs($("replay-to").value, true),
      prompt_version: $("replay-version").value.trim() || undefined,
      limit: Number($("replay-limit").value) || undefined,
    };
    try {
      const replay = await api(coursePath("/replays"), { method: "POST", body: JSON.stringify({ candidate: state.selected, filter }) });
      state.replay = replay.id;
      showReplay(replay);
      pollReplay();
    } catch (e) { $("replay-result").textContent = e.message; }
  }

  function showReplay(replay) {
    $("replay-cancel").hidden = replay.status !== "running";
    const head = el("p", { class: "progress", text: `${replay.status}: ${replay.done_turns} of ${replay.total_turns} turns · candidate ${short(replay.candidate)} · ${replay.model}${replay.offline ? " (no model configured: a deterministic fake, not a real model)" : ""}` });
    const rows = replay.turns.map((t) => el("tr", { class: "replay-turn", "data-status": t.status },
      el("td", { text: t.question }),
      el("td", {}, el("div", { class: "answer original", text: t.original })),
      el("td", {}, el("div", { class: "answer candidate", text: t.candidate || (t.error ? `failed: ${t.error}` : t.status) }))));
    const more = replay.next !== null && replay.next !== undefined
      ? [el("p", { class: "meta", text: "More turns: the API pages them (?after=)." })] : [];
    $("replay-result").replaceChildren(head,
      el("table", {}, el("tr", {}, el("th", { text: "question" }), el("th", { text: "original answer" }), el("th", { text: "candidate's answer" })), rows),
      ...more);
  }

  function pollReplay() {
    clearTimeout(state.poll);
    state.poll = setTimeout(async () => {
      try {
        const replay = await api(coursePath(`/replays/${state.replay}?limit=50`));
        showReplay(replay);
        if (replay.status === "running") pollReplay();
      } catch (e) { notice(e.message); }
    }, 500);
  }

  async function cancelReplay() {
    try {
      showReplay(await api(coursePath(`/replays/${state.replay}/cancel`), { method: "POST", body: "{}" }));
      clearTimeout(state.poll);
    } catch (e) { notice(e.message); }
  }

  // ---- experiments ----

  async function loadExperiments() {
    const list = await api(coursePath("/experiments"));
    $("experiments").replaceChildren(...list.filter((x) => x.template === state.template).map((x) => el("p", {
      class: "meta",
      text: `${x.running ? "running" : "stopped"}: ` + x.arms.map((a) => `${short(a.version)} ${a.percent}%`).join(" / ") +
        " · answers " + x.stats.map((s) => s.answers).join(" / "),
    })));
  }

  async function startExperiment() {
    const b = Number($("exp-percent").value);
    try {
      await api(coursePath("/experiments"), {
        method: "POST",
        body: JSON.stringify({ template: state.template, arms: [{ version: $("exp-a").value, percent: 100 - b }, { version: $("exp-b").value, percent: b }] }),
      });
      notice("Experiment started.");
      await loadExperiments();
    } catch (e) { notice(e.message); }
  }

  // ---- start ----

  async function open(token) {
    state.token = token;
    const claims = claimsOf(token);
    $("who").textContent = claims.sub ? `${claims.sub} (${claims.role})` : "";
    $("course-input").value = $("course-input").value || claims.course || "";
    $("token-form").hidden = true;
    $("course-form").hidden = false;
    sessionStorage.setItem(TOKEN_KEY, token);
    if ($("course-input").value) await loadCourse();
  }

  async function loadCourse() {
    state.course = $("course-input").value.trim();
    state.template = $("template-select").value;
    state.selected = null;
    try {
      await loadOverview();
      notice("");
      $("studio").hidden = false;
    } catch (e) {
      notice(failureMessage(e));
      $("studio").hidden = true;
      if (e.status === 401) { $("token-form").hidden = false; sessionStorage.removeItem(TOKEN_KEY); }
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("course-form").addEventListener("submit", (event) => { event.preventDefault(); loadCourse(); });
    $("editor").addEventListener("input", validate);
    $("save").addEventListener("click", save);
    $("promote").addEventListener("click", promote);
    $("rollback").addEventListener("click", rollback);
    $("diff-run").addEventListener("click", showDiff);
    $("preview-run").addEventListener("click", preview);
    $("eval-run").addEventListener("click", runEval);
    $("replay-run").addEventListener("click", startReplay);
    $("replay-cancel").addEventListener("click", cancelReplay);
    $("exp-start").addEventListener("click", startExperiment);
    startWithToken(TOKEN_KEY, open, "Paste your course team token to start.");
  });
})();
