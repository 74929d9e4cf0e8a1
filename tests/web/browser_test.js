// Drives vismem's web page in headless Chromium (puppeteer-core, Debian's
// /usr/bin/chromium): enters the token, uploads a photo, waits for the
// prediction, saves a screenshot, then removes the nearest neighbor through
// the page. Prints one JSON line with what the page showed; the C++ test
// (tests/test_server_web.cpp) compares it with `vismem classify` and the memory.
//
//   node browser_test.js URL PHOTO TOKEN SCREENSHOT.png PROFILE_DIR
"use strict";
const puppeteer = require("puppeteer-core");

async function main() {
  const [url, photo, token, screenshot, profile] = process.argv.slice(2);
  if (!profile) throw new Error("usage: node browser_test.js URL PHOTO TOKEN SCREENSHOT.png PROFILE_DIR");
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    userDataDir: profile,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage"],
  });
  const out = {};
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1280, height: 900 });
    const consoleErrors = [];
    page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
    page.on("pageerror", (e) => consoleErrors.push(String(e)));
    await page.goto(url, { waitUntil: "load", timeout: 30000 });
    // The token: typed and committed like a user would (change event).
    await page.type("#token", token);
    await page.$eval("#token", (el) => el.dispatchEvent(new Event("change")));
    await page.waitForFunction(() => /items/.test(document.getElementById("info").textContent), { timeout: 30000 });
    out.info = await page.$eval("#info", (el) => el.textContent);
    consoleErrors.length = 0;  // the first /v1/info, before the token, is refused (401) by design

    const input = await page.$("#file");
    await input.uploadFile(photo);
    await page.waitForFunction(() => ["done", "error"].includes(document.body.dataset.state), { timeout: 60000 });
    out.state = await page.evaluate(() => document.body.dataset.state);
    out.error = await page.$eval("#error", (el) => el.textContent);
    out.prediction = await page.$eval("#prediction", (el) => el.textContent);
    out.neighbors = await page.$$eval("#neighbors .tile", (ts) => ts.map((t) => ({
      id: t.dataset.id,
      text: t.textContent,
      image: !!t.querySelector("img") && t.querySelector("img").naturalWidth > 0,
    })));
    out.scores = await page.$$eval("#scores .bar", (bs) => bs.map((b) => b.firstChild.textContent));
    await page.screenshot({ path: screenshot, fullPage: true });

    // Remove the nearest neighbor from the page (confirm dialog accepted).
    page.on("dialog", (d) => d.accept());
    out.removed = out.neighbors.length ? out.neighbors[0].id : null;
    if (out.removed) {
      await page.click("#neighbors .tile button");
      await page.waitForFunction((id) => document.body.dataset.removed === id ||
                                         document.getElementById("error").textContent !== "",
                                 { timeout: 30000 }, out.removed);
      out.removed_shown = await page.evaluate(() => document.body.dataset.removed || null);
      out.error_after_remove = await page.$eval("#error", (el) => el.textContent);
    }
    out.console_errors = consoleErrors;
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error("browser test failed: " + (e && e.stack ? e.stack : e));
  process.exit(1);
});
