// Opens the prompt studio in headless Chromium as a course team: an edit with a syntax error
// shows its line inline, a diff of two versions, the eval cases run on a version's text, then a
// replay of the thumbs-down turns with that version, side by side. Two screenshots.
// Then a preview for a learner, promote and roll back, an experiment, and the coaching note's
// template (no preview, eval, replay or experiment for it).
// Usage: node studio.spec.mjs <base-url> <token> <version-a> <version-b> <learner-id> <png-dir>
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { failures, finish, launch, newPage, run, specArgs } from "./helpers.mjs";

const [base, token, versionA, versionB, learnerId, pngDir] = specArgs(
  "studio.spec.mjs", ["base-url", "token", "version-a", "version-b", "learner-id", "png-dir"]);

const browser = await launch();
const result = {};
await run(browser, async () => {
  mkdirSync(pngDir, { recursive: true });
  const page = await newPage(browser);
  await page.goto(`${base}/studio?token=${encodeURIComponent(token)}`);
  const itemA = page.locator(`.version[data-version="${versionA}"]`);
  const itemB = page.locator(`.version[data-version="${versionB}"]`);
  await itemB.waitFor({ timeout: 15000 });

  // A syntax error is shown inline, with its line.
  await itemA.click();
  await page.waitForFunction(() => document.getElementById("editor").value.length > 0, null, { timeout: 15000 });
  await page.fill("#editor", "Hello {{ learner_name }}\n{% if french %}\n");
  const bad = page.locator("#validation.bad");
  await bad.waitFor({ timeout: 15000 });
  result.validation = await bad.innerText();
  if (!/Line 2/.test(result.validation)) failures.push(`validation reads ${JSON.stringify(result.validation)}`);

  // The diff of the two versions.
  await page.selectOption("#diff-a", versionA);
  await page.selectOption("#diff-b", versionB);
  await page.click("#diff-run");
  await page.locator("#diff .add").first().waitFor({ timeout: 15000 });
  result.diffAdded = await page.locator("#diff .add").count();
  result.diffRemoved = await page.locator("#diff .del").count();
  result.diffSame = await page.locator("#diff .same").count();
  if (result.diffRemoved === 0) failures.push("the diff shows no removed line");

  // The eval cases on version B's text.
  await itemB.click();
  await page.locator("#validation.ok").waitFor({ timeout: 15000 });
  await page.click("#eval-run");
  await page.locator("#eval-result .eval-case").first().waitFor({ timeout: 180000 });
  result.evalCases = await page.locator("#eval-result .eval-case").count();
  result.evalVerdict = await page.locator("#eval-result .eval-verdict").innerText();
  await page.locator("#diff-title").scrollIntoViewIfNeeded();
  await page.screenshot({ path: join(pngDir, "studio.png"), fullPage: true });

  // A replay of the thumbs-down turns with version B (selected), side by side.
  await page.check("#replay-down");
  await page.click("#replay-run");
  const done = page.locator('#replay-result .replay-turn[data-status="done"]');
  await done.first().waitFor({ timeout: 60000 });
  await page.locator("#replay-result .progress", { hasText: "done" }).waitFor({ timeout: 60000 });
  result.replayTurns = await page.locator("#replay-result .replay-turn").count();
  result.original = await done.first().locator(".original").innerText();
  result.candidate = await done.first().locator(".candidate").innerText();
  const panel = page.locator('section[aria-labelledby="replay-title"]');
  await panel.scrollIntoViewIfNeeded();
  await panel.screenshot({ path: join(pngDir, "studio-replay.png") });

  // The preview of the editor's text for a learner of the course.
  await page.fill("#preview-learner", learnerId);
  await page.click("#preview-run");
  await page.locator("#preview .prompt-message.system").waitFor({ timeout: 15000 });
  result.previewMessages = await page.locator("#preview .prompt-message").count();

  // Promote the selected version, then roll production back.
  await page.click("#promote");
  await page.locator("#labels", { hasText: "production" }).waitFor({ timeout: 15000 });
  result.promoted = await page.locator("#labels").innerText();
  await page.click("#rollback");
  await page.locator("#labels", { hasText: "No label" }).waitFor({ timeout: 15000 });

  // An experiment between the two versions.
  await page.selectOption("#exp-a", versionA);
  await page.selectOption("#exp-b", versionB);
  await page.click("#exp-start");
  await page.locator("#experiments p", { hasText: "running" }).waitFor({ timeout: 15000 });
  result.experiment = await page.locator("#experiments p").first().innerText();

  // The coaching note's template: its shipped default is listed, to edit and diff; previews,
  // evals, replays and experiments are of the answer's templates and not offered.
  result.templates = await page.locator("#template-select option").evaluateAll((options) => options.map((o) => o.value));
  await page.selectOption("#template-select", "coaching");
  await page.click("#course-form button[type=submit]");
  await page.locator('.version[data-version^="default:coaching@"]').waitFor({ timeout: 15000 });
  result.coachingPanels = await page.locator("section.panel:not([hidden]) h2").evaluateAll((titles) => titles.map((t) => t.id));
});
finish({ result });
