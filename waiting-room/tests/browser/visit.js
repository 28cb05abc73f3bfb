// One visitor in headless Chromium, driven by tests/proxy/browser.rs:
//
//   node visit.js <scenario> <start-url> <out-dir>
//
// scenario: "live" (WebSocket), "no-websocket" (every socket is closed by the
// test before the server sees it, so the page must poll), "no-javascript"
// (meta refresh only), "challenge" (a queue asking for a proof of work: the
// page solves it, joins and goes on live) or "challenge-no-webcrypto" (the
// same with WebCrypto removed from the page, so the plain-JavaScript SHA-256
// does the work), or "scheduled" (a queue not open yet: the page counts
// down, reloads itself into the pre-queue, then into its drawn place). The script launches Debian's Chromium, prints
// {"event":"launched"} and waits for one line on stdin, so the Rust test can
// put other visitors in line just before this one arrives. It then opens
// <start-url>, records what the queue page displays until the browser lands
// back on <start-url>, and prints one {"event":"result", ...} line.
// It never downloads a browser.
"use strict";

const fs = require("fs");
const path = require("path");
const readline = require("readline");
const { chromium } = require("playwright-core");

const CHROMIUM = process.env.WR_CHROMIUM || "/usr/bin/chromium";
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-quic",
  "--no-first-run",
  "--disable-component-update",
  "--disable-sync",
];
const DEADLINE_MS = Number(process.env.WR_DEADLINE_MS || 25000);
const SAMPLE_MS = 100;

const [scenario, startUrl, outDir] = process.argv.slice(2);
const SCENARIOS = ["live", "no-websocket", "no-javascript", "challenge", "challenge-no-webcrypto", "scheduled"];

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function waitForLine() {
  return new Promise((resolve) => {
    const rl = readline.createInterface({ input: process.stdin });
    rl.once("line", () => { rl.close(); resolve(); });
    rl.once("close", resolve);
  });
}

// What the queue page shows right now (null while a navigation is under way).
async function snapshot(page) {
  try {
    return await page.evaluate(() => {
      const text = (name) => {
        const el = document.querySelector(`[data-wr="${name}"]`);
        return el ? el.textContent.trim() : null;
      };
      const progress = document.querySelector('[data-wr="progress"]');
      return {
        url: location.href,
        status: document.documentElement.getAttribute("data-wr-status"),
        step: document.documentElement.getAttribute("data-wr-step"),
        challengeProgress: (document.querySelector('[data-wr="challenge_progress"]') || { getAttribute: () => null })
          .getAttribute("aria-valuenow"),
        powMs: (() => {
          const s = performance.getEntriesByName("wr-pow-start")[0];
          const d = performance.getEntriesByName("wr-pow-done")[0];
          return s && d ? Math.round(d.startTime - s.startTime) : null;
        })(),
        paused: document.documentElement.getAttribute("data-wr-paused"),
        link: document.documentElement.getAttribute("data-wr-link"),
        position: text("position"),
        eta: text("eta"),
        queueLength: text("queue_length"),
        connection: text("connection"),
        announce: text("announce"),
        progress: progress ? progress.getAttribute("aria-valuenow") : null,
        countdown: text("countdown"),
        publicId: text("public_id"),
        drawn: document.documentElement.getAttribute("data-wr-drawn"),
        title: document.title,
        readyVisible: !!document.querySelector(".wr-ready") &&
          getComputedStyle(document.querySelector(".wr-ready")).display !== "none",
      };
    });
  } catch (e) {
    return null; // execution context destroyed by a navigation
  }
}

async function main() {
  if (!SCENARIOS.includes(scenario) || !startUrl || !outDir) {
    throw new Error(`usage: node visit.js <${SCENARIOS.join("|")}> <start-url> <out-dir>`);
  }
  const target = new URL(startUrl);
  const started = Date.now();
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
  try {
    emit({ event: "launched", ms: Date.now() - started });
    await waitForLine();
    const t0 = Date.now();
    const context = await browser.newContext({
      viewport: { width: 1280, height: 800 },
      javaScriptEnabled: scenario !== "no-javascript",
    });
    const seen = {
      queuePageLoads: 0, statusPolls: 0, joinPosts: 0, answers: 0, sockets: 0, socketFrames: 0, blockedSockets: 0,
      pageErrors: [], consoleErrors: [],
    };
    if (scenario === "challenge-no-webcrypto") {
      // The page then tells its worker to use the plain-JavaScript SHA-256.
      await context.addInitScript(() => {
        Object.defineProperty(window.crypto, "subtle", { value: undefined });
      });
    }
    if (scenario === "no-websocket") {
      // The page sees its socket close at once, as behind a proxy that drops upgrades.
      await context.routeWebSocket(/\/wr\/[^/]+\/ws$/, (ws) => {
        seen.blockedSockets += 1;
        ws.close({ code: 1011, reason: "blocked by the test" });
      });
    }
    const page = await context.newPage();
    page.on("request", (r) => {
      const u = new URL(r.url());
      if (u.origin !== target.origin || !u.pathname.startsWith("/wr/")) return;
      if (r.resourceType() === "document") seen.queuePageLoads += 1;
      else if (u.pathname.endsWith("/status")) seen.statusPolls += 1;
      else if (u.pathname.endsWith("/join")) {
        seen.joinPosts += 1;
        if (r.postData()) seen.answers += 1;
      }
    });
    page.on("websocket", (ws) => {
      seen.sockets += 1;
      ws.on("framereceived", () => { seen.socketFrames += 1; });
    });
    page.on("pageerror", (e) => seen.pageErrors.push(String(e && e.message)));
    page.on("console", (m) => { if (m.type() === "error") seen.consoleErrors.push(m.text()); });

    const response = await page.goto(startUrl, { waitUntil: "domcontentloaded" });
    const redirectChain = [];
    for (let r = response && response.request().redirectedFrom(); r; r = r.redirectedFrom()) {
      redirectChain.unshift(r.url());
    }
    const queueUrl = page.url();
    // The step the server rendered the queue page in (the script may have moved on already).
    const served = response ? await response.text().catch(() => "") : "";
    const queueStep = (served.match(/data-wr-step="([^"]*)"/) || [])[1];

    const samples = [];
    const screenshots = [];
    let arrived = null;
    while (Date.now() - t0 < DEADLINE_MS) {
      const s = await snapshot(page);
      if (s) {
        const u = new URL(s.url);
        if (u.pathname === target.pathname && u.search === target.search) {
          arrived = { url: s.url, ms: Date.now() - t0 };
          break;
        }
        const last = samples[samples.length - 1];
        const watched = ["status", "step", "position", "eta", "queueLength", "link", "progress", "powMs", "countdown", "drawn"];
        if (!last || watched.some((k) => last[k] !== s[k])) {
          samples.push({ ...s, at: Date.now() - t0 });
        }
        // Screenshots once the line has moved, while the page still waits.
        const positions = samples.filter((x) => x.status === "WAITING").map((x) => x.position);
        if (scenario === "live" && !screenshots.length && s.status === "WAITING" && new Set(positions).size >= 2) {
          fs.mkdirSync(outDir, { recursive: true });
          for (const [name, size] of [["phone", { width: 360, height: 740 }], ["desktop", { width: 1280, height: 800 }]]) {
            await page.setViewportSize(size);
            const file = path.join(outDir, `queue-page-${name}.png`);
            await page.screenshot({ path: file, animations: "disabled" });
            const after = await snapshot(page);
            screenshots.push({ name, file, status: after && after.status, position: after && after.position });
          }
        }
      }
      await sleep(SAMPLE_MS);
    }
    const cookies = (await context.cookies(target.origin)).map((c) => ({
      name: c.name, httpOnly: c.httpOnly, path: c.path, sameSite: c.sameSite, expires: c.expires,
      value: c.name === "wr_entry" ? c.value : undefined,
    }));
    const body = arrived ? (await page.textContent("body").catch(() => null)) : null;
    emit({
      event: "result", scenario, redirectChain, queueUrl, queueStep, arrived, body, samples, screenshots, cookies, ...seen,
      elapsedMs: Date.now() - t0,
    });
    await context.close();
  } finally {
    await browser.close();
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    emit({ event: "error", message: String(e && e.stack || e) });
    process.exit(1);
  },
);
