// What the browser specs share: their arguments, headless Chromium (at $CHROMIUM, which
// tests/api/browser.rs sets), pages whose errors are failures, the list of failures and how a
// spec ends. Each spec runs in its own node process, so the list is the spec's own.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";

/** What failed; the spec exits 1 when it is not empty. */
export const failures = [];

/** Records `what` as a failure unless `ok`. */
export const check = (ok, what) => { if (!ok) failures.push(what); };

/**
 * The spec's command-line arguments, one per name of `names`; with the last one missing, the
 * usage line and exit 2.
 */
export function specArgs(spec, names) {
  const values = process.argv.slice(2);
  if (!values[names.length - 1]) {
    console.error(`usage: node ${spec} ${names.map((name) => `<${name}>`).join(" ")}`);
    process.exit(2);
  }
  return values;
}

/**
 * For a host page routed by Playwright (no address): Chromium counts it as public and would
 * refuse its requests to the loopback server; a real course site reaches a public one.
 */
export const ROUTED_HOST_PAGE =
  "--disable-features=LocalNetworkAccessChecks,PrivateNetworkAccessRespectPreflightResults,BlockInsecurePrivateNetworkRequests";

/** Headless Chromium, with `extraArgs` after the flags every spec uses. */
export function launch(extraArgs = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      ...extraArgs,
    ],
  });
}

/**
 * Makes the page's uncaught errors failures, and its console errors too unless `consoleErrors`
 * is false or `expected(text)` says that one is.
 */
export function recordErrors(page, { consoleErrors = true, expected = () => false } = {}) {
  page.on("pageerror", (error) => failures.push(`page error: ${error.message}`));
  if (!consoleErrors) return;
  page.on("console", (message) => {
    if (message.type() === "error" && !expected(message.text())) {
      failures.push(`console error: ${message.text()}`);
    }
  });
}

/** A 1280 × 900 page of `browser`, its errors recorded as `recordErrors(page, errors)` says. */
export async function newPage(browser, errors) {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  recordErrors(page, errors);
  return page;
}

/** A screenshot of `page` at `path` (its folder made first); `options` as Playwright's. */
export async function screenshot(page, path, options = {}) {
  mkdirSync(dirname(path), { recursive: true });
  await page.screenshot({ path, ...options });
  console.log(`screenshot saved to ${path}`);
}

/** Runs `body`, whose throw is a failure, then closes `browser`. */
export async function run(browser, body) {
  try {
    await body();
  } catch (error) {
    failures.push(String(error && error.stack ? error.stack : error));
  } finally {
    await browser.close();
  }
}

/**
 * Ends the spec: with failures, prints them (and `RESULT {json}` when there is a result) and
 * exits 1; otherwise prints `summary` when there is one, then `RESULT {json}`.
 */
export function finish({ summary, result } = {}) {
  const resultLine = result === undefined ? null : `RESULT ${JSON.stringify(result)}`;
  if (failures.length) {
    console.error(failures.join("\n"));
    if (resultLine) console.log(resultLine);
    process.exit(1);
  }
  if (summary) console.log(summary);
  if (resultLine) console.log(resultLine);
}
