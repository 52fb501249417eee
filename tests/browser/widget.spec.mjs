// The <companion-chat> element on a plain host page of another origin (http://localhost:8123,
// served by this script through Playwright's routing: an HTML file with only the two tags),
// against a Companion whose fake model streams a Markdown reply with a table, Python code,
// math, a citation and hostile HTML, then (second question) streams forever.
//
// Checks: Markdown, highlighted code and math render while the answer streams; the hostile
// parts stay inert (checked in the DOM); the copy button; thumbs-down and its comment; stop
// sends `cancel`; keyboard only (open, focus, Escape); history restored after a reload and the
// list of conversations; the transparency panel; an axe-core scan with no serious or critical
// violation; the French UI for a French learner; no header text cut at 360 px; screenshots at
// 1280 and 360 px; the widget's gzipped size. The last line of stdout is `RESULT {json}`.
// Usage: node widget.spec.mjs <base-url> <english-token> <french-token> <png-dir>
import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { gzipSync } from "node:zlib";
import { join } from "node:path";
import { check, finish, launch, recordErrors, ROUTED_HOST_PAGE, run, specArgs } from "./helpers.mjs";

const [base, tokenEn, tokenFr, pngDir] =
  specArgs("widget.spec.mjs", ["base-url", "en-token", "fr-token", "png-dir"]);
mkdirSync(pngDir, { recursive: true });
const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
// Another origin than the server's, and a secure context (the copy button's clipboard).
const HOST = "http://localhost:8123";

const hostPage = (token, extra = "") => `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Week 3 · A course site</title></head><body>
<script src="${base}/widget.js" defer></script>
<companion-chat token="${token}" course="python-foundations" page-url="/course/python-foundations/02-control-flow/02-while-loops"${extra}></companion-chat>
</body></html>`;

const browser = await launch([ROUTED_HOST_PAGE]);
// axe-core reads the stylesheets itself; its cross-origin reads fail, which is not the widget's.
let axeRunning = false;
const result = {};

async function open(context, token, viewport) {
  const page = await context.newPage({ viewport });
  await page.setViewportSize(viewport);
  recordErrors(page, { expected: () => axeRunning });
  await page.route(`${HOST}/**`, (route) => route.fulfill({
    status: 200, contentType: "text/html; charset=utf-8", body: hostPage(token),
  }));
  await page.goto(`${HOST}/week-3.html`);
  return page;
}

/** Evaluates `fn(shadowRoot, arg)` in the page. */
const inShadow = (page, fn, arg) => page.evaluate(
  ([source, a]) => (0, eval)(`(${source})`)(document.querySelector("companion-chat").shadowRoot, a),
  [fn.toString(), arg],
);

await run(browser, async () => {
  // ------------------------------------------------------------------ size
  const widget = await (await fetch(`${base}/widget.js`)).arrayBuffer();
  const libs = await fetch(`${base}/widget/libs.js`);
  const libsBytes = libs.ok ? Buffer.from(await libs.arrayBuffer()) : Buffer.alloc(0);
  result.widgetBytes = widget.byteLength;
  result.widgetGzipBytes = gzipSync(Buffer.from(widget), { level: 9 }).length;
  result.libsGzipBytes = gzipSync(libsBytes, { level: 9 }).length;
  console.log(`WIDGET_GZIP_BYTES ${result.widgetGzipBytes} (widget.js ${result.widgetBytes} bytes; libs.js ${result.libsGzipBytes} gzipped)`);
  check(libs.ok, `/widget/libs.js answered ${libs.status}: run scripts/fetch-widget-libs.sh`);

  const context = await browser.newContext({ locale: "en-US" });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: HOST });
  const page = await open(context, tokenEn, { width: 1280, height: 900 });
  const chat = page.locator("companion-chat");

  // ------------------------------------------------------------------ keyboard only
  const launcher = chat.locator(".launcher");
  await launcher.waitFor({ timeout: 15000 });
  await page.keyboard.press("Tab");
  check(await inShadow(page, (root) => root.activeElement && root.activeElement.classList.contains("launcher")),
    "Tab does not reach the launcher first");
  await page.keyboard.press("Enter");
  check(await launcher.getAttribute("aria-expanded") === "true", "Enter on the launcher does not open the panel");
  check(await inShadow(page, (root) => root.activeElement && root.activeElement.id === "input"),
    "opening the panel does not put the focus in the question box");
  await page.keyboard.press("Escape");
  check(await launcher.getAttribute("aria-expanded") === "false", "Escape does not close the panel");
  check(await inShadow(page, (root) => root.activeElement && root.activeElement.classList.contains("launcher")),
    "closing the panel does not give the focus back to the launcher");
  await page.keyboard.press("Enter");

  await page.locator('companion-chat[data-connection="ready"]').waitFor({ state: "attached", timeout: 15000 });
  await page.locator('companion-chat[data-renderer="markdown"]').waitFor({ state: "attached", timeout: 15000 });

  // ------------------------------------------------------------------ rendering while streaming
  await page.keyboard.type("How do I stop a while loop that never ends?");
  await page.keyboard.press("Enter");
  const streaming = chat.locator('.msg.assistant[aria-busy="true"]');
  await streaming.locator("table td").first().waitFor({ timeout: 20000 });
  // The math comes after the table in the reply: wait for it while the answer still streams
  // (the locator only matches a busy message, so an answer that ends first fails here).
  await streaming.locator(".cc-math.typeset math").first().waitFor({ timeout: 20000 })
    .catch(() => {});
  const during = await inShadow(page, (root) => {
    const busy = root.querySelector('.msg.assistant[aria-busy="true"]');
    return busy && {
      table: Boolean(busy.querySelector("table td")),
      list: Boolean(busy.querySelector("ul li")),
      math: Boolean(busy.querySelector(".cc-math.typeset math")),
      rawPipes: busy.textContent.includes("|---"),
    };
  });
  check(during && during.table && during.list && !during.rawPipes,
    `Markdown not rendered while streaming: ${JSON.stringify(during)}`);
  check(during && during.math, `math not typeset while streaming: ${JSON.stringify(during)}`);
  const answer = chat.locator('.msg.assistant[data-status="complete"]').first();
  await answer.waitFor({ timeout: 30000 });
  await page.waitForFunction(() => document.querySelector("companion-chat").shadowRoot
    .getElementById("announcer").textContent.length > 0, null, { timeout: 5000 }).catch(() => {});
  const rendered = await inShadow(page, (root) => {
    const msg = root.querySelector('.msg.assistant[data-status="complete"]');
    const content = msg.querySelector(".content");
    return {
      keyword: Boolean(content.querySelector("pre code.hljs .hljs-keyword")),
      language: (content.querySelector(".code-lang") || {}).textContent,
      copy: Boolean(content.querySelector(".code-block button[data-copy]")),
      inlineMath: Boolean(content.querySelector('.cc-math[data-display="false"] math')),
      displayMath: Boolean(content.querySelector('.cc-math[data-display="true"] math[display="block"]')),
      strong: Boolean(content.querySelector("strong")),
      em: Boolean(content.querySelector("em")),
      table: content.querySelectorAll("table tr").length,
      link: (() => {
        const a = content.querySelector('a[href="https://docs.python.org/3/"]');
        return a && { target: a.target, rel: a.rel };
      })(),
      citation: (() => {
        const a = content.querySelector("a.cite");
        return a && a.getAttribute("href");
      })(),
      fence: content.textContent.includes("```"),
      // Hostile parts: shown as text, never as elements.
      img: root.querySelectorAll("img").length,
      script: msg.querySelectorAll("script").length,
      jsLinks: [...root.querySelectorAll("a[href]")].filter((a) => !/^(https?:|mailto:)/.test(a.href)).map((a) => a.href),
      handlers: [...root.querySelectorAll("*")].filter((el) => [...el.attributes].some((at) => at.name.startsWith("on"))).length,
      imgText: content.textContent.includes("<img src=x onerror="),
      scriptText: content.textContent.includes("<script>"),
      pwned: window.__pwned,
      announcer: root.getElementById("announcer").textContent,
    };
  });
  result.rendered = rendered;
  check(rendered.keyword && rendered.language === "python", `code not highlighted: ${JSON.stringify(rendered)}`);
  check(rendered.copy, "no copy button on the code block");
  check(rendered.inlineMath && rendered.displayMath, `math not rendered: ${JSON.stringify(rendered)}`);
  check(rendered.strong && rendered.em && rendered.table >= 3, `Markdown missing: ${JSON.stringify(rendered)}`);
  check(rendered.link && rendered.link.target === "_blank" && rendered.link.rel.includes("noopener"),
    `external link not opened safely: ${JSON.stringify(rendered.link)}`);
  check(rendered.citation && rendered.citation.includes("/course/"), `citation [1] not linked to its source: ${rendered.citation}`);
  check(!rendered.fence, "a ``` fence is shown as text");
  check(rendered.img === 0 && rendered.script === 0, `hostile elements in the DOM: ${JSON.stringify(rendered)}`);
  check(rendered.jsLinks.length === 0, `javascript: or data: links in the DOM: ${rendered.jsLinks}`);
  check(rendered.handlers === 0, "an element carries an on* handler attribute");
  check(rendered.imgText && rendered.scriptText, "the hostile HTML is not shown as inert text");
  check(rendered.pwned === undefined, `a hostile payload ran: ${rendered.pwned}`);
  check(/^Answer: /.test(rendered.announcer) && rendered.announcer.includes("while"),
    `the finished answer is not announced: ${JSON.stringify(rendered.announcer)}`);

  const copy = answer.locator(".code-block button[data-copy]");
  await copy.click();
  await page.waitForTimeout(200);
  const copied = await page.evaluate(() => navigator.clipboard.readText().catch((e) => `error ${e}`));
  check(copied.includes("while"), `the copy button did not copy the code: ${JSON.stringify(copied)}`);

  await page.screenshot({ path: join(pngDir, "widget-1280.png") });

  // ------------------------------------------------------------------ thumbs and comment
  const rating = answer.locator('[role="group"][aria-label="Rate this answer"]');
  await rating.getByRole("button", { name: "Not helpful" }).click();
  await answer.locator('.feedback[data-rating="down"]').waitFor({ timeout: 10000 });
  const commentBox = answer.locator("form.feedback-comment");
  await commentBox.waitFor({ timeout: 10000 });
  result.comment = "The table was good but the loop example was too long.";
  await commentBox.locator("textarea").fill(result.comment);
  await commentBox.locator('button[type="submit"]').click();
  await commentBox.waitFor({ state: "detached", timeout: 10000 });
  check(/comment was sent/i.test(await rating.locator(".feedback-note").innerText()), "no confirmation of the comment");

  // ------------------------------------------------------------------ paste a snippet
  await chat.locator("#attach").click();
  await chat.locator("#attach-text").fill("while True:\n    pass");
  await chat.locator('#attach-form button[type="submit"]').click();
  await chat.locator('.notice.attached').waitFor({ timeout: 10000 });
  check((await chat.locator(".notice.attached").innerText()).includes("snippet"), "no confirmation of the snippet");

  // ------------------------------------------------------------------ cancel
  await chat.locator("#input").fill("Tell me more about loops");
  await chat.locator("#input").press("Enter");
  const second = chat.locator(".msg.assistant").nth(1);
  await second.locator(".content .block").first().waitFor({ timeout: 20000 });
  const stop = chat.locator("#stop");
  check(await stop.isVisible(), "no stop button while the answer streams");
  await stop.click();
  await chat.locator('.msg.assistant[data-status="cancelled"]').waitFor({ timeout: 15000 });
  check(await stop.isHidden(), "the stop button stays after the answer stopped");

  const state = await page.evaluate(() => document.querySelector("companion-chat").companion.state());
  result.learnerId = state.learner && state.learner.id;
  result.conversationId = state.conversationId;
  const replies = state.messages.filter((m) => m.role === "assistant");
  result.answerId = replies[0] && replies[0].messageId;
  result.cancelledId = replies[1] && replies[1].messageId;
  result.statuses = replies.map((m) => m.status);

  // ------------------------------------------------------------------ transparency
  await chat.locator("#privacy").click();
  const facts = chat.locator('#privacy-panel [data-facts="readers"]');
  await facts.waitFor({ timeout: 10000 });
  result.readers = await facts.innerText();
  check(result.readers.includes("Your mentor, Grace Hopper"), `the mentor is not named: ${result.readers}`);
  check(await chat.locator("#privacy-panel [data-retention]").isVisible(), "no retention line");
  check(await chat.locator("#privacy-panel #download").isVisible(), "no download button");
  const [download] = await Promise.all([
    page.waitForEvent("download", { timeout: 10000 }),
    chat.locator("#privacy-panel #download").click(),
  ]);
  const exported = JSON.parse(readFileSync(await download.path(), "utf8"));
  check(JSON.stringify(exported).includes("while loop"), "the downloaded history lacks the question");
  await page.keyboard.press("Escape");
  check(await chat.locator("#privacy-panel").isHidden(), "Escape does not close the transparency panel");

  // ------------------------------------------------------------------ axe-core
  axeRunning = true;
  await page.addScriptTag({ content: axeSource });
  const axe = await page.evaluate(async () => {
    const report = await window.axe.run(document, { resultTypes: ["violations"] });
    return report.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help }));
  });
  axeRunning = false;
  result.axe = axe;
  const serious = axe.filter((v) => v.impact === "serious" || v.impact === "critical");
  check(serious.length === 0, `axe-core: ${JSON.stringify(serious)}`);

  // ------------------------------------------------------------------ history after a reload
  await page.reload();
  await chat.locator(".launcher").click();
  await page.locator('companion-chat[data-connection="ready"]').waitFor({ state: "attached", timeout: 15000 });
  await chat.locator('.msg.assistant[data-status="complete"] table').first().waitFor({ timeout: 15000 });
  const restored = await page.evaluate(() => document.querySelector("companion-chat").companion.state());
  result.restored = restored.messages.filter((m) => m.role === "learner").map((m) => m.text);
  check(restored.conversationId === result.conversationId, "another conversation after the reload");
  check(result.restored.length === 2, `history after reload: ${JSON.stringify(result.restored)}`);
  // The thumbs-down given before the reload is shown as given, and no comment box is offered
  // again for it (its comment is stored).
  const restoredAnswer = chat.locator('.msg.assistant[data-status="complete"]').first();
  result.restoredRating = await restoredAnswer.locator(".feedback").getAttribute("data-rating");
  check(result.restoredRating === "down", `the thumbs-down is not restored after the reload: ${result.restoredRating}`);
  check(await restoredAnswer.getByRole("button", { name: "Not helpful" }).getAttribute("aria-pressed") === "true",
    "the restored thumbs-down is not shown as pressed");
  check(await restoredAnswer.locator("form.feedback-comment").count() === 0, "the comment box is offered again after the reload");
  await chat.locator("#history").click();
  const current = chat.locator('#conversations .conversation[aria-current="true"]');
  await current.waitFor({ timeout: 10000 });
  check((await current.innerText()).includes("while loop"), "the conversation list does not name the conversation");
  await chat.locator("#new-conversation").click();
  await page.locator('companion-chat[data-connection="ready"]').waitFor({ state: "attached", timeout: 15000 });
  const fresh = await page.evaluate(() => document.querySelector("companion-chat").companion.state());
  check(fresh.conversationId !== result.conversationId && fresh.messages.length === 0, "new conversation kept the old one");
  await page.close();

  // ------------------------------------------------------------------ 360 px, French
  const phone = await browser.newContext({ locale: "en-US" });
  const small = await open(phone, tokenFr, { width: 360, height: 740 });
  const frChat = small.locator("companion-chat");
  await frChat.locator(".launcher").click();
  await small.locator('companion-chat[data-connection="ready"]').waitFor({ state: "attached", timeout: 15000 });
  await small.locator('companion-chat[data-lang="fr"]').waitFor({ state: "attached", timeout: 5000 });
  const fr = await inShadow(small, (root) => ({
    send: root.getElementById("send").textContent,
    status: root.getElementById("status").textContent,
    placeholder: root.getElementById("input").placeholder,
    launcher: root.querySelector(".launcher").textContent,
    statusCut: [...root.querySelectorAll(".chat-header > *")].some((el) => el.scrollWidth > el.clientWidth + 1),
    panelWidth: root.getElementById("panel").getBoundingClientRect().width,
    overflow: document.documentElement.scrollWidth > window.innerWidth,
  }));
  result.french = fr;
  check(fr.send === "Envoyer" && fr.status === "Connecté" && fr.launcher === "Demander au compagnon",
    `the French learner's UI is not in French: ${JSON.stringify(fr)}`);
  check(!fr.statusCut, "a header item is cut at 360 px");
  check(fr.panelWidth <= 360 && !fr.overflow, `the panel does not fit 360 px: ${JSON.stringify(fr)}`);
  await small.screenshot({ path: join(pngDir, "widget-360.png") });
  await phone.close();
  await context.close();
});
finish({
  summary: "widget: rendering while streaming, inert hostile HTML, copy, rating, cancel, history, transparency, axe, French, 360 px",
  result,
});
