// Opens the demo course page in headless Chromium as a learner, asks its chat (the
// <companion-chat> element, inline in the page's right-hand column) about while loops,
// waits for the streamed answer and its sources, drops the socket once (the rating and mentor
// buttons are disabled until the widget reconnects), rates the answer up then down, says what
// was wrong in the box the thumbs-down opens, asks for the mentor with a typed message, and
// saves a screenshot. The last line of stdout is
// `RESULT {json}` with the ids the caller checks over the HTTP API.
// Usage: node chat.spec.mjs <base-url> <learner-token> <question> <mentor-text> <png-path>
import { check, finish, launch, newPage, run, screenshot, specArgs } from "./helpers.mjs";

const [base, token, question, mentorText, pngPath] =
  specArgs("chat.spec.mjs", ["base-url", "token", "question", "mentor-text", "png"]);

const browser = await launch();
// What the learner types in the thumbs-down's comment box (returned in RESULT).
const commentText = "The answer shows a for loop; I asked about while — é, ü and 中 included.";
let result = null;
await run(browser, async () => {
  const page = await newPage(browser);
  // Keep a handle on the widget's sockets so the test can drop the connection.
  await page.addInitScript(() => {
    const Native = window.WebSocket;
    window.testSockets = [];
    window.WebSocket = class extends Native {
      constructor(...args) {
        super(...args);
        window.testSockets.push(this);
      }
    };
  });
  await page.goto(`${base}/?token=${encodeURIComponent(token)}`);
  const chat = page.locator("#companion-chat");
  await page.locator('#companion-chat[data-connection="ready"]').waitFor({ timeout: 15000 });
  check(!page.url().includes("token="), `the token stays in the address bar: ${page.url()}`);
  const mentor = chat.locator("#mentor");
  check(await mentor.isEnabled(), "Ask my mentor is disabled while connected");

  // Ask; the offline answer streams in with its sources.
  await chat.locator("#input").fill(question);
  await chat.locator("#send").click();
  const answer = chat.locator('.msg.assistant[data-status="complete"]').first();
  await answer.waitFor({ timeout: 30000 });
  await answer.locator('.sources a[href*="while-loops"]').first().waitFor({ timeout: 5000 });
  check((await answer.locator(".msg-body").innerText()).trim().length > 0, "the answer is empty");
  check(await answer.locator(".badge.offline").isVisible(), "no offline badge on an offline answer");

  const rating = answer.locator('[role="group"][aria-label="Rate this answer"]');
  const up = rating.getByRole("button", { name: "Helpful answer" });
  const down = rating.getByRole("button", { name: "Not helpful" });
  await down.waitFor({ timeout: 5000 });
  check(await up.getAttribute("aria-pressed") === "false", "thumbs up starts pressed");
  check(await down.getAttribute("aria-pressed") === "false", "thumbs down starts pressed");

  // Drop the socket: while the widget reconnects, the buttons that need it are disabled.
  const dropped = await page.evaluate(() => new Promise((resolve) => {
    const ws = window.testSockets[window.testSockets.length - 1];
    const element = document.getElementById("companion-chat");
    ws.addEventListener("close", () => setTimeout(() => resolve({
      connection: element.dataset.connection,
      down: element.shadowRoot.querySelector('.msg.assistant button[data-rating="down"]').disabled,
      mentor: element.shadowRoot.getElementById("mentor").disabled,
    }), 0));
    ws.close();
  }));
  check(dropped.connection === "reconnecting", `after a drop the chat is ${dropped.connection}`);
  check(dropped.down && dropped.mentor, `buttons enabled while disconnected: ${JSON.stringify(dropped)}`);
  await page.locator('#companion-chat[data-connection="ready"]').waitFor({ timeout: 15000 });
  check(await down.isEnabled() && await mentor.isEnabled(), "buttons still disabled after reconnecting");

  // Thumbs up, then changed to thumbs down: one rating per answer, the last one stored.
  await up.click();
  await answer.locator('.feedback[data-rating="up"]').waitFor({ timeout: 10000 });
  check(await up.getAttribute("aria-pressed") === "true", "thumbs up not shown as pressed");
  await down.click();
  await answer.locator('.feedback[data-rating="down"]').waitFor({ timeout: 10000 });
  check(await down.getAttribute("aria-pressed") === "true", "thumbs down not shown as pressed");
  check(await up.getAttribute("aria-pressed") === "false", "thumbs up still pressed after thumbs down");
  const note = (await rating.locator(".feedback-note").innerText()).trim();
  check(/noted/i.test(note), `no confirmation of the rating: ${JSON.stringify(note)}`);

  // The thumbs-down offers a box to say what was wrong; the comment goes with the rating.
  const commentBox = answer.locator("form.feedback-comment");
  await commentBox.waitFor({ timeout: 10000 });
  await commentBox.locator("textarea").fill(commentText);
  await screenshot(page, pngPath.replace(/\.png$/, "-comment.png"));
  await commentBox.locator('button[type="submit"]').click();
  await commentBox.waitFor({ state: "detached", timeout: 10000 });
  const commentNote = (await rating.locator(".feedback-note").innerText()).trim();
  check(/comment was sent/i.test(commentNote), `no confirmation of the comment: ${JSON.stringify(commentNote)}`);
  check(await down.getAttribute("aria-pressed") === "true", "thumbs down not pressed after the comment");

  // Ask my mentor, with the text typed in the box.
  await chat.locator("#input").fill(mentorText);
  await mentor.click();
  const confirmation = chat.locator(".notice.mentor[data-flag-id]");
  await confirmation.waitFor({ timeout: 10000 });
  const confirmed = await confirmation.innerText();
  check(/your mentor will see this/i.test(confirmed), `mentor confirmation reads ${JSON.stringify(confirmed)}`);
  check(confirmed.includes(mentorText), "the confirmation does not quote the message");
  check(await chat.locator("#input").inputValue() === "", "the sent text stays in the box");
  check(await mentor.isEnabled(), "Ask my mentor stays disabled after the confirmation");

  await screenshot(page, pngPath);

  const state = await page.evaluate(() => document.getElementById("companion-chat").companion.state());
  const reply = state.messages.find((m) => m.role === "assistant");
  check(reply && reply.feedback === "down", `state shows feedback ${reply && reply.feedback}`);
  result = {
    learnerId: state.learner && state.learner.id,
    conversationId: state.conversationId,
    answerId: reply && reply.messageId,
    flagId: state.mentorRequests.length ? state.mentorRequests[0].flagId : null,
    comment: reply && reply.feedbackComment,
  };
});
finish({ summary: "chat: answer, sources, rating, its comment and mentor request work", result });
