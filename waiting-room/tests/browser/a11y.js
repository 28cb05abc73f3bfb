// Accessibility check in headless Chromium with axe-core, driven by
// tests/proxy/browser.rs (queue page states) and e2e/tests/accessibility.rs
// (the booking core's event page):
//
//   node a11y.js <targets.json>
//
// targets.json is a list of pages to check, each
//   {"name": "...", "url": "http://...", "locale": "de-DE",
//    "html": "/path/to/page.html",   // optional: serve this file at `url`
//    "waitForPath": "/events/1",     // optional: wait until the browser is there
//    "waitFor": "css selector",      // optional: wait until this is visible
//    "steps": [{"name": "...", "click": "css selector", "waitFor": "css selector"}]}
//                                     // optional: check again after each step
// With "html", the page is served by the browser itself at `url` (nothing
// listens there): every other request of the page is refused, its socket
// closed, and a navigation to another path answered 204 (so a READY page's
// redirect leaves it in place). Each page is checked in the light and the
// dark colour scheme. Prints one {"event":"result","pages":[...]} line with,
// per page and scheme, what it shows and axe's violations (all impacts).
// Uses Debian's Chromium and the npm packages of this directory; never
// downloads a browser.
"use strict";

const fs = require("fs");
const { chromium } = require("playwright-core");

const CHROMIUM = process.env.WR_CHROMIUM || "/usr/bin/chromium";
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"];
const AXE = require.resolve("axe-core/axe.min.js");
const SETTLE_MS = 600;

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// What the page shows: its language, state and the sections on screen.
function shown() {
  const root = document.documentElement;
  const visible = (el) => !!el && getComputedStyle(el).display !== "none" && el.getClientRects().length > 0;
  return {
    url: location.href,
    lang: root.getAttribute("lang"),
    status: root.getAttribute("data-wr-status"),
    step: root.getAttribute("data-wr-step"),
    mode: root.getAttribute("data-wr-mode"),
    drawn: root.getAttribute("data-wr-drawn"),
    title: document.title,
    // The colours in use (to tell that the scheme switched).
    colors: getComputedStyle(document.body).color + " on " +
      getComputedStyle(document.querySelector("main") || document.body).backgroundColor,
    sections: Array.from(document.querySelectorAll("main section, main [class^='wr-']"))
      .filter((el) => el.className && visible(el))
      .map((el) => String(el.className).split(" ")[0]),
    text: document.body ? document.body.innerText : "",
    connection: (document.querySelector('[data-wr="connection"]') || {}).textContent || null,
  };
}

async function check(browser, target) {
  const context = await browser.newContext({
    viewport: { width: 1024, height: 900 },
    locale: target.locale || "en-US",
    bypassCSP: true,
  });
  const errors = [];
  try {
    if (target.html) {
      const url = new URL(target.url);
      const html = fs.readFileSync(target.html, "utf8");
      await context.routeWebSocket(/.*/, (ws) => ws.close({ code: 1011, reason: "static page" }));
      await context.route("**/*", (route) => {
        const u = new URL(route.request().url());
        if (u.origin === url.origin && u.pathname === url.pathname && route.request().resourceType() === "document") {
          return route.fulfill({ status: 200, contentType: "text/html; charset=utf-8", body: html });
        }
        if (route.request().resourceType() === "document") return route.fulfill({ status: 204, body: "" });
        return route.abort();
      });
    }
    const page = await context.newPage();
    page.on("pageerror", (e) => errors.push(String(e && e.message)));
    await page.goto(target.url, { waitUntil: "load" });
    if (target.waitForPath) await page.waitForURL((u) => u.pathname === target.waitForPath, { timeout: 30000 });
    if (target.waitFor) await page.waitForSelector(target.waitFor, { state: "visible", timeout: 30000 });
    await sleep(SETTLE_MS);
    await page.addScriptTag({ path: AXE });
    const checked = [{ name: target.name, results: await run(page), pageErrors: errors.slice() }];
    for (const step of target.steps || []) {
      if (step.click) await page.click(step.click);
      if (step.waitFor) await page.waitForSelector(step.waitFor, { state: "visible", timeout: 15000 });
      await sleep(SETTLE_MS);
      checked.push({ name: `${target.name} / ${step.name}`, results: await run(page), pageErrors: errors.slice() });
    }
    return checked;
  } finally {
    await context.close();
  }
}

// axe on the page as it is, in the light and the dark colour scheme.
async function run(page) {
  const results = [];
  for (const scheme of ["light", "dark"]) {
    await page.emulateMedia({ colorScheme: scheme, reducedMotion: "reduce" });
    await sleep(150);
    const axe = await page.evaluate(async () => {
      // eslint-disable-next-line no-undef
      const r = await axe.run(document, { resultTypes: ["violations"] });
      return r.violations.map((v) => ({
        id: v.id,
        impact: v.impact,
        help: v.help,
        nodes: v.nodes.slice(0, 5).map((n) => ({ target: n.target.join(" "), summary: n.failureSummary })),
      }));
    });
    results.push({ scheme, shown: await page.evaluate(shown), violations: axe });
  }
  return results;
}

async function main() {
  const file = process.argv[2];
  if (!file) throw new Error("usage: node a11y.js <targets.json>");
  const targets = JSON.parse(fs.readFileSync(file, "utf8"));
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
  try {
    const pages = [];
    for (const target of targets) pages.push(...(await check(browser, target)));
    emit({ event: "result", axeVersion: require("axe-core/package.json").version, pages });
  } finally {
    await browser.close();
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    emit({ event: "error", message: String((e && e.stack) || e) });
    process.exit(1);
  },
);
