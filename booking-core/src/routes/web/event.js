// The event page: seat map, holds with a countdown, confirm/release, coupon
// claims and "mine" lists, all through the booking core's JSON API on the
// same origin (the wr_entry cookie rides along). POSTs carry an
// Idempotency-Key and are retried with the same key after a network error,
// so a lost answer never books twice.
(function () {
  "use strict";

  var state = JSON.parse(document.getElementById("page-state").textContent);
  var ev = state.event;
  var holds = new Map(); // seat id -> {hold_id, seat_id, label, expires_ms}
  var seatsById = new Map(); // seat id -> seat from the last seat map
  var buttons = new Map(); // seat id -> its button
  var busySeats = new Set();
  var ended = false;
  var money;
  try {
    money = new Intl.NumberFormat(undefined, { style: "currency", currency: "EUR" });
  } catch (e) {
    money = { format: function (n) { return n.toFixed(2); } };
  }
  var $ = function (id) { return document.getElementById(id); };

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "class") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { node.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return node;
  }

  function when(iso, withDay) {
    var d = new Date(iso);
    if (isNaN(d)) return iso;
    var opts = withDay
      ? { weekday: "short", day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit" }
      : { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" };
    if (d.getFullYear() !== new Date().getFullYear()) opts.year = "numeric";
    return d.toLocaleString(undefined, opts);
  }

  function clock(ms) {
    var s = Math.max(0, Math.ceil(ms / 1000));
    return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  }

  function price(cents) { return money.format(cents / 100); }

  function newKey() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    var bytes = new Uint8Array(16);
    if (window.crypto && crypto.getRandomValues) crypto.getRandomValues(bytes);
    else for (var i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
    return Array.prototype.map.call(bytes, function (b) { return b.toString(16).padStart(2, "0"); }).join("");
  }

  var toastTimer;
  function say(text) {
    var t = $("toast");
    t.textContent = text;
    t.classList.add("show");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { t.classList.remove("show"); }, 4500);
  }

  // One API call. Never throws: network failures come back as status 0.
  function api(method, path, options) {
    options = options || {};
    var headers = { Accept: "application/json" };
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    if (options.key) headers["Idempotency-Key"] = options.key;
    return fetch(path, {
      method: method,
      headers: headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      credentials: "same-origin",
      cache: "no-store",
    }).then(function (res) {
      return res.text().then(function (text) {
        var data = null;
        if (text) {
          try { data = JSON.parse(text); } catch (e) { data = { detail: text.slice(0, 200) }; }
        }
        if (res.status === 401) sessionEnded("expired");
        return { ok: res.ok, status: res.status, data: data || {} };
      });
    }, function () {
      return { ok: false, status: 0, data: { detail: "Network problem: check your connection and try again." } };
    });
  }

  // A POST that changes something: one key for the whole retry sequence.
  function post(path, body) {
    var key = newKey();
    var attempt = function (n) {
      return api("POST", path, { body: body, key: key }).then(function (r) {
        var retry = r.status === 0 || r.status === 503 || (r.status === 409 && r.data.detail && /still being processed/.test(r.data.detail));
        if (retry && n < 3) {
          return new Promise(function (ok) { setTimeout(ok, 400 * (n + 1)); }).then(function () { return attempt(n + 1); });
        }
        return r;
      });
    };
    return attempt(0);
  }

  function detail(r) { return (r.data && r.data.detail) || "Something went wrong (HTTP " + r.status + "). Try again."; }

  // Why the session ended: its time ran out (or the proxy stopped admitting
  // the token), or a purchase ended it (`session_end` of a confirm or claim).
  var ENDED_WHY = {
    expired: "Entry passes last a limited time so everyone in line gets a turn.",
    confirm: "You completed your purchase, so your place goes to the next person in line. Your booking is safe: it is listed below.",
    claim: "You claimed your coupon, so your place goes to the next person in line. Your code is shown below.",
  };
  function sessionEnded(reason) {
    if (ended) return;
    ended = true;
    $("ended-why").textContent = ENDED_WHY[reason] || ENDED_WHY.expired;
    $("ended").hidden = false;
    $("session").hidden = false;
    $("session").textContent = "Session ended";
    $("rejoin").focus();
    document.querySelectorAll("main button").forEach(function (b) { b.disabled = true; });
  }

  // ---- Session countdown (the entry token's expiry) ----
  var sessionEnd = state.session_ends_at ? Date.parse(state.session_ends_at) : NaN;
  function tickSession() {
    if (isNaN(sessionEnd)) return;
    var left = sessionEnd - Date.now();
    var s = $("session");
    s.hidden = false;
    if (ended) return;
    s.textContent = left > 0 ? "Session ends in " + clock(left) : "Session ended";
    s.classList.toggle("low", left < 60000);
    if (left <= 0) sessionEnded("expired");
  }

  // ---- Seat map ----
  function seatState(seat) {
    if (seat.mine && seat.status === "BOOKED") return "booked by you";
    if (seat.mine) return "held by you";
    if (seat.status === "BOOKED") return "booked";
    if (seat.status === "HELD") return "held by someone else";
    return "available";
  }

  function paintSeat(btn, seat) {
    var cls = "seat " + seat.status.toLowerCase() + (seat.mine ? " mine" : "") + (btn.dataset.aisle ? " aisle" : "");
    if (busySeats.has(seat.id)) cls += " busy";
    btn.className = cls;
    btn.textContent = seat.mine ? (seat.status === "BOOKED" ? "\u2713" : "\u2605") : seat.status === "BOOKED" ? "\u00d7" : seat.status === "HELD" ? "\u2013" : String(seat.number);
    btn.setAttribute("aria-label", "Row " + seat.row + " seat " + seat.number + ", " + price(seat.price_cents) + ", " + seatState(seat));
    var usable = seat.status === "AVAILABLE" || (seat.mine && seat.status === "HELD");
    btn.setAttribute("aria-disabled", usable ? "false" : "true");
    btn.setAttribute("aria-pressed", seat.mine && seat.status === "HELD" ? "true" : "false");
  }

  function buildMap(seats) {
    var rows = [];
    var byRow = new Map();
    seats.forEach(function (s) {
      if (!byRow.has(s.row)) { byRow.set(s.row, []); rows.push(s.row); }
      byRow.get(s.row).push(s);
    });
    var wrap = el("div", { class: "rows" });
    wrap.style.setProperty("--cols", String(Math.max.apply(null, rows.map(function (r) { return byRow.get(r).length; })) + 1));
    buttons.clear();
    rows.forEach(function (row) {
      var list = byRow.get(row);
      var n = list.length;
      var block = n >= 12 ? Math.floor(n / 4) : 0; // two aisles split long rows into three blocks
      var line = el("div", { class: "row", role: "group", "aria-label": "Row " + row });
      line.appendChild(el("span", { class: "row-label", "aria-hidden": "true", text: row }));
      list.forEach(function (seat, i) {
        var btn = el("button", { type: "button" });
        if (block && (i + 1 === block || i + 1 === n - block)) btn.dataset.aisle = "1";
        btn.dataset.seat = String(seat.id);
        btn.addEventListener("click", function () { onSeat(seat.id); });
        buttons.set(seat.id, btn);
        line.appendChild(btn);
      });
      line.appendChild(el("span", { class: "row-label", "aria-hidden": "true", text: row }));
      wrap.appendChild(line);
    });
    var map = $("seatmap");
    map.textContent = "";
    map.appendChild(wrap);
    fitHint();
  }

  function fitHint() {
    var map = $("seatmap");
    $("scroll-hint").hidden = map.scrollWidth <= map.clientWidth + 1;
  }
  window.addEventListener("resize", fitHint);

  var loadingSeats = false;
  function loadSeats() {
    if (loadingSeats || ended) return Promise.resolve();
    loadingSeats = true;
    return api("GET", "/api/events/" + ev.id + "/seats").then(function (r) {
      loadingSeats = false;
      if (!r.ok) {
        if (r.status !== 401) $("seatmap").textContent = "The seat map could not be loaded: " + detail(r);
        return;
      }
      var seats = r.data.seats || [];
      if (seats.length !== buttons.size) buildMap(seats);
      seatsById.clear();
      seats.forEach(function (s) {
        seatsById.set(s.id, s);
        var btn = buttons.get(s.id);
        if (btn) paintSeat(btn, s);
        // A hold of ours that is gone (expired, taken over) leaves the cart.
        if (holds.has(s.id) && !(s.mine && s.status === "HELD")) holds.delete(s.id);
      });
      $("available").textContent = r.data.available + " of " + seats.length + " seats available";
      renderHolds();
    });
  }

  function onSeat(id) {
    if (ended || busySeats.has(id)) return;
    var seat = seatsById.get(id);
    if (!seat) return;
    if (seat.mine && seat.status === "HELD") {
      say("Seat " + seat.label + " is already held for you: confirm or release it under Your holds.");
      var target = document.querySelector('[data-hold-seat="' + id + '"] .confirm');
      if (target) target.focus();
      return;
    }
    if (seat.status !== "AVAILABLE") {
      say("Seat " + seat.label + " is " + seatState(seat) + ". Pick another one.");
      return;
    }
    busySeats.add(id);
    paintSeat(buttons.get(id), seat);
    post("/api/events/" + ev.id + "/holds", { seat_id: id }).then(function (r) {
      busySeats.delete(id);
      if (r.status === 201) {
        holds.set(id, { hold_id: r.data.hold_id, seat_id: id, label: seat.label, expires_ms: Date.parse(r.data.expires_at) });
        var span = clock(Date.parse(r.data.expires_at) - Date.now());
        say(r.data.ends_with_session
          ? "Seat " + seat.label + " is held for you until your session ends, in " + span + ". Confirm to book it."
          : "Seat " + seat.label + " is held for you for " + span + ". Confirm to book it.");
      } else if (r.status === 409 && r.data.limit) {
        say(detail(r));
      } else if (r.status === 409 && r.data.hold_id) {
        holds.set(id, { hold_id: r.data.hold_id, seat_id: id, label: seat.label, expires_ms: NaN });
        say("You already hold seat " + seat.label + ".");
      } else if (r.status === 409) {
        say("Too late: seat " + seat.label + " was just taken. Pick another one.");
      } else if (r.status !== 401) {
        say(detail(r));
      }
      return loadSeats();
    });
  }

  // ---- Holds ----
  // Rebuilt only when the set of holds changes, so a focused button survives
  // the periodic seat-map refresh.
  var shownHolds = null;
  function renderHolds() {
    var signature = Array.from(holds.values()).map(function (h) {
      return h.hold_id + (seatsById.has(h.seat_id) ? "+" : "");
    }).join(",");
    if (signature === shownHolds) { tickHolds(); return; }
    shownHolds = signature;
    var list = $("holds");
    list.textContent = "";
    $("cart-empty").hidden = holds.size > 0;
    $("cart").classList.toggle("has-holds", holds.size > 0);
    holds.forEach(function (h) {
      var seat = seatsById.get(h.seat_id);
      var timer = el("span", { class: "timer", "data-expires": String(h.expires_ms) });
      var confirm = el("button", { type: "button", class: "button primary confirm", text: "Confirm booking" });
      var release = el("button", { type: "button", class: "button", text: "Release" });
      confirm.addEventListener("click", function () { onConfirm(h, confirm, release); });
      release.addEventListener("click", function () { onRelease(h, confirm, release); });
      var item = el("li", { class: "hold", "data-hold-seat": String(h.seat_id) }, [
        el("div", { class: "hold-top" }, [
          el("span", { class: "hold-seat", text: "Seat " + h.label + (seat ? " \u00b7 " + price(seat.price_cents) : "") }),
          timer,
        ]),
        el("div", { class: "actions" }, [confirm, release]),
      ]);
      list.appendChild(item);
    });
    tickHolds();
  }

  function tickHolds() {
    var expired = [];
    document.querySelectorAll(".timer").forEach(function (t) {
      var at = Number(t.dataset.expires);
      if (isNaN(at)) { t.textContent = "held"; return; }
      var left = at - Date.now();
      t.textContent = left > 0 ? clock(left) + " left" : "expired";
      t.classList.toggle("low", left < 60000);
      if (left <= 0) expired.push(Number(t.closest(".hold").dataset.holdSeat));
    });
    expired.forEach(function (seatId) {
      var h = holds.get(seatId);
      if (!h) return;
      holds.delete(seatId);
      say("Your hold on seat " + h.label + " expired; the seat is free again.");
    });
    if (expired.length) { renderHolds(); loadSeats(); }
  }

  function onConfirm(h, confirm, release) {
    confirm.disabled = release.disabled = true;
    confirm.textContent = "Booking\u2026";
    post("/api/holds/" + encodeURIComponent(h.hold_id) + "/confirm").then(function (r) {
      if (r.ok && r.data.session_end) {
        // The purchase ended the session: the token is no longer admitted,
        // so show what was bought from this answer instead of asking again.
        holds.delete(h.seat_id);
        booked.push(r.data);
        showBookings();
        var btn = buttons.get(h.seat_id), seat = seatsById.get(h.seat_id);
        if (btn && seat) { seat.status = "BOOKED"; seat.mine = true; paintSeat(btn, seat); }
        renderHolds();
        say("Booked! Seat " + h.label + " is yours.");
        sessionEnded(r.data.session_end);
        return;
      }
      if (r.ok) {
        holds.delete(h.seat_id);
        say(holds.size ? "Booked! Seat " + h.label + " is yours. Confirm your other holds to complete your purchase."
          : "Booked! Seat " + h.label + " is yours.");
      } else if (r.status === 410 || r.status === 404) {
        holds.delete(h.seat_id);
        say(detail(r));
      } else if (r.status !== 401) {
        confirm.disabled = release.disabled = false;
        confirm.textContent = "Confirm booking";
        say(detail(r));
        return;
      }
      renderHolds();
      loadSeats();
      loadMine();
    });
  }

  function onRelease(h, confirm, release) {
    confirm.disabled = release.disabled = true;
    api("DELETE", "/api/holds/" + encodeURIComponent(h.hold_id)).then(function (r) {
      if (r.ok || r.status === 404) {
        holds.delete(h.seat_id);
        say("Seat " + h.label + " released.");
      } else if (r.status !== 401) {
        confirm.disabled = release.disabled = false;
        say(detail(r));
        return;
      }
      renderHolds();
      loadSeats();
    });
  }

  // ---- Coupons ----
  var claimed = new Map(); // campaign id -> code

  function showCode(result, text, code, kind) {
    result.className = "result " + kind;
    result.textContent = text + " ";
    var c = el("code", { class: "coupon", text: code });
    result.appendChild(c);
    if (navigator.clipboard && window.isSecureContext) {
      var copy = el("button", { type: "button", class: "button", text: "Copy" });
      copy.style.marginLeft = ".5rem";
      copy.style.minHeight = "32px";
      copy.addEventListener("click", function () {
        navigator.clipboard.writeText(code).then(function () { say("Code copied."); }, function () { say("Copy failed; select the code instead."); });
      });
      result.appendChild(copy);
    }
  }

  function renderCampaigns() {
    var box = $("campaigns");
    if (!state.campaigns.length) return;
    box.textContent = "";
    state.campaigns.forEach(function (c) {
      var result = el("p", { class: "result", id: "claim-result-" + c.id, "aria-live": "polite" });
      var button = el("button", { type: "button", class: "button primary", id: "claim-" + c.id, text: "Claim coupon" });
      var now = Date.now();
      var window_ = now < Date.parse(c.opens_at)
        ? "Opens " + when(c.opens_at)
        : now >= Date.parse(c.closes_at) ? "Closed " + when(c.closes_at) : "Open until " + when(c.closes_at);
      button.addEventListener("click", function () { onClaim(c, button, result); });
      box.appendChild(el("div", { class: "campaign" }, [
        el("span", { class: "campaign-name", text: c.name }),
        el("p", { class: "campaign-meta", text: c.stock + " codes, first come first served, one per visitor \u00b7 " + window_ }),
        button,
        result,
      ]));
    });
  }

  function markClaimed(c, code, text, kind) {
    claimed.set(c.id, code);
    var button = $("claim-" + c.id);
    if (button) { button.disabled = true; button.textContent = "Claimed"; }
    var result = $("claim-result-" + c.id);
    if (result) showCode(result, text, code, kind);
  }

  function onClaim(c, button, result) {
    button.disabled = true;
    button.textContent = "Claiming\u2026";
    result.className = "result";
    result.textContent = "";
    post("/api/coupons/" + c.id + "/claims").then(function (r) {
      button.textContent = "Claim coupon";
      if (r.status === 201) {
        markClaimed(c, r.data.code, "Your code:", "ok");
        say("Coupon claimed: " + r.data.code);
        if (r.data.session_end) {
          coupons.push(r.data);
          showCoupons();
          sessionEnded(r.data.session_end);
        } else {
          loadMine();
        }
        return;
      }
      if (r.status === 409 && r.data.code) {
        markClaimed(c, r.data.code, "You already claimed one. Your code:", "warn");
        return;
      }
      var text;
      if (r.status === 410) {
        text = "Sold out: all " + c.stock + " codes have been claimed.";
      } else if (r.status === 403 && r.data.opens_at) {
        text = "Not open yet: claims open " + when(r.data.opens_at, true) + ".";
        button.disabled = false;
      } else if (r.status === 403 && r.data.closes_at) {
        text = "This campaign closed " + when(r.data.closes_at, true) + ".";
      } else {
        text = detail(r);
        button.disabled = r.status === 401;
      }
      result.className = "result " + (r.status === 410 ? "bad" : "warn");
      result.textContent = text;
    });
  }

  // ---- Mine ----
  function fill(listId, items, render) {
    var list = $(listId);
    list.textContent = "";
    if (!items.length) { list.appendChild(el("li", { class: "empty", text: "None yet." })); return; }
    items.forEach(function (item) { list.appendChild(render(item)); });
  }

  var booked = []; // this visitor's bookings of this event
  var coupons = []; // this visitor's coupon claims

  function showBookings() {
    fill("bookings", booked, function (b) {
      return el("li", {}, [
        el("span", {}, [el("strong", { text: "Seat " + b.seat_label }), " \u00b7 " + price(b.price_cents)]),
        el("span", { class: "campaign-meta", text: "booked " + when(b.booked_at) }),
      ]);
    });
  }

  function showCoupons() {
    var names = new Map(state.campaigns.map(function (c) { return [c.id, c]; }));
    coupons.forEach(function (claim) {
      var c = names.get(claim.campaign_id);
      if (c && !claimed.has(c.id)) markClaimed(c, claim.code, "Your code:", "ok");
    });
    fill("my-coupons", coupons, function (claim) {
      var c = names.get(claim.campaign_id);
      return el("li", {}, [
        el("code", { class: "coupon", text: claim.code }),
        el("span", { class: "campaign-meta", text: c ? c.name : "campaign " + claim.campaign_id }),
      ]);
    });
  }

  function loadMine() {
    api("GET", "/api/me/bookings").then(function (r) {
      if (!r.ok) return;
      booked = (Array.isArray(r.data) ? r.data : []).filter(function (b) { return b.event_id === ev.id; });
      showBookings();
    });
    api("GET", "/api/me/coupons").then(function (r) {
      if (!r.ok) return;
      coupons = Array.isArray(r.data) ? r.data : [];
      showCoupons();
    });
  }

  // ---- Start ----
  var starts = $("starts-at");
  starts.textContent = when(ev.starts_at, true);
  var minutes = Math.round(state.hold_seconds / 60);
  $("hold-minutes").textContent = minutes >= 1 ? minutes + (minutes === 1 ? " minute" : " minutes") : state.hold_seconds + " seconds";
  var ends = (state.end_session_on || []).map(function (e) { return e === "confirm" ? "your booking" : "your coupon claim"; });
  $("limit-hint").textContent = "Up to " + state.max_per_visitor + " seats per visitor." +
    (ends.length ? " Your session ends with " + ends.join(" or ") + " once no other seat is held, so book every seat you want first." : "");
  (state.holds || []).forEach(function (h) {
    holds.set(h.seat_id, { hold_id: h.hold_id, seat_id: h.seat_id, label: h.label, expires_ms: Date.parse(h.expires_at) });
  });
  renderCampaigns();
  renderHolds();
  loadSeats();
  loadMine();
  tickSession();
  setInterval(function () { tickHolds(); tickSession(); }, 1000);
  // Other visitors hold and book too: refresh the map while the page is visible.
  setInterval(function () { if (document.visibilityState === "visible") loadSeats(); }, 5000);
  document.addEventListener("visibilitychange", function () { if (document.visibilityState === "visible") loadSeats(); });
})();
