// Kill the server mid-answer, restart it, and see the answer complete exactly once: the
// <companion-chat> element on a plain host page (served by this script at the server's own
// origin through Playwright's routing) asks; once part of the answer shows, this script
// prints `STREAMING` and the test SIGKILLs the server and starts it again on the same port and
// data. The widget reconnects and sends `resume`; the answer its dead node left is answered
// again, and replaces the partial text in the same bubble. The last line of stdout is
// `RESULT {json}`.
// Usage: node resume.spec.mjs <base-url> <learner-token> <png-path>
import { check, finish, launch, newPage, ROUTED_HOST_PAGE, run, specArgs } from "./helpers.mjs";

const [base, token, pngPath] = specArgs("resume.spec.mjs", ["base-url", "token", "png"]);
const browser = await launch([ROUTED_HOST_PAGE]);
const result = {};
await run(browser, async () => {
  // The server is killed mid-answer: console errors about the lost socket are expected.
  const page = await newPage(browser, { consoleErrors: false });
  const frames = [];
  page.on("websocket", (ws) => ws.on("framesent", (f) => frames.push(String(f.payload))));
  await page.route(`${base}/host.html`, (route) => route.fulfill({
    status: 200,
    contentType: "text/html; charset=utf-8",
    body: `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Host</title></head><body>
<script src="${base}/widget.js" defer></script>
<companion-chat token="${token}" mode="inline"></companion-chat></body></html>`,
  }));
  await page.goto(`${base}/host.html`);
  const chat = page.locator("companion-chat");
  await page.locator('companion-chat[data-connection="ready"]').waitFor({ state: "attached", timeout: 15000 });
  await chat.locator("#input").fill("Why does my while loop never stop?");
  await chat.locator("#input").press("Enter");
  const bubble = chat.locator(".msg.assistant").first();
  await page.waitForFunction(() => {
    const el = document.querySelector("companion-chat").companion.state();
    const reply = el.messages.find((m) => m.role === "assistant");
    return reply && reply.text.includes("part5 ");
  }, null, { timeout: 20000 });
  result.partial = (await page.evaluate(() => document.querySelector("companion-chat").companion.state()))
    .messages.find((m) => m.role === "assistant").text;
  console.log("STREAMING");
  // The test kills and restarts the server now; the widget reconnects by itself.
  await page.locator('companion-chat[data-connection="reconnecting"]').waitFor({ state: "attached", timeout: 20000 });
  await chat.locator('.msg.assistant[data-status="complete"]').waitFor({ timeout: 90000 });
  const state = await page.evaluate(() => document.querySelector("companion-chat").companion.state());
  const replies = state.messages.filter((m) => m.role === "assistant");
  result.replies = replies.length;
  result.text = replies[0].text;
  result.status = replies[0].status;
  result.conversationId = state.conversationId;
  result.shown = await bubble.locator(".content").innerText();
  result.resumeFrames = frames.filter((f) => f.includes('"type":"resume"')).length;
  result.askFrames = frames.filter((f) => f.includes('"type":"ask"')).length;
  check(result.replies === 1, `${result.replies} answer bubbles`);
  check(result.resumeFrames >= 1, "the widget did not send resume");
  check(result.askFrames === 1, `the question was sent ${result.askFrames} times`);
  await page.screenshot({ path: pngPath });
});
finish({ result });
