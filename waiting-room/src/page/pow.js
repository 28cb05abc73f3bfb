// The queue page's proof-of-work solver (see challenge.rs for the format):
// find a nonce such that SHA-256(challenge ":" nonce) starts with `bits` zero
// bits. This text runs twice: as a script of the page, where it only defines
// WR_POW (the fallback when a worker cannot start), and as the source of a
// Web Worker, where it answers {challenge, difficulty, subtle} with
// {hashes} progress messages and finally {nonce} (or {error}).
// WebCrypto's SHA-256 is used where the page may use it (a secure context);
// elsewhere a plain-JavaScript SHA-256 does the same work, more slowly.
var WR_POW = (function () {
  "use strict";
  var K = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
  ];
  var W = new Int32Array(64);

  // SHA-256 of an ASCII string (challenges and nonces are ASCII), as 8 words.
  function sha256(text) {
    var n = text.length, blocks = ((n + 8) >> 6) + 1, words = new Int32Array(blocks * 16);
    for (var i = 0; i < n; i++) words[i >> 2] |= (text.charCodeAt(i) & 0xff) << (24 - (i & 3) * 8);
    words[n >> 2] |= 0x80 << (24 - (n & 3) * 8);
    words[blocks * 16 - 1] = n * 8;
    var h0 = 0x6a09e667, h1 = 0xbb67ae85, h2 = 0x3c6ef372, h3 = 0xa54ff53a;
    var h4 = 0x510e527f, h5 = 0x9b05688c, h6 = 0x1f83d9ab, h7 = 0x5be0cd19;
    for (var b = 0; b < blocks; b++) {
      for (var t = 0; t < 64; t++) {
        if (t < 16) {
          W[t] = words[b * 16 + t];
        } else {
          var x = W[t - 15], y = W[t - 2];
          W[t] = (((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3)) + W[t - 16] +
            (((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10)) + W[t - 7];
        }
      }
      var a = h0, c = h2, d = h3, e = h4, f = h5, g = h6, h = h7, bb = h1;
      for (t = 0; t < 64; t++) {
        var t1 = h + (((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7))) +
          ((e & f) ^ (~e & g)) + K[t] + W[t];
        var t2 = (((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10))) +
          ((a & bb) ^ (a & c) ^ (bb & c));
        h = g; g = f; f = e; e = (d + t1) | 0; d = c; c = bb; bb = a; a = (t1 + t2) | 0;
      }
      h0 = (h0 + a) | 0; h1 = (h1 + bb) | 0; h2 = (h2 + c) | 0; h3 = (h3 + d) | 0;
      h4 = (h4 + e) | 0; h5 = (h5 + f) | 0; h6 = (h6 + g) | 0; h7 = (h7 + h) | 0;
    }
    return [h0, h1, h2, h3, h4, h5, h6, h7];
  }

  // Leading zero bits of a digest given as 32-bit words.
  function zeroBitsOfWords(words) {
    for (var i = 0, bits = 0; i < words.length; i++, bits += 32) {
      if (words[i] !== 0) return bits + Math.clz32(words[i]);
    }
    return bits;
  }
  function zeroBitsOfBytes(bytes) {
    for (var i = 0, bits = 0; i < bytes.length; i++, bits += 8) {
      if (bytes[i] !== 0) return bits + Math.clz32(bytes[i]) - 24;
    }
    return bits;
  }

  // Digests per round: WebCrypto's calls are asynchronous, so a batch runs
  // at once; a round of plain JavaScript is a slice of a few milliseconds.
  var SUBTLE_BATCH = 512;
  var PLAIN_BATCH = 4096;

  // Resolves with the nonce; `progress(hashes)` after every round; `yieldEvery`
  // gives the event loop a turn between rounds (the page's main thread).
  function solve(challenge, bits, subtle, progress, yieldEvery) {
    var prefix = challenge + ":";
    var enc = subtle ? new TextEncoder() : null;
    var next = 0;
    function round() {
      var base = next;
      if (subtle) {
        next += SUBTLE_BATCH;
        var jobs = [];
        for (var i = 0; i < SUBTLE_BATCH; i++) {
          jobs.push(crypto.subtle.digest("SHA-256", enc.encode(prefix + (base + i))));
        }
        return Promise.all(jobs).then(function (digests) {
          for (var j = 0; j < digests.length; j++) {
            if (zeroBitsOfBytes(new Uint8Array(digests[j])) >= bits) return String(base + j);
          }
          return null;
        });
      }
      next += PLAIN_BATCH;
      for (var k = 0; k < PLAIN_BATCH; k++) {
        if (zeroBitsOfWords(sha256(prefix + (base + k))) >= bits) return Promise.resolve(String(base + k));
      }
      return Promise.resolve(null);
    }
    function loop() {
      return round().then(function (nonce) {
        if (nonce !== null) return nonce;
        progress(next);
        if (!yieldEvery) return loop();
        return new Promise(function (r) { setTimeout(r, 0); }).then(loop);
      });
    }
    return loop();
  }

  return { solve: solve, sha256: sha256, zeroBits: zeroBitsOfWords };
})();

if (typeof WorkerGlobalScope !== "undefined" && self instanceof WorkerGlobalScope) {
  self.onmessage = function (e) {
    var m = e.data || {};
    var subtle = !!m.subtle && !!(self.crypto && self.crypto.subtle);
    WR_POW.solve(String(m.challenge), Number(m.difficulty), subtle, function (hashes) {
      self.postMessage({ hashes: hashes });
    }, false).then(function (nonce) {
      self.postMessage({ nonce: nonce });
    }, function (err) {
      self.postMessage({ error: String(err && err.message || err) });
    });
  };
}
