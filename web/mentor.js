// The mentor page: learners with flag badges, a learner's digest, conversations with sources
// and annotations, search. Every call carries the mentor's token; nothing works without one.
(function () {
  "use strict";

  const { $, el, notice, callApi, failureMessage, startWithToken } = window.CompanionStaff;
  const state = { token: null, learner: null, onlyActive: false };
  const TOKEN_KEY = "companion-mentor-token";
  const api = (path, options) => callApi(state.token, path, options);

  // Only site paths and http(s) links become links.
  function safeUrl(url) {
    return /^(\/(?!\/)|https?:\/\/)/.test(url || "") ? url : "#";
  }

  function when(ms) {
    if (!ms) return "never";
    return new Date(ms).toISOString().replace("T", " ").slice(0, 16) + " UTC";
  }

  async function loadLearners() {
    const query = state.onlyActive ? "?active=true" : "";
    const body = await api("/api/v1/mentor/learners" + query);
    const list = $("learner-list");
    list.replaceChildren();
    if (body.learners.length === 0) {
      list.append(el("li", { class: "meta", text: "No learners to show." }));
    }
    for (const learner of body.learners) {
      const badges = el("span", { class: "badges" });
      if (learner.flags.urgent > 0) {
        badges.append(el("span", { class: "badge urgent", title: "urgent flags", text: `${learner.flags.urgent} urgent` }));
      }
      if (learner.flags.open > 0) {
        badges.append(el("span", { class: "badge flags", title: "open flags", text: `${learner.flags.open} flag${learner.flags.open === 1 ? "" : "s"}` }));
      }
      if (learner.questions_since > 0) {
        badges.append(el("span", { class: "badge", title: "questions since the last session", text: `${learner.questions_since} q` }));
      }
      const session = learner.last_session ? `last session ${learner.last_session.held_on}` : "no session yet";
      const item = el("li", {
        class: "learner" + (state.learner === learner.id ? " selected" : ""),
        "data-learner-id": learner.id,
        onclick: () => selectLearner(learner.id, learner.name),
      },
        el("span", {}, el("div", { class: "name", text: learner.name || learner.id }), el("div", { class: "meta", text: session })),
        badges);
      list.append(item);
    }
  }

  function showOnly(view) {
    for (const id of ["placeholder", "learner-view", "search-view", "conversation-view"]) {
      $(id).hidden = id !== view;
    }
  }

  function showTab(name) {
    for (const button of document.querySelectorAll(".tabs button")) {
      button.classList.toggle("active", button.dataset.tab === name);
    }
    for (const tab of ["digest", "conversations", "flags"]) {
      $("tab-" + tab).hidden = tab !== name;
    }
  }

  async function selectLearner(id, name) {
    state.learner = id;
    for (const item of document.querySelectorAll(".learner")) {
      item.classList.toggle("selected", item.dataset.learnerId === id);
    }
    $("learner-title").textContent = name || id;
    showOnly("learner-view");
    showTab("digest");
    await Promise.all([loadDigest(id), loadConversations(id), loadFlags(id)]).catch((e) => notice(e.message));
  }

  async function loadDigest(id) {
    const tab = $("tab-digest");
    tab.replaceChildren(el("p", { class: "digest-meta", text: "Writing the digest…" }));
    const digest = await api(`/api/v1/mentor/learners/${encodeURIComponent(id)}/digest`);
    const since = digest.last_session ? `since the session of ${digest.last_session.held_on}` : "since the beginning";
    const by = digest.written_by === "llm" ? `written by ${digest.model}` : "extracted from the transcripts";
    const summary = el("div", { class: "digest-summary", id: "digest-summary" });
    // Rendered by the server from the Markdown, with any markup in it shown as text.
    summary.innerHTML = digest.summary_html;
    tab.replaceChildren(
      el("p", { class: "digest-meta", text: `${digest.n_questions} questions ${since}; ${by}.` }),
      summary);
  }

  // Every page of a paginated list: `field` of each page, following `next_cursor`; the first
  // page's other fields kept.
  async function allPages(path, field) {
    const first = await api(path);
    let page = first;
    while (page.next_cursor) {
      const joiner = path.includes("?") ? "&" : "?";
      page = await api(`${path}${joiner}after=${encodeURIComponent(page.next_cursor)}`);
      first[field] = first[field].concat(page[field]);
    }
    return first;
  }

  async function loadConversations(id) {
    const tab = $("tab-conversations");
    const body = await allPages(`/api/v1/mentor/learners/${encodeURIComponent(id)}/conversations`, "conversations");
    tab.replaceChildren();
    if (body.conversations.length === 0) tab.append(el("p", { text: "No conversations." }));
    for (const c of body.conversations) {
      tab.append(el("div", { class: "conversation-item", onclick: () => openConversation(c.id) },
        el("strong", { text: c.first_question || "(no question)" }),
        el("div", { class: "meta", text: `${c.n_messages} messages · last ${when(c.updated_at)}` })));
    }
  }

  // Signals of discouragement per week, oldest first: one bar a week, and the direction.
  function trendNode(weeks) {
    const max = Math.max(1, ...weeks);
    const half = Math.floor(weeks.length / 2);
    const sum = (xs) => xs.reduce((a, b) => a + b, 0);
    const before = sum(weeks.slice(0, half));
    const recent = sum(weeks.slice(half));
    const direction = recent > before ? "rising" : recent < before ? "easing" : "steady";
    const bars = el("span", { class: "bars" });
    weeks.forEach((n, i) => {
      const ago = weeks.length - 1 - i;
      const bar = el("span", { class: "bar" + (n > 0 ? " on" : ""), title: `${n} message${n === 1 ? "" : "s"} ${ago === 0 ? "this week" : ago + " week" + (ago === 1 ? "" : "s") + " ago"}` });
      // Through the CSSOM: the page's CSP refuses style attributes.
      bar.style.height = `${Math.round((n / max) * 100)}%`;
      bars.append(bar);
    });
    return el("div", { class: "trend", "data-trend": weeks.join(",") },
      el("span", { class: "trend-label", text: `last ${weeks.length} weeks` }),
      bars,
      el("span", { class: "trend-direction " + direction, text: `${direction} (${recent} in the last ${weeks.length - half} weeks, ${before} before)` }));
  }

  function flagNode(flag, onResolved, trend) {
    const classes = ["flag"];
    if (flag.severity === "urgent") classes.push("urgent");
    if (flag.resolved_at) classes.push("resolved");
    if (flag.kind === "discouraged") classes.push("discouraged");
    const details = [when(flag.created_at)];
    if (flag.signals > 1) details.push(`${flag.signals} messages`);
    if (typeof flag.score === "number") details.push(`score ${flag.score.toFixed(2)}`);
    if (flag.resolved_at) details.push(`resolved by ${flag.resolved_by}`);
    const node = el("div", { class: classes.join(" "), "data-flag-id": flag.id },
      el("span", { class: "kind", text: (flag.severity === "urgent" ? "urgent · " : "") + flag.kind.replace("_", " ") }),
      el("div", { text: flag.reason }),
      el("div", { class: "meta", text: details.join(" · ") }));
    if (flag.kind === "discouraged" && trend && trend.length) node.append(trendNode(trend));
    if (!flag.resolved_at) {
      node.append(el("button", {
        class: "secondary", type: "button", text: "Resolve",
        onclick: async () => {
          try {
            await api(`/api/v1/mentor/flags/${encodeURIComponent(flag.id)}/resolve`, { method: "POST", body: "{}" });
            await onResolved();
          } catch (e) { notice(e.message); }
        },
      }));
    }
    if (flag.conversation_id) {
      node.append(el("button", { class: "secondary", type: "button", text: "Open conversation", onclick: () => openConversation(flag.conversation_id) }));
    }
    return node;
  }

  async function loadFlags(id) {
    const tab = $("tab-flags");
    const body = await api(`/api/v1/mentor/learners/${encodeURIComponent(id)}/flags?status=all`);
    tab.replaceChildren();
    if (body.flags.length === 0) tab.append(el("p", { text: "No flags." }));
    for (const flag of body.flags) {
      tab.append(flagNode(flag, async () => { await loadFlags(id); await loadLearners(); }, body.discouraged_weeks));
    }
  }

  async function openConversation(id) {
    const body = await allPages(`/api/v1/mentor/conversations/${encodeURIComponent(id)}`, "messages").catch((e) => { notice(e.message); return null; });
    if (!body) return;
    const list = $("messages");
    list.replaceChildren();
    for (const flag of body.flags) list.append(el("li", {}, flagNode(flag, () => openConversation(id))));
    for (const m of body.messages) {
      const head = el("div", { class: "head" },
        m.role === "learner" ? "Learner" : "Companion", " · ", when(m.created_at));
      if (m.role !== "learner") {
        head.append(" · ", el("span", { class: "status " + m.status, text: m.status }));
        if (m.prompt_version) head.append(` · prompt ${m.prompt_version}`);
        if (m.model) head.append(` · ${m.model}`);
      }
      const rating = body.feedback.find((f) => f.message_id === m.id);
      if (rating) head.append(` · rated ${rating.rating}` + (rating.comment ? `: “${rating.comment}”` : ""));
      const item = el("li", { class: "message from-" + m.role, "data-message-id": m.id }, head,
        el("div", { class: "text", text: m.text || "(no text)" }));
      if (m.sources && m.sources.length) {
        item.append(el("ol", { class: "sources" }, m.sources.map((s) =>
          el("li", {}, el("a", { href: safeUrl(s.url), target: "_blank", rel: "noopener", text: s.section || s.title })))));
      }
      for (const a of body.annotations.filter((a) => a.message_id === m.id)) {
        item.append(el("div", { class: "annotation " + a.kind }, el("strong", { text: a.kind + ": " }), a.text, el("span", { class: "meta", text: ` — ${a.author_id}` })));
      }
      const text = el("textarea", { placeholder: "Add a comment or a correction", maxlength: "4000" });
      const kind = el("select", {}, el("option", { value: "comment", text: "comment" }), el("option", { value: "correction", text: "correction" }));
      item.append(el("form", {
        class: "annotate",
        onsubmit: async (event) => {
          event.preventDefault();
          try {
            await api(`/api/v1/mentor/messages/${encodeURIComponent(m.id)}/annotations`, {
              method: "POST", body: JSON.stringify({ kind: kind.value, text: text.value }),
            });
            await openConversation(id);
          } catch (e) { notice(e.message); }
        },
      }, kind, text, el("button", { type: "submit", text: "Annotate" })));
      list.append(item);
    }
    showOnly("conversation-view");
  }

  async function search(query) {
    notice("");
    try {
      const body = await api("/api/v1/mentor/search?q=" + encodeURIComponent(query));
      const list = $("search-results");
      list.replaceChildren();
      if (body.hits.length === 0) list.append(el("li", { text: "Nothing found." }));
      for (const hit of body.hits) {
        list.append(el("li", { onclick: () => openConversation(hit.conversation_id) },
          el("div", { class: "who", text: `${hit.learner_id} · ${hit.role} · ${when(hit.created_at)}` }),
          el("div", { text: hit.snippet })));
      }
      showOnly("search-view");
    } catch (e) {
      notice(e.message);
    }
  }

  async function start(token) {
    state.token = token;
    try {
      await loadLearners();
    } catch (e) {
      sessionStorage.removeItem(TOKEN_KEY);
      notice(failureMessage(e));
      $("token-form").hidden = false;
      return;
    }
    // For reloads in this tab only; closing the tab forgets it.
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token-form").hidden = true;
    $("search-form").hidden = false;
    notice("");
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const button of document.querySelectorAll(".tabs button")) {
      button.addEventListener("click", () => showTab(button.dataset.tab));
    }
    $("back").addEventListener("click", () => showOnly(state.learner ? "learner-view" : "placeholder"));
    $("only-active").addEventListener("change", (event) => {
      state.onlyActive = event.target.checked;
      loadLearners().catch((e) => notice(e.message));
    });
    $("search-form").addEventListener("submit", (event) => {
      event.preventDefault();
      search($("search-input").value);
    });
    startWithToken(TOKEN_KEY, start, "Paste your mentor token to start.");
  });
})();
