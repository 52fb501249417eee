// Opens the mentor page in headless Chromium on a learner with a discouragement flag, checks
// that the flag shows its trend over the last weeks, and saves a screenshot.
// Usage: node discouraged.spec.mjs <base-url> <mentor-token> <learner-id> <png-path>
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";

const [base, token, learnerId, pngPath] = process.argv.slice(2);
if (!pngPath) {
  console.error("usage: node discouraged.spec.mjs <base-url> <token> <learner-id> <png>");
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const failures = [];
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("pageerror", (error) => failures.push(`page error: ${error.message}`));
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
  mkdirSync(dirname(pngPath), { recursive: true });
  await page.screenshot({ path: pngPath, fullPage: true });
  console.log(`screenshot saved to ${pngPath}`);
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(failures.join("\n"));
  process.exit(1);
}
