// Opens the mentor page in headless Chromium on a learner with a discouragement flag, checks
// that the flag shows its trend over the last weeks, and saves a screenshot.
// Usage: node discouraged.spec.mjs <base-url> <mentor-token> <learner-id> <png-path>
import { failures, finish, launch, newPage, run, screenshot, specArgs } from "./helpers.mjs";

const [base, token, learnerId, pngPath] =
  specArgs("discouraged.spec.mjs", ["base-url", "token", "learner-id", "png"]);

const browser = await launch();
await run(browser, async () => {
  const page = await newPage(browser, { consoleErrors: false });
  await page.goto(`${base}/mentor?token=${encodeURIComponent(token)}`);
  const item = page.locator(`.learner[data-learner-id="${learnerId}"]`);
  await item.waitFor({ timeout: 15000 });
  await item.click();
  // The learner's flags load with the rest of the learner; then the tab is opened.
  await page.locator("#tab-flags .flag").first().waitFor({ state: "attached", timeout: 15000 });
  await page.locator('.tabs button[data-tab="flags"]').click();
  const flag = page.locator(".flag.discouraged").first();
  await flag.waitFor({ timeout: 15000 });
  const trend = await flag.locator(".trend").getAttribute("data-trend");
  const bars = await flag.locator(".trend .bar").count();
  if (bars !== 8) failures.push(`trend has ${bars} bars, expected 8`);
  const direction = await flag.locator(".trend-direction").textContent();
  console.log(`trend ${trend}: ${direction}`);
  await screenshot(page, pngPath, { fullPage: true });
});
finish();
