// Photos, sound and files on the phone: taken or picked, a photo scaled down, named by its
// SHA-256, kept in IndexedDB with the record (offline, across reloads), and sent to the server
// in chunks that resume where an upload stopped (sync-protocol/PROTOCOL.md, "Attachments").

import * as S from "./store.js";

/** SHA-256 of bytes, in lower-case hex: the browser's own where it offers it (HTTPS and
 *  localhost), else computed here (a district laptop serving phones over plain HTTP). */
export async function sha256(bytes) {
  if (globalThis.crypto && crypto.subtle) {
    const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    return [...d].map((b) => b.toString(16).padStart(2, "0")).join("");
  }
  return sha256Here(new Uint8Array(bytes));
}

const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

/** FIPS 180-4 SHA-256. */
export function sha256Here(data) {
  const h = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
  const bits = data.length * 8;
  const padded = new Uint8Array(((data.length + 9 + 63) >> 6) << 6);
  padded.set(data);
  padded[data.length] = 0x80;
  const view = new DataView(padded.buffer);
  view.setUint32(padded.length - 8, Math.floor(bits / 2 ** 32));
  view.setUint32(padded.length - 4, bits >>> 0);
  const w = new Uint32Array(64);
  const rot = (x, n) => (x >>> n) | (x << (32 - n));
  for (let at = 0; at < padded.length; at += 64) {
    for (let i = 0; i < 16; i++) w[i] = view.getUint32(at + i * 4);
    for (let i = 16; i < 64; i++) {
      const s0 = rot(w[i - 15], 7) ^ rot(w[i - 15], 18) ^ (w[i - 15] >>> 3);
      const s1 = rot(w[i - 2], 17) ^ rot(w[i - 2], 19) ^ (w[i - 2] >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) >>> 0;
    }
    let [a, b, c, d, e, f, g, k] = h;
    for (let i = 0; i < 64; i++) {
      const t1 = (k + (rot(e, 6) ^ rot(e, 11) ^ rot(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) >>> 0;
      const t2 = ((rot(a, 2) ^ rot(a, 13) ^ rot(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
      [k, g, f, e, d, c, b, a] = [g, f, e, (d + t1) >>> 0, c, b, a, (t1 + t2) >>> 0];
    }
    const next = [a, b, c, d, e, f, g, k];
    for (let i = 0; i < 8; i++) h[i] = (h[i] + next[i]) >>> 0;
  }
  return [...h].map((x) => x.toString(16).padStart(8, "0")).join("");
}

/** A photo scaled down so that its longer side is at most `maxPixels`, as JPEG; a photo
 *  already small enough, or a file the browser cannot draw, is kept as it is. */
export async function scaleDown(file, maxPixels = 1024) {
  let bitmap;
  try { bitmap = await createImageBitmap(file); } catch { return file; }
  const scale = Math.min(1, maxPixels / Math.max(bitmap.width, bitmap.height));
  if (scale === 1 && file.type === "image/jpeg") return file;
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = Math.max(1, Math.round(bitmap.height * scale));
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.85));
  return blob || file;
}

/** Keeps a file taken for a field and gives the reference the field holds. */
export async function keep(file, name) {
  const bytes = await file.arrayBuffer();
  if (bytes.byteLength === 0) throw new Error("tệp trống");
  const sha = await sha256(bytes);
  const type = file.type || "application/octet-stream";
  const ref = { sha256: sha, size: bytes.byteLength, type, ...(name ? { name: name.slice(0, 255).replace(/[/\\]/g, "_") } : {}) };
  const had = await S.get("attachments", sha);
  if (!had) await S.put("attachments", sha, { bytes, type, size: bytes.byteLength, confirmed: false, at: Date.now() });
  return ref;
}

/** The bytes of an attachment this phone holds, or null. */
export async function held(sha) {
  const a = await S.get("attachments", sha);
  return a ? a : null;
}

/** Keeps an attachment read from the server (a record opened), as sent: nothing to upload. */
export async function keepFetched(sha, bytes, type) {
  if ((await sha256(bytes)) !== sha) throw new Error("tệp nhận được không khớp mã băm");
  await S.put("attachments", sha, { bytes, type, size: bytes.byteLength, confirmed: true, fetched: true, at: Date.now() });
  // Copies of other phones' photos are a cache: past 100 MB, the oldest go (they can be
  // fetched again). What this phone took is never dropped here.
  const all = Object.entries(await S.getAll("attachments")).filter(([, a]) => a.fetched).sort((x, y) => y[1].at - x[1].at);
  let kept = 0;
  for (const [key, a] of all) {
    kept += a.size;
    if (kept > FETCHED_BYTES && key !== sha) await S.del("attachments", key);
  }
}

const FETCHED_BYTES = 100 * 1024 * 1024;

/** Asks the server again about every attachment it confirmed (it was restored from a backup
 *  and may lack some): those it has are confirmed again at once, the others sent again. */
export async function recheck() {
  const all = await S.getAll("attachments");
  for (const [sha, a] of Object.entries(all)) if (a.confirmed) await S.put("attachments", sha, { ...a, confirmed: false });
}

/** The attachments not yet confirmed by the server. */
export async function waiting() {
  const all = await S.getAll("attachments");
  return Object.entries(all).filter(([, a]) => !a.confirmed && !a.refused).map(([sha, a]) => ({ sha, ...a }));
}

/**
 * Sends every attachment the server does not have yet, chunk by chunk from where each upload
 * stands, and marks it confirmed once the server has all of it. A refusal (too large, a type
 * not taken, a hash that does not match) is kept with the attachment and shown. `send` is
 * `fetch` with the phone's token; `progress(sha, received, size)` is told as chunks land.
 */
export async function uploadAll(send, progress = () => {}) {
  let failed = null;
  for (const a of await waiting()) {
    // One attachment that fails waits for the next sync; the others go on.
    try {
      await uploadOne(a, send, progress);
    } catch (e) {
      failed = failed || e;
    }
  }
  if (failed) throw failed;
}

async function uploadOne(a, send, progress) {
  const url = `/v1/uploads/${a.sha}`;
  const status = await send(url, { method: "GET" });
  if (!status.ok) throw httpError(status, await status.text());
  let { received, complete, chunk_bytes: chunk } = await status.json();
  const bytes = new Uint8Array(a.bytes);
  let restarts = 0;
  while (!complete) {
    if (received >= bytes.length) received = 0;
    const end = Math.min(received + (chunk || 65536), bytes.length);
    const res = await send(url, {
      method: "PUT",
      headers: { "content-type": a.type, "content-range": `bytes ${received}-${end - 1}/${bytes.length}` },
      body: bytes.slice(received, end),
    });
    const body = await res.json().catch(() => ({}));
    if (res.status === 409 && typeof body.received === "number") { received = body.received; continue; }
    // What arrived was thrown away (bytes that differed, a hash that did not match): sent
    // again from the start while the phone's copy is still what its name says.
    if ((res.status === 400 || res.status === 422) && restarts < 2 && (await sha256(a.bytes)) === a.sha) {
      restarts += 1;
      received = 0;
      continue;
    }
    if ([400, 413, 415, 422].includes(res.status)) {
      await S.put("attachments", a.sha, { ...a, refused: body.message || `HTTP ${res.status}` });
      return;
    }
    if (!res.ok) throw httpError(res, body.message);
    received = body.received;
    complete = body.complete;
    progress(a.sha, received, bytes.length);
  }
  await S.put("attachments", a.sha, { ...a, confirmed: true });
}

function httpError(res, message) {
  const err = new Error(message || `HTTP ${res.status}`);
  err.status = res.status;
  return err;
}
