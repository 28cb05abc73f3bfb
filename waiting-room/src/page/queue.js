// Live updates for the queue page: a WebSocket first, polling when it fails.
// The page works without this script (meta refresh); this only makes it live,
// and solves the queue's challenge when it asks for one (pow.js, in a worker).
(function () {
  "use strict";
  var dataEl = document.getElementById("wr-data");
  if (!dataEl) return;
  var d;
  try { d = JSON.parse(dataEl.textContent); } catch (e) { return; }

  var root = document.documentElement;
  var base = "/wr/" + encodeURIComponent(d.queue);
  var returnTo = d.return_to; // validated server side: a same-origin path
  var baseTitle = document.title;
  var CELEBRATE_MS = 1200; // the "you're in" moment before navigating
  var ANNOUNCE_EVERY_MS = 15000; // screen readers hear the place at most this often
  var OPEN_TIMEOUT_MS = 8000; // a socket not open by then is treated as blocked
  var COOKIE_FETCH_TIMEOUT_MS = 4000;
  var storeKey = "wr:first-position:" + d.queue;
  // Every text this script writes, in the page's language (page/i18n.rs).
  var texts = d.t || {};
  function t(key, vars) {
    var text = typeof texts[key] === "string" ? texts[key] : key;
    return text.replace(/\{(\w+)\}/g, function (all, name) {
      return vars && vars[name] !== undefined ? String(vars[name]) : all;
    });
  }

  var done = false;
  var polling = false;
  var joined = false;
  var solving = false;
  var joinTimer = 0;
  var pollTimer = 0;
  var failures = 0;
  var memoryFirst = 0;
  var lastPosition = 0;
  var announced = { at: Date.now(), text: "", pending: "", timer: 0 };

  function each(name, fn) {
    var els = document.querySelectorAll('[data-wr="' + name + '"]');
    for (var i = 0; i < els.length; i++) fn(els[i]);
  }
  function setText(name, text) {
    each(name, function (el) { if (el.textContent !== text) el.textContent = text; });
  }
  function grouped(n) {
    return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, t("group_separator"));
  }
  function seconds(n) { return n === 1 ? t("one_second") : t("seconds", { n: n }); }
  // Same wording as page::human_wait_in in Rust.
  function humanWait(s) {
    if (s < 45) return t("less_than_a_minute");
    if (s < 90) return t("about_a_minute");
    if (s < 3570) return t("about_minutes", { n: Math.floor((s + 30) / 60) });
    if (s < 86400) {
      var q = Math.floor((s + 450) / 900), h = Math.floor(q / 4), m = (q % 4) * 15;
      if (!m) return h === 1 ? t("about_one_hour") : t("about_hours", { n: h });
      return h === 1 ? t("about_one_hour_minutes", { m: m }) : t("about_hours_minutes", { n: h, m: m });
    }
    return t("more_than_a_day");
  }
  // Same as page::wait_range_in in Rust.
  function waitRange(r) {
    return t("wait_range", { soonest: humanWait(r[0]), longest: humanWait(r[1]) });
  }
  // Same format as page::countdown_in in Rust.
  function two(n) { return (n < 10 ? "0" : "") + n; }
  function countdownText(secs) {
    var d = Math.floor(secs / 86400), h = Math.floor(secs / 3600) % 24, mi = Math.floor(secs / 60) % 60, s = secs % 60;
    if (d === 0 && h === 0) return two(mi) + ":" + two(s);
    if (d === 0) return h + ":" + two(mi) + ":" + two(s);
    return t(d === 1 ? "one_day" : "days", { n: d, clock: two(h) + ":" + two(mi) + ":" + two(s) });
  }
  function etaText(m) {
    if (m.status === "READY") return t("now");
    if (typeof m.eta_seconds !== "number") return "";
    return m.paused ? t("on_hold") : humanWait(m.eta_seconds);
  }

  // Progress is how far the visitor has moved from the first place this tab
  // saw, so it starts at zero and fills as the line moves. A place further back
  // than the remembered one means a new turn in line: start over from there.
  function firstPosition(p) {
    var first = memoryFirst;
    try { first = parseInt(sessionStorage.getItem(storeKey), 10) || 0; } catch (e) { /* storage off */ }
    if (!(first >= p)) first = p;
    memoryFirst = first;
    try { sessionStorage.setItem(storeKey, String(first)); } catch (e) { /* storage off */ }
    return first;
  }
  function setProgress(pct, name) {
    var v = Math.max(0, Math.min(100, Math.round(pct)));
    each(name || "progress", function (el) {
      el.setAttribute("aria-valuenow", String(v));
      el.style.setProperty("--wr-progress", v + "%");
      if (el.tagName === "PROGRESS") { el.max = 100; el.value = v; }
    });
  }

  function announce(text, now) {
    announced.pending = text;
    var wait = announced.at + ANNOUNCE_EVERY_MS - Date.now();
    if (now || wait <= 0) {
      clearTimeout(announced.timer);
      announced.timer = 0;
      flushAnnouncement();
    } else if (!announced.timer) {
      announced.timer = setTimeout(function () { announced.timer = 0; flushAnnouncement(); }, wait);
    }
  }
  function flushAnnouncement() {
    if (announced.pending === announced.text) return;
    announced.text = announced.pending;
    announced.at = Date.now();
    setText("announce", announced.text);
  }

  function setLink(state, text) {
    root.setAttribute("data-wr-link", state);
    setText("connection", text);
  }
  function setStep(step) {
    root.setAttribute("data-wr-step", step);
  }

  // The schedule's countdown: to the opening of the pre-queue or the line
  // (SCHEDULED: the page reloads then, a little spread so that not every
  // page asks in the same second; a pre-queue's order is drawn by lottery,
  // a line's FIFO order within a second is chance either way), or to the
  // draw (PREQUEUE: the socket brings the drawn place).
  var countdown = { target: 0, status: "", timer: 0 };
  var RELOAD_SPREAD_MS = 1500;
  var RELOAD_AT_LEAST_EVERY_MS = 600000; // a schedule an operator moved is heard
  var unavailable = 0;
  function countTo(m) {
    var to = m.status === "SCHEDULED" ? (m.prequeue_from && Date.parse(m.prequeue_from) > Date.now() ? m.prequeue_from : m.opens_at)
      : m.status === "PREQUEUE" ? m.opens_at : null;
    var target = to ? Date.parse(to) : 0;
    clearInterval(countdown.timer);
    countdown.timer = 0;
    countdown.target = target > 0 ? target : 0;
    countdown.status = m.status;
    if (!countdown.target) return;
    each("opens_at_text", function (el) {
      try {
        el.textContent = t("opens_on", { date: new Date(countdown.target).toLocaleString(d.lang || [], { dateStyle: "medium", timeStyle: "short" }) });
      } catch (e) { /* keep the server's text */ }
    });
    if (m.status === "SCHEDULED") {
      clearTimeout(pollTimer);
      var wait = Math.min(Math.max(0, countdown.target - Date.now()), RELOAD_AT_LEAST_EVERY_MS);
      pollTimer = setTimeout(function () { location.reload(); }, wait + Math.floor(Math.random() * RELOAD_SPREAD_MS));
    }
    tickCountdown();
    countdown.timer = setInterval(tickCountdown, 1000);
  }
  function tickCountdown() {
    var left = Math.max(0, Math.ceil((countdown.target - Date.now()) / 1000));
    setText("countdown", left > 0 ? countdownText(left) : t(countdown.status === "PREQUEUE" ? "drawing" : "opening"));
    if (left === 0) { clearInterval(countdown.timer); countdown.timer = 0; }
  }

  // Show a message. Returns nothing; READY and NOT_IN_QUEUE are handled by the caller.
  function apply(m) {
    var wasPaused = root.getAttribute("data-wr-paused") === "true";
    var wasStatus = root.getAttribute("data-wr-status");
    root.setAttribute("data-wr-status", m.status);
    if (m.status !== "NOT_IN_QUEUE") setStep("");
    root.setAttribute("data-wr-paused", m.paused ? "true" : "false");
    root.setAttribute("data-wr-drawn", m.status === "WAITING" && m.public_id ? "true" : "false");
    // Every message carries the operator's current message (none: cleared).
    setText("message", typeof m.message === "string" ? m.message : "");
    root.setAttribute("data-wr-mode", m.status === "WAITING" && m.mode === "random" ? "random" : "");
    // Not available (the operator's reject mode): look again now and then;
    // a socket still open may bring the line back first.
    clearTimeout(unavailable);
    if (m.status === "UNAVAILABLE") {
      unavailable = setTimeout(function () { location.reload(); },
        Math.max(5, m.retry_after_seconds || 30) * 1000 + Math.floor(Math.random() * RELOAD_SPREAD_MS));
    }
    if (typeof m.public_id === "string") setText("public_id", m.public_id);
    if (m.status !== countdown.status) countTo(m);
    setText("eta", etaText(m));
    if (m.status === "WAITING" && m.mode === "random" && m.wait_range_seconds) {
      setText("wait_range", waitRange(m.wait_range_seconds));
      setText("queue_length", typeof m.queue_length === "number" ? grouped(m.queue_length) : "");
      document.title = t("title_in_line", { title: baseTitle });
      if (wasStatus !== "WAITING") announce(t("said_random", { range: waitRange(m.wait_range_seconds) }), true);
      return;
    }
    if (m.status === "SCHEDULED" || m.status === "PREQUEUE" || m.status === "CLOSED" || m.status === "UNAVAILABLE" ||
      m.status === "SOLD_OUT") {
      if (m.status === "PREQUEUE" && typeof m.queue_length === "number") setText("entrants", grouped(m.queue_length));
      document.title = baseTitle;
      if (m.status !== wasStatus) {
        announce(t(m.status === "CLOSED" ? "said_closed"
          : m.status === "UNAVAILABLE" ? "said_unavailable"
          : m.status === "SOLD_OUT" ? "said_sold_out"
          : m.status === "PREQUEUE" ? "said_prequeue" : "said_scheduled"), true);
      }
      return;
    }
    if (m.status === "READY") {
      setProgress(100);
      document.title = t("title_ready", { title: baseTitle });
      return;
    }
    if (m.status !== "WAITING" || typeof m.position !== "number") {
      document.title = baseTitle;
      return;
    }
    setText("position", grouped(m.position));
    setText("queue_length", typeof m.queue_length === "number" ? grouped(m.queue_length) : "");
    setText("eta_seconds", typeof m.eta_seconds === "number" ? String(m.eta_seconds) : "");
    var first = firstPosition(m.position);
    setProgress(first > 0 ? (100 * (first - m.position)) / first : 0);
    document.title = t("title_position", { position: grouped(m.position), title: baseTitle });
    if (lastPosition && m.position < lastPosition) {
      each("position", function (el) {
        el.classList.remove("wr-bump");
        void el.offsetWidth; // restart the animation
        el.classList.add("wr-bump");
      });
    }
    lastPosition = m.position;
    var text = m.paused
      ? t("said_paused", { position: grouped(m.position) })
      : t("said_position", { position: grouped(m.position), eta: etaText(m) });
    announce(text, !!m.paused !== wasPaused || wasStatus !== "WAITING");
  }

  // Resolves with {status, body, retryAfter} for any answer; rejects only
  // when none came (network, timeout).
  function send(method, url, timeoutMs, body) {
    var ctrl = typeof AbortController === "function" ? new AbortController() : null;
    var timer = ctrl && timeoutMs ? setTimeout(function () { ctrl.abort(); }, timeoutMs) : 0;
    var headers = { accept: "application/json" };
    if (body) headers["content-type"] = "application/json";
    return fetch(url, {
      method: method,
      credentials: "same-origin",
      cache: "no-store",
      headers: headers,
      body: body ? JSON.stringify(body) : undefined,
      signal: ctrl ? ctrl.signal : undefined
    }).then(function (r) {
      var retry = parseInt(r.headers.get("retry-after"), 10);
      return r.json().catch(function () { return null; }).then(function (b) {
        clearTimeout(timer);
        return { status: r.status, body: b, retryAfter: retry > 0 ? retry : 0 };
      });
    }, function (e) {
      clearTimeout(timer);
      throw e;
    });
  }
  function request(method, url, timeoutMs) {
    return send(method, url, timeoutMs).then(function (a) {
      if (a.status !== 200 || !a.body) throw new Error("HTTP " + a.status);
      return a.body;
    });
  }

  // Only when /status could not set the HttpOnly cookie: the pushed token works
  // as a plain cookie too, since the gate reads the same name.
  function writeCookie(m) {
    if (typeof m.token !== "string" || !/^[A-Za-z0-9._-]+$/.test(m.token)) return;
    var c = "wr_entry=" + m.token + "; path=/; samesite=lax";
    var ms = Date.parse(m.expires_at) - Date.now();
    if (ms > 0) c += "; max-age=" + Math.floor(ms / 1000);
    if (location.protocol === "https:") c += "; secure";
    document.cookie = c;
  }

  // Admitted: celebrate briefly, make sure the cookie is set, then go.
  function admitted(m, cookieSet) {
    if (done) return;
    done = true;
    clearTimeout(pollTimer);
    clearTimeout(joinTimer);
    apply(m);
    setLink("live", t("link_admitted"));
    announce(t("said_admitted"), true);
    var started = Date.now();
    var cookie = cookieSet
      ? Promise.resolve()
      : request("GET", base + "/status", COOKIE_FETCH_TIMEOUT_MS).then(function (s) {
        if (!s || s.status !== "READY") throw new Error("status is " + (s && s.status));
      });
    cookie.catch(function () { writeCookie(m); }).then(function () {
      setTimeout(function () { location.replace(returnTo); }, Math.max(0, CELEBRATE_MS - (Date.now() - started)));
    });
  }

  function handle(m, fromStatus) {
    if (done || !m || typeof m.status !== "string") return;
    // Waiting again: should the place ever be lost (the queue's store
    // restarted), the next NOT_IN_QUEUE joins again, and the wr_ticket
    // cookie this join set puts the visitor back at their place in line.
    if (m.status === "WAITING" || m.status === "PREQUEUE") joined = false;
    if (m.status === "READY") admitted(m, fromStatus);
    else apply(m);
  }

  // Answers that need no socket and no polling: a queue not open yet (its
  // countdown reloads the page) or closed.
  function settled(m) {
    return m.status === "SCHEDULED" || m.status === "CLOSED" || m.status === "UNAVAILABLE";
  }

  function backoff() {
    return Math.min(30000, 2000 * Math.pow(2, Math.max(0, failures - 1)));
  }

  // Join the line (body: the answer to a challenge, or none). Resolves with
  // the standing, or with null when the page must first solve a challenge or
  // wait out a limit: those paths carry on by themselves.
  function joinLine(body) {
    return send("POST", base + "/join", 15000, body).then(function (a) {
      if (a.status === 200 && a.body) return a.body;
      if (a.status === 428 && a.body && typeof a.body.challenge === "string") {
        solve(a.body);
        return null;
      }
      if (a.status === 429) {
        refusedFor(a.body && a.body.detail, a.retryAfter || 5);
        return null;
      }
      throw new Error("HTTP " + a.status);
    });
  }
  function afterJoin(m) {
    if (!m || done) return;
    failures = 0;
    handle(m, true);
    if (done || settled(m)) return;
    if (polling) {
      var secs = Math.max(1, Math.min(60, m.retry_after_seconds || 5));
      setLink("polling", t("link_polling", { seconds: seconds(secs) }));
      schedule(secs * 1000);
    } else {
      connectSocket();
    }
  }
  function retryJoin(body, ms) {
    clearTimeout(joinTimer);
    joinTimer = setTimeout(function () {
      joinLine(body).then(afterJoin, function () {
        failures += 1;
        setLink("offline", t("link_lost"));
        retryJoin(body, backoff());
      });
    }, ms);
  }

  // Over a per-client limit: say so, and join again once it allows.
  function refusedFor(detail, secs) {
    clearTimeout(pollTimer);
    root.setAttribute("data-wr-status", "NOT_IN_QUEUE");
    setStep("refused");
    if (detail) setText("notice", detail);
    setLink("offline", t("link_retry", { seconds: seconds(secs) }));
    announce(t("said_refused", { seconds: seconds(secs) }), true);
    retryJoin(undefined, secs * 1000);
  }

  // The challenge: pow.js in a worker (on this thread if no worker starts).
  function runSolver(ch, progress) {
    var subtle = !!(window.isSecureContext && window.crypto && window.crypto.subtle && typeof TextEncoder === "function");
    var src = document.getElementById("wr-solver");
    function here() {
      if (!window.WR_POW) return Promise.reject(new Error("no solver on this page"));
      return window.WR_POW.solve(ch.challenge, ch.difficulty, false, progress, true);
    }
    var worker = null, url = "";
    try {
      url = URL.createObjectURL(new Blob([src.textContent], { type: "text/javascript" }));
      worker = new Worker(url);
    } catch (e) {
      if (url) URL.revokeObjectURL(url);
      return here();
    }
    return new Promise(function (resolve) {
      function finish(result) {
        worker.terminate();
        URL.revokeObjectURL(url);
        resolve(result);
      }
      worker.onmessage = function (e) {
        var m = e.data || {};
        if (typeof m.nonce === "string") finish(m.nonce);
        else if (m.error) finish(here());
        else if (typeof m.hashes === "number") progress(m.hashes);
      };
      worker.onerror = function () { finish(here()); };
      worker.postMessage({ challenge: ch.challenge, difficulty: ch.difficulty, subtle: subtle });
    });
  }
  function solve(ch) {
    if (solving || done) return;
    solving = true;
    clearTimeout(pollTimer);
    clearTimeout(joinTimer);
    root.setAttribute("data-wr-status", "NOT_IN_QUEUE");
    setStep("challenge");
    setProgress(0, "challenge_progress");
    setLink("checking", t("link_checking"));
    announce(t("said_checking"), true);
    var expected = Math.pow(2, ch.difficulty);
    var mark = typeof performance === "object" && performance.mark ? performance : null;
    if (mark) mark.mark("wr-pow-start");
    // The chance of having found an answer by now; it never quite reaches 100.
    runSolver(ch, function (hashes) { setProgress(99 * (1 - Math.exp(-hashes / expected)), "challenge_progress"); })
      .then(function (nonce) {
        solving = false;
        if (mark) mark.mark("wr-pow-done");
        setProgress(100, "challenge_progress");
        announce(t("said_solved"), true);
        var body = { challenge: ch.challenge, nonce: nonce };
        return joinLine(body).then(afterJoin, function () {
          failures += 1;
          setLink("offline", t("link_lost"));
          retryJoin(body, backoff());
        });
      }, function () {
        solving = false;
        failures += 1;
        setLink("offline", t("link_unsolved"));
        retryJoin(undefined, backoff());
      });
  }

  function schedule(ms) {
    clearTimeout(pollTimer);
    pollTimer = setTimeout(poll, ms);
  }
  function startPolling() {
    if (polling || done) return;
    polling = true;
    schedule(0);
  }
  function poll() {
    if (done || solving) return;
    request("GET", base + "/status", 10000).then(function (m) {
      // Not in line (e.g. the place lapsed): join once, then keep polling.
      if (m.status === "NOT_IN_QUEUE" && !joined) {
        joined = true;
        return joinLine();
      }
      return m;
    }).then(function (m) {
      if (!m) return; // solving a challenge or waiting out a limit
      failures = 0;
      handle(m, true);
      if (done || settled(m)) return;
      var secs = Math.max(1, Math.min(60, m.retry_after_seconds || 5));
      setLink("polling", t("link_polling", { seconds: seconds(secs) }));
      schedule(secs * 1000);
    }, function () {
      failures += 1;
      setLink("offline", t("link_lost"));
      schedule(backoff());
    });
  }

  function connectSocket() {
    if (typeof window.WebSocket !== "function") { startPolling(); return; }
    var ws;
    try {
      ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + base + "/ws");
    } catch (e) {
      startPolling();
      return;
    }
    var opened = false;
    var fallen = false;
    var challenge = null;
    var openTimer = setTimeout(function () { if (!opened) fallBack(); }, OPEN_TIMEOUT_MS);
    // Closed after a challenge (the place lapsed): solve it, join, connect
    // again. Any other end without READY (blocked, dropped, closed by a
    // proxy) means polling.
    function fallBack() {
      if (fallen) return;
      fallen = true;
      clearTimeout(openTimer);
      try { ws.close(); } catch (e) { /* already closed */ }
      if (done) return;
      if (challenge) solve(challenge);
      else startPolling();
    }
    ws.onopen = function () {
      opened = true;
      clearTimeout(openTimer);
      setLink("live", t("link_live"));
    };
    ws.onmessage = function (ev) {
      var m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      if (m && m.status === "NOT_IN_QUEUE" && m.challenge && typeof m.challenge.challenge === "string") {
        challenge = m.challenge;
        return;
      }
      // Not open yet, or closed: the server closes the socket after this.
      if (m && settled(m)) {
        fallen = true;
        clearTimeout(openTimer);
        handle(m, false);
        return;
      }
      // The place was lost while waiting (the queue's store restarted): join
      // again at once (the ticket cookie restores the place), then listen on
      // a new socket.
      if (m && m.status === "NOT_IN_QUEUE" && !joined && !done) {
        joined = true;
        fallen = true;
        clearTimeout(openTimer);
        try { ws.close(); } catch (e) { /* already closed */ }
        joinLine().then(afterJoin, function () {
          failures += 1;
          setLink("offline", t("link_lost"));
          retryJoin(undefined, backoff());
        });
        return;
      }
      handle(m, false);
    };
    ws.onerror = fallBack;
    ws.onclose = fallBack;
  }

  // Back/forward cache would show a stale page with no socket: load it afresh.
  window.addEventListener("pageshow", function (e) { if (e.persisted) location.reload(); });

  if (d.status === "READY") return; // the meta refresh is already taking the visitor in
  apply(d);
  // What the page says on load is read with it; announce only what changes.
  clearTimeout(announced.timer);
  announced.timer = 0;
  announced.text = announced.pending;
  setLink("connecting", t("link_connecting"));
  if (d.step === "refused") {
    // Reloading the page is the retry (without script, the meta refresh does it).
    setLink("offline", t("link_retry", { seconds: seconds(d.retry_after || 5) }));
    pollTimer = setTimeout(function () { location.reload(); }, (d.retry_after || 5) * 1000);
  } else if (d.challenge) {
    solve(d.challenge);
  } else if (d.status === "WAITING" || d.status === "PREQUEUE" || d.status === "SOLD_OUT") {
    // Sold out: an open socket hears when something is available again
    // (a socket the server closes at once means polling every Retry-After).
    connectSocket();
  } else if (settled(d)) {
    setLink("live", t(d.status === "CLOSED" ? "link_closed"
      : d.status === "UNAVAILABLE" ? "link_unavailable" : "link_scheduled"));
  } else {
    startPolling();
  }
})();
