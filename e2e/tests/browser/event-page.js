// One visitor in headless Chromium through the demo, driven by e2e/tests/demo.rs:
//
//   node event-page.js <event-page-url> <out-dir>
//
// Opens the protected event page, is sent to the queue, comes back admitted,
// then uses the page as a person would: claims the coupon, holds a seat,
// confirms it (which ends the session), and checks what the page shows after
// each step. Prints one JSON
// line {"event":"result", ...} (or {"event":"error"}), with screenshots of
// the page at phone and desktop sizes in <out-dir>. Uses playwright-core from
// waiting-room/tests/browser and Debian's Chromium; never downloads a browser.
"use strict";

const path = require("path");
const { chromium } = require(path.join(__dirname, "../../../waiting-room/tests/browser/node_modules/playwright-core"));

const CHROMIUM = process.env.WR_CHROMIUM || "/usr/bin/chromium";
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"];
const [pageUrl, outDir] = process.argv.slice(2);
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

async function main() {
  const target = new URL(pageUrl);
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
  const result = { event: "result", pageErrors: [], consoleErrors: [], steps: {} };
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    page.on("pageerror", (e) => result.pageErrors.push(String(e && e.message)));
    page.on("console", (m) => { if (m.type() === "error") result.consoleErrors.push(m.text()); });

    await page.goto(pageUrl, { waitUntil: "domcontentloaded" });
    result.queueUrl = page.url();
    // The queue page takes the visitor back once admitted.
    await page.waitForURL((u) => u.pathname === target.pathname, { timeout: 30000 });
    result.title = await page.title();
    result.heading = (await page.textContent("h1")).trim();

    // The coupon first: confirming the booking ends the session.
    const claim = page.locator("#campaigns button.primary").first();
    await claim.click();
    const code = page.locator("#campaigns .result code.coupon").first();
    await code.waitFor({ timeout: 10000 });
    result.steps.code = (await code.textContent()).trim();
    result.steps.claimButton = { text: (await claim.textContent()).trim(), disabled: await claim.isDisabled() };
    await page.waitForFunction(() => document.querySelector("#my-coupons code"), null, { timeout: 10000 });
    result.steps.myCoupons = (await page.textContent("#my-coupons")).replace(/\s+/g, " ").trim();
    result.steps.sessionOpenAfterClaim = await page.isHidden("#ended");

    const available = page.locator('#seatmap button[aria-disabled="false"]').first();
    await available.waitFor({ timeout: 10000 });
    result.seatButtons = await page.locator("#seatmap button").count();
    result.steps.seatLabel = await available.getAttribute("aria-label");
    await available.click();
    const hold = page.locator("#holds .hold").first();
    await hold.waitFor({ timeout: 10000 });
    await page.waitForFunction(() => /\d+:\d\d left/.test(document.querySelector("#holds .timer").textContent));
    result.steps.hold = (await hold.textContent()).replace(/\s+/g, " ").trim();
    result.steps.mineSeats = await page.locator("#seatmap button.mine").count();
    result.steps.toastAfterHold = (await page.textContent("#toast")).trim();

    for (const [name, size] of [["phone", { width: 390, height: 844 }], ["desktop", { width: 1280, height: 900 }]]) {
      await page.setViewportSize(size);
      await page.screenshot({ path: path.join(outDir, `event-page-${name}.png`), fullPage: true, animations: "disabled" });
    }
    // On a phone the seat map scrolls sideways inside its card, never the page.
    await page.setViewportSize({ width: 390, height: 844 });
    result.phonePageOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    await page.setViewportSize({ width: 1280, height: 900 });

    await page.click("#holds .confirm");
    await page.waitForFunction(() => !document.querySelector("#holds .hold"), null, { timeout: 10000 });
    await page.waitForFunction(() => /Seat /.test(document.querySelector("#bookings").textContent), null, { timeout: 10000 });
    result.steps.bookings = (await page.textContent("#bookings")).replace(/\s+/g, " ").trim();
    result.steps.bookedMine = await page.locator("#seatmap button.mine.booked").count();
    // The purchase ended the session, and the page says why.
    await page.waitForSelector("#ended", { state: "visible", timeout: 10000 });
    result.steps.ended = (await page.textContent("#ended")).replace(/\s+/g, " ").trim();
    result.steps.seatButtonsDisabled = await page.locator("#seatmap button:not([disabled])").count() === 0;

    result.liveRegions = await page.locator("[aria-live]").count();
    await context.close();
  } finally {
    await browser.close();
  }
  emit(result);
}

main().then(
  () => process.exit(0),
  (e) => {
    emit({ event: "error", message: String((e && e.stack) || e) });
    process.exit(1);
  },
);
