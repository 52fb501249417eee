// Opens the mentor page in headless Chromium as a mentor, checks that the flagged learner shows
// its badges and that the digest renders, and saves a screenshot.
// Usage: node mentor.spec.mjs <base-url> <mentor-token> <learner-id> <expected-goal> <png-path>
import { failures, finish, launch, newPage, run, screenshot, specArgs } from "./helpers.mjs";

const [base, token, learnerId, expectedGoal, pngPath] =
  specArgs("mentor.spec.mjs", ["base-url", "token", "learner-id", "goal", "png"]);

const browser = await launch();
await run(browser, async () => {
  // The malformed search below answers 400 on purpose; Chromium logs every non-2xx response.
  const page = await newPage(browser, { expected: (text) => /status of 400/.test(text) });
  await page.goto(`${base}/mentor?token=${encodeURIComponent(token)}`);
  const item = page.locator(`.learner[data-learner-id="${learnerId}"]`);
  await item.waitFor({ timeout: 15000 });
  const urgent = await item.locator(".badge.urgent").textContent({ timeout: 5000 });
  if (!/\d+ urgent/.test(urgent)) failures.push(`urgent badge reads ${JSON.stringify(urgent)}`);
  const flags = await item.locator(".badge.flags").textContent({ timeout: 5000 });
  if (!/\d+ flags?/.test(flags)) failures.push(`flag badge reads ${JSON.stringify(flags)}`);
  await item.click();
  const summary = page.locator("#digest-summary");
  await summary.waitFor({ timeout: 15000 });
  const text = await summary.innerText();
  for (const wanted of ["Questions by topic", "Open flags", "Goals from the last session", expectedGoal]) {
    if (!text.includes(wanted)) failures.push(`digest lacks ${JSON.stringify(wanted)}`);
  }
  if ((await summary.locator("li.goal").count()) === 0) failures.push("no goal line rendered");
  await screenshot(page, pngPath, { fullPage: true });

  // The conversation view: messages with their sources, and an annotation added through the form.
  await page.locator('.tabs button[data-tab="conversations"]').click();
  await page.locator(".conversation-item").first().click();
  await page.locator("#conversation-view:not([hidden]) .message.from-assistant").first().waitFor({ timeout: 15000 });
  if ((await page.locator(".message.from-assistant .sources li").count()) === 0) failures.push("no sources shown");
  const annotate = page.locator(".message.from-assistant").first().locator("form.annotate");
  await annotate.locator("select").selectOption("correction");
  await annotate.locator("textarea").fill("Show the loop variable changing.");
  await annotate.locator("button").click();
  const note = page.locator(".annotation.correction", { hasText: "Show the loop variable changing." });
  await note.waitFor({ timeout: 15000 });
  await page.screenshot({ path: pngPath.replace(/\.png$/, "-conversation.png"), fullPage: true });

  // Search across the mentor's learners.
  await page.locator("#search-input").fill("while loop");
  await page.locator("#search-form button").click();
  await page.locator("#search-view:not([hidden]) #search-results li").first().waitFor({ timeout: 15000 });
  const results = await page.locator("#search-results").innerText();
  if (!/never stop/i.test(results)) failures.push(`search results lack the question: ${results}`);
  const malformed = page.locator("#notice");
  await page.locator("#search-input").fill('"unbalanced');
  await page.locator("#search-form button").click();
  await malformed.waitFor({ state: "visible", timeout: 15000 });
  if (!/quote/.test(await malformed.innerText())) failures.push("malformed search shows no clear message");
});
finish({ summary: "mentor page: badges and digest rendered" });
