// How long the queue page takes to solve its challenge in headless Chromium,
// per difficulty (bench/pow.sh starts the proxy and runs this):
//
//   node pow-bench.js <proxy-base-url> <samples> <bits>...
//
// For each difficulty the proxy has a queue "pow<bits>" whose challenge is
// always <bits> hard. Each sample is a fresh browser context (a new visitor)
// opening /wr/pow<bits>: the time is the page's own measure from the moment
// it starts solving (worker start included) to the nonce
// (performance marks wr-pow-start / wr-pow-done); the nonce the page then
// posts gives the hashes it tried. Samples run with WebCrypto (the normal
// path) and with WebCrypto removed (the plain-JavaScript fallback).
// Prints one JSON line per (mode, bits) and never downloads a browser.
"use strict";

const { chromium } = require("playwright-core");

const CHROMIUM = process.env.WR_CHROMIUM || "/usr/bin/chromium";
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"];
const MODES = (process.env.POW_MODES || "webcrypto plain").split(/\s+/).filter(Boolean);

const [base, samplesArg, ...bitsArgs] = process.argv.slice(2);

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  if (!s.length) return NaN;
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

async function sample(browser, bits, mode) {
  const context = await browser.newContext();
  try {
    if (mode === "plain") {
      // The page then tells its worker to use the plain-JavaScript SHA-256.
      await context.addInitScript(() => {
        try { Object.defineProperty(window.crypto, "subtle", { value: undefined }); } catch (e) { /* keep going */ }
      });
    }
    const page = await context.newPage();
    let nonce = null;
    page.on("request", (r) => {
      if (r.method() === "POST" && r.url().endsWith(`/wr/pow${bits}/join`) && r.postData()) {
        try { nonce = JSON.parse(r.postData()).nonce; } catch (e) { /* not an answer */ }
      }
    });
    await page.goto(`${base}/wr/pow${bits}`, { waitUntil: "domcontentloaded" });
    const ms = await page.waitForFunction(() => {
      const s = performance.getEntriesByName("wr-pow-start")[0];
      const d = performance.getEntriesByName("wr-pow-done")[0];
      return s && d ? d.startTime - s.startTime : null;
    }, null, { timeout: 600000, polling: 50 });
    const elapsed = await ms.jsonValue();
    for (let i = 0; i < 100 && nonce === null; i++) await new Promise((r) => setTimeout(r, 20));
    return { ms: elapsed, hashes: nonce === null ? NaN : Number(nonce) + 1 };
  } finally {
    await context.close();
  }
}

async function main() {
  const samples = Number(samplesArg);
  if (!base || !(samples > 0) || !bitsArgs.length) {
    throw new Error("usage: node pow-bench.js <proxy-base-url> <samples> <bits>...");
  }
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
  try {
    for (const mode of MODES) {
      for (const bits of bitsArgs.map(Number)) {
        const runs = [];
        for (let i = 0; i < samples; i++) runs.push(await sample(browser, bits, mode));
        const rates = runs.filter((r) => r.hashes > 0).map((r) => (r.hashes / r.ms) * 1000);
        process.stdout.write(JSON.stringify({
          mode, bits, samples, median_ms: median(runs.map((r) => r.ms)),
          p90_ms: [...runs.map((r) => r.ms)].sort((a, b) => a - b)[Math.min(runs.length - 1, Math.floor(runs.length * 0.9))],
          hashes_per_second: median(rates), runs,
        }) + "\n");
      }
    }
  } finally {
    await browser.close();
  }
}

main().then(() => process.exit(0), (e) => {
  process.stderr.write(String(e && e.stack || e) + "\n");
  process.exit(1);
});
