// The status page in a real browser (Debian's chromium driven by playwright-core), against a real
// agent: run by TestStatusPageInBrowser, which passes E2E_CONFIG (JSON) and answers each
// "STEP name" line this script prints with "GO" on stdin once it did what the step needs.
"use strict";
const fs = require("fs");
const os = require("os");
const path = require("path");
const readline = require("readline");
const { chromium } = require("playwright-core");

const cfg = JSON.parse(process.env.E2E_CONFIG);
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const TIMEOUT = 45000;
const dialogs = []; // a dialog would mean a file name ran as script

async function step(name) {
  process.stdout.write("STEP " + name + "\n");
  const got = await lines.next();
  if (got.done || got.value.trim() !== "GO") { throw new Error("step " + name + ": the test said " + JSON.stringify(got.value)); }
}

function log(msg) { process.stdout.write("LOG " + msg + "\n"); }

// browser starts chromium with a fresh profile, headless, without background networking.
async function browser() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "adi-e2e-profile-"));
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: cfg.chromium, headless: true, viewport: { width: 1280, height: 900 },
    args: ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--no-first-run", "--disable-default-apps", "--disable-extensions", "--metrics-recording-only"],
  });
  const page = ctx.pages()[0] || await ctx.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on("dialog", async (d) => { dialogs.push(d.message()); await d.dismiss(); });
  page.on("pageerror", (e) => log("page error: " + e.message));
  return { ctx, page };
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(cfg.shots, name + ".png"), fullPage: true });
}

async function signIn(page, user, password) {
  await page.goto(cfg.base + "/");
  if (!page.url().endsWith("/login")) { throw new Error("not sent to the sign-in form: " + page.url()); }
  await page.fill("input[name=username]", user);
  await page.fill("input[name=password]", password);
  await Promise.all([page.waitForURL(cfg.base + "/"), page.click("button[type=submit]")]);
}

// rowStage waits until the listing row that names file shows stage.
async function rowStage(page, file, stage) {
  await page.waitForFunction(([file, stage]) => Array.from(document.querySelectorAll("table.orders tbody tr"))
    .some((tr) => tr.textContent.includes(file) && tr.querySelector(".stage").textContent === stage), [file, stage], { timeout: TIMEOUT });
}

async function stageIs(page, stage) {
  await page.waitForFunction((stage) => {
    const s = document.querySelector(".state .stage");
    return s && s.textContent === stage;
  }, stage, { timeout: TIMEOUT });
}

async function main() {
  const a = await browser();
  await a.page.goto(cfg.base + "/");
  await shot(a.page, "sign-in");
  await signIn(a.page, "alice", cfg.passwords.alice);

  // Only her orders.
  const links = await a.page.$$eval("table.orders a", (as) => as.map((x) => x.getAttribute("href")));
  if (!links.includes("/orders/" + cfg.failed)) { throw new Error("alice does not see her order: " + links); }
  if (links.includes("/orders/" + cfg.bob)) { throw new Error("alice sees bob's order: " + links); }
  await a.page.evaluate(() => { window.__adiSamePage = true; });

  // A dropped file appears, then runs and completes, without a reload.
  await step("drop");
  await rowStage(a.page, cfg.drop, "Import Pending");
  log("the drop is pending");
  await shot(a.page, "my-orders-pending");

  // The admin cancels another person's pending order.
  const b = await browser();
  await signIn(b.page, "root", cfg.passwords.root);
  await b.page.goto(cfg.base + "/orders/" + cfg.bob);
  await stageIs(b.page, "Import Pending");
  await Promise.all([b.page.waitForResponse((r) => r.url().endsWith("/cancel")), b.page.click("form[data-action=cancel] button")]);
  await stageIs(b.page, "Import Cancelled");
  log("the admin cancelled bob's order");
  await shot(b.page, "order-cancelled-by-admin");
  await b.page.goto(cfg.base + "/queue");
  await b.page.waitForSelector("text=Per agent");
  await shot(b.page, "queue");
  await b.ctx.close();

  await step("runner");
  await rowStage(a.page, cfg.drop, "Import Started");
  log("the drop is running");
  await rowStage(a.page, cfg.drop, "Import Completed");
  log("the drop completed");
  if (!(await a.page.evaluate(() => window.__adiSamePage === true))) { throw new Error("the page reloaded"); }
  const shown = await a.page.$$eval("span.file", (s) => s.map((x) => x.textContent));
  if (!shown.includes(cfg.drop)) { throw new Error("the hostile file name is not shown as text: " + JSON.stringify(shown)); }
  await shot(a.page, "my-orders");

  // A failed order is retried.
  await a.page.goto(cfg.base + "/orders/" + cfg.failed);
  await stageIs(a.page, "Import Failed");
  await shot(a.page, "order-failed");
  await Promise.all([a.page.waitForResponse((r) => r.url().endsWith("/retry")), a.page.click("form[data-action=retry] button")]);
  await a.page.waitForFunction(() => document.querySelector("table.history").textContent.includes("retry requested"), null, { timeout: TIMEOUT });
  log("the failed order was retried");
  await shot(a.page, "order-retried");
  await a.ctx.close();
  if (dialogs.length > 0) { throw new Error("a file name ran as script: dialogs " + JSON.stringify(dialogs)); }
  process.stdout.write("DONE\n");
}

main().then(() => process.exit(0), (e) => { process.stdout.write("FAIL " + (e && e.stack || e) + "\n"); process.exit(1); });
