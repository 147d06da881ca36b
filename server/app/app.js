// Mầm for collaborators: forms offline, everything kept on the phone until the server has it.
import * as P from "./protocol.js";
import * as S from "./store.js";
import * as M from "./media.js";

const app = document.getElementById("app");
const status = document.getElementById("status");

let auth = null; // {token, device, communes}
let state = null; // the protocol state (protocol.js)
let forms = {}; // "id/version" -> form
let manifest = null; // {forms: [...], villages: {...}}
let syncing = null;
let retryDelay = 0;
let retryTimer = null;
let lastSync = null;
let lastError = null;
let checkedLink = null; // the enrolment link last checked against the server
// What leaving a field of the form being filled does (there is no `onfocusout` property).
let fieldLeft = null;
let writers = {}; // device number → the person's name, from GET /v1/writers
let writtenAt = {}; // record id → { "device:seq": when the server received it }, from GET /v1/records/{id}/writes
app.addEventListener("focusout", (ev) => { if (fieldLeft) fieldLeft(ev); });

/** What tests and curious people can read: counts of requests and the last response. */
window.mam = { requests: 0, pushes: [] };
// Photos and files taken here that the server does not have yet (for the status line).
let waitingFiles = 0;
const countWaiting = () => M.waiting().then((w) => { waitingFiles = w.length; setStatus(); }).catch(() => {});

// ---------------------------------------------------------------------------------------------
// Small helpers

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Show a screen: its parts in order (lists flattened, empty parts skipped). */
function mount(...parts) {
  app.replaceChildren(...parts.flat(Infinity).filter((p) => p !== null && p !== undefined && p !== false));
}

const label = (x, fallback) => (x && (x.vi || x.en)) || fallback;

function latestForm(id) {
  const version = (state && state.forms[id]) || (manifest && (manifest.forms.find((f) => f.id === id) || {}).version);
  if (version && forms[`${id}/${version}`]) return forms[`${id}/${version}`];
  const versions = Object.values(forms).filter((f) => f.id === id).sort((a, b) => b.version - a.version);
  return versions[0];
}

function formOf(record) {
  return forms[`${record.form}/${record.version}`] || latestForm(record.form);
}

function show(value, field) {
  if (value === null || value === undefined) return "(trống)";
  if (field && field.type === "reference" && typeof value === "string") {
    const r = state && P.view(state, value);
    return r ? `${recordTitle(r)} · ${recordDetails(r)}` : `Hồ sơ ${value.slice(0, 8)}`;
  }
  if (value === true) return "Có";
  if (value === false) return "Không";
  if (field && field.type === "date" && typeof value === "string") return P.dayText(value);
  if (field && ["image", "audio", "video", "file"].includes(field.type) && typeof value === "object") {
    const kb = Math.max(1, Math.round((value.size || 0) / 1024));
    return `${value.name || value.type} (${kb} KB)`;
  }
  if (field && field.type === "geopoint" && typeof value === "object" && value) {
    return `${value.lat}, ${value.lon}${typeof value.acc === "number" ? ` (±${Math.round(value.acc)} m)` : ""}`;
  }
  if (field && (field.type === "geotrace" || field.type === "geoshape") && Array.isArray(value)) return `${value.length} điểm`;
  // A decimal comma; whole numbers (years, counts) as they are.
  if (typeof value === "number") return String(value).replace(".", ",");
  const choice = (code) => {
    const c = field && (field.choices || []).find((x) => x.code === code);
    return c ? label(c.label, code) : code;
  };
  if (typeof value === "string") return choice(value);
  if (Array.isArray(value) && value.every((v) => typeof v === "string")) return value.map(choice).join(", ");
  if (Array.isArray(value)) return `${value.length} mục`;
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function setStatus() {
  const online = navigator.onLine;
  const pending = state ? state.pending.length : 0;
  const parts = [online ? "Có mạng" : "Không có mạng", `${pending} chờ gửi`];
  if (waitingFiles) parts.push(`${waitingFiles} ảnh/tệp chờ tải lên`);
  if (syncing) parts.push("đang đồng bộ…");
  else if (lastError) parts.push(`lỗi: ${lastError}`);
  else if (lastSync) parts.push(`đồng bộ lúc ${lastSync}`);
  status.textContent = parts.join(" · ");
  status.dataset.online = online ? "yes" : "no";
  status.dataset.pending = String(pending);
}

// ---------------------------------------------------------------------------------------------
// The state, shared by every tab of the app

const channel = "BroadcastChannel" in window ? new BroadcastChannel("mam") : null;
const queues = {};

/** Run `fn` holding the lock `name`, across every tab of the app (Web Locks); where the
 *  browser has no Web Locks, within this tab. */
function exclusive(name, fn) {
  if (navigator.locks) return navigator.locks.request(name, () => fn());
  const run = (queues[name] || Promise.resolve()).then(() => fn());
  queues[name] = run.catch(() => {});
  return run;
}

/**
 * Change the state: `fn` gets it as IndexedDB holds it now (the queue read again, the pulled
 * records as this tab holds them), and what it changed is stored before anyone else may read
 * it. One change at a time over every tab, so that no tab writes over another's edits from a
 * stale copy and no two tabs hand out one seq. `fn` returns what to store besides the state
 * (`S.saveState`'s options) and `result`, which this returns.
 */
function update(fn) {
  return exclusive("mam-state", async () => {
    const stored = await S.loadQueue();
    const s = P.upgrade({ ...(stored || P.newState(auth.device)), pulled: state ? state.pulled : {} });
    const extra = (await fn(s)) || {};
    await S.saveState(s, extra);
    state = s;
    if (channel) channel.postMessage("state");
    setStatus();
    return extra.result;
  });
}

/** Another tab changed the state: read it again and show it (a form being filled is left as
 *  it is). */
async function reload() {
  await exclusive("mam-state", async () => {
    auth = (await S.get("meta", "auth")) || null;
    const stored = await S.loadState();
    state = stored ? P.upgrade(stored) : auth ? P.newState(auth.device) : null;
  });
  setStatus();
  if (!location.hash.startsWith("#fill")) render();
}
// Messages come one per change: one reading at a time, and one more if any came meanwhile.
let reloading = null;
let reloadAgain = false;
function scheduleReload() {
  if (reloading) { reloadAgain = true; return; }
  reloading = reload().finally(() => {
    reloading = null;
    if (reloadAgain) { reloadAgain = false; scheduleReload(); }
  });
}
if (channel) channel.onmessage = () => scheduleReload();

// ---------------------------------------------------------------------------------------------
// Talking to the server

/** `body` sent (or a GET without it), the answer's JSON back; `got.bytes` is set to the
 *  length of its text, as it arrived unpacked. */
async function api(path, body, got = {}) {
  const payload = body ? JSON.stringify(body) : undefined;
  const res = await fetch(path, {
    method: body ? "POST" : "GET",
    headers: {
      ...(body ? { "content-type": "application/json" } : {}),
      ...(auth ? { authorization: `Bearer ${auth.token}` } : {}),
    },
    body: payload,
    cache: "no-store",
    // A request left hanging (as one can be when the network drops and comes back) is given
    // up, and the sync retries: after 15 s, plus the time its body takes at 32 kbit/s.
    signal: AbortSignal.timeout(15000 + Math.ceil((payload ? payload.length : 0) / 4000) * 1000),
  });
  const text = await res.text();
  got.bytes = text.length;
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  if (!res.ok) {
    const err = new Error((json && json.message) || `HTTP ${res.status}`);
    err.status = res.status;
    err.code = json && json.code;
    err.retryAfter = Number(res.headers.get("retry-after")) || null;
    throw err;
  }
  return json;
}

/** The current forms, fetched once per version (published versions never change). */
async function refreshForms() {
  manifest = await api("/v1/forms");
  await S.put("meta", "manifest", manifest);
  // All at once: on 3G each request is two seconds of waiting, whatever its size.
  const wanted = manifest.forms.filter((f) => !forms[`${f.id}/${f.version}`]);
  const got = await Promise.all(wanted.map((f) => api(f.url)));
  for (const [i, f] of wanted.entries()) {
    const key = `${f.id}/${f.version}`;
    forms[key] = got[i];
    await S.put("forms", key, got[i]);
  }
  if (wanted.length) rowsMadeFor += 1;
}

/** Sync until nothing is left to send or pull. One at a time; failures retry with backoff. */
function sync() {
  if (!auth) return Promise.resolve();
  if (!syncing) {
    syncing = runSync().finally(() => {
      syncing = null;
      setStatus();
      // Lists and records show what arrived; a form being filled is left as it is.
      if (!location.hash.startsWith("#fill")) render();
    });
    setStatus();
  }
  return syncing;
}

/** Sync rounds until nothing is left to send or pull; one tab at a time. */
// How many bytes of records a pull asks for in one page. It starts at the protocol's default;
// a full page that came quickly asks for a bigger next one, up to the server's cap, and a slow
// one for a smaller, so that a page takes about PAGE_SECONDS on any network: a commune's
// thousands of records come over 3G in a few big pages, not in dozens of round trips, while
// on 2G a page lost to a cut network costs only seconds. A failed sync halves it.
const MIN_PAGE_BYTES = 64 * 1024;
const MAX_PAGE_BYTES = 1024 * 1024;
const PAGE_SECONDS = 5;
let pageBytes = P.DEFAULT_MAX_BYTES;

async function syncRounds() {
  for (let round = 0; round < 1000; round++) {
    // Another tab may have synced (and taken a successor) since this one last looked.
    auth = (await S.get("meta", "auth")) || auth;
    const stored = await S.loadQueue();
    const current = P.upgrade({ ...stored, pulled: {} });
    if (current.successor_needed) {
      await takeSuccessor();
      continue;
    }
    const request = P.syncRequest(current, P.MAX_PUSH, pageBytes);
    const before = JSON.stringify(current.pending.map((e) => e.seq));
    window.mam.requests += 1;
    window.mam.pushes.push(request.push.length);
    const asked = performance.now();
    const got = {};
    const response = await api("/v1/sync", request, got);
    // A full page says how fast pages come: the next asks for about PAGE_SECONDS' worth.
    if (response.more) {
      const perSecond = got.bytes / Math.max((performance.now() - asked) / 1000, 0.05);
      pageBytes = Math.round(Math.min(MAX_PAGE_BYTES, Math.max(MIN_PAGE_BYTES, perSecond * PAGE_SECONDS)));
    }
    window.mam.pageBytes = pageBytes;
    // A server restored from a backup (another epoch) may lack photos it once confirmed: each
    // is asked about again before the phone lets it go.
    if (response.epoch && current.epoch && response.epoch !== current.epoch) await M.recheck();
    await update((s) => {
      // Only what this request carried can be acknowledged by its response.
      s.in_flight = request.push.map((e) => e.seq);
      P.setNow(s, Date.now());
      const { cleared } = P.applyResponse(s, response);
      return { changed: (response.records || []).map((r) => r.id), evicted: response.evicted || [], cleared };
    });
    const known = Object.entries(response.forms || {}).every(([id, v]) => forms[`${id}/${v}`]);
    if (!known || !manifest) await refreshForms();
    if (state.successor_needed || response.more) continue;
    // Done when nothing is left to send, or when the queue is as it was (the server took none
    // of it: it waits for a gap to fill): the next sync tries again.
    if (state.pending.length === 0 || JSON.stringify(state.pending.map((e) => e.seq)) === before) break;
  }
}

/**
 * The server holds another history under this device number (the phone was restored from a
 * backup, or its data copied to another phone): take a new number for the same collaborator
 * and communes, and number the pending edits again under it. The request's id is made once and
 * kept, so that a retry after a lost response names the same successor.
 */
async function takeSuccessor() {
  const request = await update((s) => {
    if (!s.successor_request) s.successor_request = P.uuidv7();
    return { result: s.successor_request };
  });
  const res = await api("/v1/successor", { protocol: P.PROTOCOL_VERSION, request });
  await update(async (s) => {
    if (!s.successor_needed || s.successor_request !== request) return {};
    const rename = P.adoptSuccessor(s, res.device);
    s.successor_request = null;
    auth = { token: res.token, device: res.device, communes: res.communes };
    // Drafts name the dots they showed: those of this phone's pending edits have new names.
    const drafts = {};
    if (rename) {
      for (const [key, d] of Object.entries(await S.getAll("drafts"))) {
        if (!d.dots) continue;
        const dots = {};
        for (const [n, list] of Object.entries(d.dots)) dots[n] = list.map(rename);
        drafts[key] = { ...d, dots };
      }
    }
    return { meta: { auth }, drafts };
  });
}

/**
 * The phone was revoked in the office: the records it holds go, and so does its token. What
 * never reached the server (pending edits, drafts) is set aside, not lost: after the next
 * enrolment it is shown to be sent under the new number, or downloaded.
 */
async function revoked() {
  await exclusive("mam-state", async () => {
    const stored = await S.loadQueue();
    const drafts = await S.getAll("drafts");
    const pending = stored ? stored.pending : [];
    const aside = (await S.get("meta", "aside")) || [];
    if (pending.length || Object.keys(drafts).length) {
      aside.push({ device: stored ? stored.device : auth && auth.device, at: Date.now(), pending, drafts });
    }
    await S.put("meta", "aside", aside);
    await S.put("meta", "revoked_at", Date.now());
    await S.forgetEnrolment();
  });
  auth = null;
  state = null;
  lastError = null;
  if (channel) channel.postMessage("state");
  render();
}

/** What a revoked enrolment left unsent, as a file to keep or give to the office. */
function downloadAside(aside) {
  const blob = new Blob([JSON.stringify(aside, null, 2)], { type: "application/json" });
  const a = h("a", { href: URL.createObjectURL(blob), download: `mam-giu-lai-${P.today()}.json` });
  document.body.append(a);
  a.click();
  a.remove();
}

function asideCounts(aside) {
  const edits = aside.reduce((n, a) => n + a.pending.length, 0);
  const drafts = aside.reduce((n, a) => n + Object.keys(a.drafts || {}).length, 0);
  return { edits, drafts };
}

async function runSync() {
  clearTimeout(retryTimer);
  try {
    await exclusive("mam-sync", syncRounds);
    // Then the photos and files, apart from the edits that name them, chunk by chunk.
    await exclusive("mam-upload", () => M.uploadAll(
      (url, init) => fetch(url, { ...init, cache: "no-store", headers: { ...(init.headers || {}), authorization: `Bearer ${auth.token}` }, signal: AbortSignal.timeout(60000) }),
      (sha, received, size) => { window.mam.uploaded = { ...(window.mam.uploaded || {}), [sha]: [received, size] }; }));
    await countWaiting();
    // Who wrote what, by name, kept for offline use: asked for only when a value's writer is
    // not known yet.
    const seen = new Set();
    for (const r of Object.values(state.pulled)) {
      for (const values of Object.values(r.fields)) for (const v of values) seen.add(String(v.dot[0]));
    }
    seen.delete(String(state.device));
    if ([...seen].some((d) => !(d in writers))) {
      try {
        const w = await api("/v1/writers");
        // A number the server names no one for is remembered as such: not asked again.
        writers = { ...Object.fromEntries([...seen].map((d) => [d, null])), ...(w.writers || {}) };
        await S.put("meta", "writers", writers);
      } catch { /* the names wait for the next sync */ }
    }
    lastError = null;
    retryDelay = 0;
    lastSync = new Date().toLocaleTimeString("vi-VN");
  } catch (e) {
    if (e.status === 401) {
      // The server no longer knows this phone: it was revoked in the office.
      await revoked();
      return;
    }
    pageBytes = Math.max(MIN_PAGE_BYTES, Math.round(pageBytes / 2));
    lastError = navigator.onLine ? e.message : "không có mạng";
    // Back off: 2 s, 4 s, 8 s … up to 5 minutes; the 'online' event tries at once.
    retryDelay = Math.min(retryDelay ? retryDelay * 2 : 2000, 300000);
    retryTimer = setTimeout(sync, retryDelay);
  }
}

/**
 * Sync now, on the collaborator's word or when the network comes back: the back-off is over,
 * and a sync already under way (which may have started offline and be failing) is followed by
 * a fresh one instead of by its back-off.
 */
function syncNow() {
  retryDelay = 0;
  return Promise.resolve(syncing).then(() => sync());
}

window.addEventListener("online", () => { setStatus(); syncNow(); });
window.addEventListener("offline", setStatus);
setInterval(() => { if (state && state.pending.length && navigator.onLine) sync(); }, 60000);

// ---------------------------------------------------------------------------------------------
// Screens

function go(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}
window.addEventListener("hashchange", () => render());

// Which render is the latest: a screen that awaits storage before it shows must not show over
// a screen the person went to meanwhile.
let renderToken = 0;

function render() {
  renderToken += 1;
  const [screen, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  if (!auth) return renderEnrol();
  // A new enrolment link while enrolled: a sync tells whether this enrolment still holds (a
  // revoked one gives way to the link's code).
  if (/(^|[#&])code=/.test(location.hash) && checkedLink !== location.hash) {
    checkedLink = location.hash;
    sync();
  }
  if (screen === "new") return renderChooseForm();
  // A form and a record show WHO's z-scores: they wait for the growth tables (the list does
  // not, so that the app opens without reading them first).
  const token = renderToken;
  const then = (show) => whoReady.then(() => { if (token === renderToken) return show(); });
  if (screen === "fill") return then(() => renderFill(rest[0], rest[1] || null));
  if (screen === "record") return then(() => renderRecord(rest[0]));
  return renderHome();
}

async function renderEnrol() {
  const shownFor = renderToken;
  const revokedAt = await S.get("meta", "revoked_at");
  const aside = (await S.get("meta", "aside")) || [];
  if (shownFor !== renderToken) return;
  const { edits, drafts } = asideCounts(aside);
  const notice = revokedAt ? h("section", { class: "notice", id: "revoked", role: "status" },
    h("p", { text: "Máy này đã bị thu hồi: các phiếu đã được xoá khỏi máy. Hãy xin cán bộ xã mã kích hoạt mới." }),
    edits || drafts ? h("p", { id: "aside-count", text: `${edits} thay đổi và ${drafts} phiếu nhập dở chưa gửi được giữ lại trên máy. Sau khi kích hoạt lại, có thể gửi chúng lên hoặc tải về.` }) : null,
    edits || drafts ? h("button", { type: "button", class: "secondary", id: "export-aside", onclick: () => downloadAside(aside), text: "Tải về phiếu giữ lại" }) : null,
  ) : null;
  const fromLink = new URLSearchParams(location.hash.replace(/^#/, "")).get("code") || "";
  const input = h("input", { id: "code", name: "code", autocomplete: "one-time-code", autocapitalize: "characters", value: fromLink, required: true, placeholder: "K7QF-3M9X" });
  const error = h("p", { class: "error", role: "alert", id: "enrol-error" });
  const form = h("form", { class: "stack", onsubmit: async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    try {
      const res = await api("/v1/enroll", { code: input.value });
      auth = { token: res.token, device: res.device, communes: res.communes };
      state = P.newState(res.device);
      await S.saveState(state, { meta: { auth } });
      await S.del("meta", "revoked_at");
      if (channel) channel.postMessage("state");
      await refreshForms().catch(() => {});
      location.hash = "";
      render();
      sync();
    } catch (e) {
      error.textContent = e.code === "invalid_code" ? "Mã không đúng, đã dùng hoặc đã hết hạn."
        : e.code === "rate_limited" ? `Đã thử quá nhiều mã sai. Đợi ${e.retryAfter || 60} giây rồi thử lại.`
        : `Không kích hoạt được: ${e.message}`;
    }
  } },
    h("label", { for: "code", text: "Mã kích hoạt (do cán bộ xã cấp)" }),
    input,
    h("button", { type: "submit", text: "Kích hoạt" }),
  );
  const scan = "BarcodeDetector" in window && navigator.mediaDevices
    ? h("button", { type: "button", class: "secondary", onclick: () => scanCode(input), text: "Quét mã QR" })
    : null;
  mount(h("h1", { text: "Kích hoạt điện thoại" }), notice, form, scan, error);
}

/** Read the enrolment QR code with the camera, where the browser can. */
async function scanCode(input) {
  const video = h("video", { playsinline: true, muted: true });
  app.append(video);
  const stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
  video.srcObject = stream;
  await video.play();
  const detector = new window.BarcodeDetector({ formats: ["qr_code"] });
  for (let i = 0; i < 600; i++) {
    const codes = await detector.detect(video).catch(() => []);
    if (codes.length) {
      const text = codes[0].rawValue;
      input.value = (text.match(/code=([A-Z0-9-]+)/i) || [null, text])[1];
      break;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  stream.getTracks().forEach((t) => t.stop());
  video.remove();
}

const STATUS_TEXT = { refused: "Bị từ chối", conflict: "Xung đột", pending: "Chờ gửi", synced: "Đã đồng bộ" };

/** The status of a list's rows, the queue read once for all of them. */
function statuses() {
  const pendingIds = new Set(state.pending.map((e) => e.record));
  const refusedIds = new Set(state.rejected.map((r) => r.edit.record));
  const status = (row) => (refusedIds.has(row.id) ? "refused" : row.conflicted ? "conflict" : pendingIds.has(row.id) ? "pending" : "synced");
  status.pendingIds = pendingIds;
  return status;
}

// What a list shows of a record, worked out once for each version of it (a pulled record is
// replaced, never changed, when a newer one arrives), so that a commune's 20,000 records are
// searched and paged without reading every one again. Records with edits of this phone not
// pulled back yet are worked out each time. A new form version starts the rows over.
const rowCache = new WeakMap();
let rowsMadeFor = 0;

// A row's words are worked out when first asked for: opening the app draws a page of fifty,
// and only a search or the "mine" filter reads every record's.
class Row {
  constructor(record) {
    this.record = record;
    this.id = record.id;
    this.form = record.form;
    this.made = rowsMadeFor;
    this.deleted = P.isDeleted(record);
    this.conflicted = P.isConflicted(record);
  }
  get title() { return this._title ??= recordTitle(this.record); }
  get details() { return this._details ??= recordDetails(this.record); }
  get folded() { return this._folded ??= folded(this.title); }
  get everything() { return this._everything ??= folded(`${this.title} ${this.details}`); }
  get byMe() {
    return this._byMe ??= Object.values(this.record.fields || {}).some((values) => values.some((v) => v.dot && v.dot[0] === state.device));
  }
}

function rowOf(record, keep) {
  let row = keep ? rowCache.get(record) : null;
  if (!row || row.made !== rowsMadeFor) {
    row = new Row(record);
    if (keep) rowCache.set(record, row);
  }
  return row;
}

/** Every record the phone shows, as list rows, in the order they were made. */
function listing() {
  const touched = new Set();
  for (const e of state.acked_unpulled) touched.add(e.record);
  for (const e of state.pending) touched.add(e.record);
  const rows = [];
  for (const [id, record] of Object.entries(state.pulled)) if (!touched.has(id)) rows.push(rowOf(record, true));
  for (const id of touched) {
    const record = P.view(state, id);
    if (record) rows.push(rowOf(record, false));
  }
  return rows.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

const number = (n) => n.toLocaleString("vi-VN");

function recordTitle(record) {
  const form = formOf(record);
  // The form's own name for its records (XLSForm's instance_name), when it gives one.
  if (form && form.instance_name) {
    let named = null;
    try { named = P.evaluate(form.instance_name, (n) => P.valueOf(record, n)); } catch { named = null; }
    if (typeof named === "string" && named.trim()) return named.trim();
  }
  // The first text a person typed (not one the phone filled, nor a hidden one).
  const first = form && form.fields.find((f) => f.type === "text" && !f.auto && f.appearance !== "hidden" && P.valueOf(record, f.name));
  return first ? String(P.valueOf(record, first.name)) : record.id.slice(0, 8);
}

/** What tells two records apart in a list: the form's date (a child's birth date), the
 *  village, the form. */
function recordDetails(record) {
  const form = formOf(record);
  const dateField = form && (form.collected_on || (form.fields.find((f) => f.type === "date") || {}).name);
  const date = dateField ? P.valueOf(record, dateField) : null;
  const village = P.valueOf(record, "village");
  return [date ? P.dayText(date) : null, village || null, form ? label(form.title, form.id) : record.form]
    .filter(Boolean).join(" · ");
}

/** Text as a search compares it: lower case, without Vietnamese marks (đ as d). */
function folded(text) {
  return String(text).normalize("NFD").replace(/[\u0300-\u036f]/g, "").replace(/đ/g, "d").replace(/Đ/g, "d").toLowerCase();
}

// The home list's search, filter and how much of it shows, kept while the app is open.
const LIST_PAGE = 50;
let listSearch = "";
let listFilter = "all";
let listShown = LIST_PAGE;

/** Send what a revoked enrolment left unsent under this number: its edits take new seqs, its
 *  drafts come back naming them. */
async function resendAside(aside) {
  await update((s) => {
    const drafts = {};
    for (const a of aside) {
      const rename = P.carryOver(s, a.device, a.pending);
      for (const [key, d] of Object.entries(a.drafts || {})) {
        const dots = {};
        for (const [n, list] of Object.entries(d.dots || {})) dots[n] = list.map(rename);
        drafts[key] = { ...d, dots };
      }
    }
    return { drafts };
  });
  await S.del("meta", "aside");
  render();
  sync();
}

async function renderHome() {
  const shownFor = renderToken;
  const drafts = await S.getAll("drafts");
  const aside = (await S.get("meta", "aside")) || [];
  if (shownFor !== renderToken) return;
  const focused = document.activeElement;
  const typing = focused && focused.id === "search" ? [focused.selectionStart, focused.selectionEnd] : null;
  const counts = asideCounts(aside);
  const list = listing().filter((row) => !row.deleted || row.conflicted);
  // Refused edits of records the phone no longer shows (a refused new record) still show.
  const shown = new Set(list.map((row) => row.id));
  const orphans = state.rejected.filter((r) => !shown.has(r.edit.record));
  const listBox = h("ul", { class: "records", id: "records" });
  const countLine = h("p", { class: "muted", id: "list-count" });
  const more = h("button", { type: "button", class: "secondary", id: "more", hidden: true, onclick: () => {
    listShown += LIST_PAGE;
    showList();
  } });
  const showList = () => {
    const want = folded(listSearch.trim());
    const status = statuses();
    const rows = list.filter((row) => {
      const cls = status(row);
      if (listFilter === "mine" && !(row.byMe || status.pendingIds.has(row.id))) return false;
      if (["pending", "refused", "conflict"].includes(listFilter) && cls !== listFilter) return false;
      return !want || row.folded.includes(want);
    });
    // A page at a time: a commune's thousands of records are searched, not scrolled.
    const page = rows.slice(0, listShown);
    listBox.replaceChildren(...page.map((row) => {
      const cls = status(row);
      return h("li", { class: `record ${cls}`, "data-record": row.id, "data-status": cls },
        h("a", { href: `#record/${row.id}` }, row.title), " ",
        h("span", { class: `badge ${cls}`, text: STATUS_TEXT[cls] }),
        h("div", { class: "details", text: row.details }),
      );
    }));
    if (!rows.length) listBox.append(h("li", { class: "muted", text: list.length ? "Không có phiếu nào khớp." : "Chưa có phiếu nào." }));
    countLine.hidden = rows.length <= LIST_PAGE;
    countLine.textContent = `${number(page.length)} / ${number(rows.length)} phiếu${rows.length < list.length ? " khớp" : ""}`;
    const left = rows.length - page.length;
    more.hidden = left <= 0;
    more.textContent = `Xem thêm ${number(Math.min(left, LIST_PAGE))} phiếu`;
  };
  showList();
  mount(
    h("div", { class: "actions" },
      h("button", { id: "sync", onclick: () => syncNow(), text: "Đồng bộ" }),
      h("button", { id: "new", onclick: () => go("#new"), text: "Phiếu mới" }),
    ),
    aside.length ? h("section", { class: "notice", id: "aside", "aria-labelledby": "h-aside" },
      h("h2", { id: "h-aside", text: "Giữ lại từ lần kích hoạt trước" }),
      h("p", { id: "aside-count", text: `${counts.edits} thay đổi và ${counts.drafts} phiếu nhập dở chưa gửi khi máy bị thu hồi.` }),
      h("button", { id: "resend-aside", onclick: () => resendAside(aside), text: "Gửi lên với máy này" }),
      h("button", { class: "secondary", id: "export-aside", onclick: () => downloadAside(aside), text: "Tải về" }),
      h("button", { class: "secondary", id: "drop-aside", onclick: async () => {
        if (!confirm("Bỏ hẳn các phiếu giữ lại? Không lấy lại được.")) return;
        await S.del("meta", "aside");
        render();
      }, text: "Bỏ đi" }),
    ) : null,
    orphans.length ? h("section", { "aria-labelledby": "h-refused" },
      h("h2", { id: "h-refused", text: "Bị từ chối" }),
      h("ul", { class: "records" }, orphans.map((r) => h("li", { class: "record refused", "data-record": r.edit.record },
        h("span", { class: "badge refused", text: "Bị từ chối" }), " ",
        h("span", { class: "reason", text: r.rejection.message_vi || r.rejection.message }), " ",
        h("a", { href: `#fill/${r.edit.form}/${r.edit.record}`, text: "Sửa và gửi lại" }),
      ))),
    ) : null,
    Object.keys(drafts).length ? h("section", { "aria-labelledby": "h-drafts" },
      h("h2", { id: "h-drafts", text: "Đang nhập dở" }),
      h("ul", { class: "records" }, Object.entries(drafts).map(([key, d]) => {
        const [formId, rid] = key.split("/");
        const f = latestForm(formId);
        const first = Object.values(d.values || {}).find((v) => typeof v === "string" && v);
        const item = h("li", { class: "record draft", "data-draft": key },
          h("a", { href: `#fill/${formId}/${rid}` }, `${first || rid.slice(0, 8)} · ${f ? label(f.title, formId) : formId}`), " ",
          h("button", { type: "button", class: "secondary small discard", onclick: () => {
            // Two steps: what is thrown away cannot come back.
            item.querySelector(".discard").hidden = true;
            item.append(h("span", { class: "confirm" }, " Bỏ phiếu nhập dở này? ",
              h("button", { type: "button", class: "danger small confirm-discard", onclick: async () => {
                await exclusive("mam-state", () => S.del("drafts", key));
                if (channel) channel.postMessage("state");
                render();
              }, text: "Bỏ" }), " ",
              h("button", { type: "button", class: "secondary small", onclick: () => render(), text: "Giữ lại" })));
          }, text: "Bỏ phiếu này" }));
        return item;
      })),
    ) : null,
    h("h2", { text: `Phiếu (${list.length})` }),
    h("div", { class: "list-tools" },
      h("label", { for: "search", class: "visually-hidden", text: "Tìm theo tên" }),
      h("input", { id: "search", type: "search", placeholder: "Tìm theo tên…", value: listSearch,
        oninput: (ev) => { listSearch = ev.target.value; listShown = LIST_PAGE; showList(); } }),
      h("label", { for: "filter", class: "visually-hidden", text: "Lọc" }),
      h("select", { id: "filter", onchange: (ev) => { listFilter = ev.target.value; listShown = LIST_PAGE; showList(); } },
        [["all", "Tất cả"], ["mine", "Của tôi"], ["pending", "Chờ gửi"], ["refused", "Bị từ chối"], ["conflict", "Xung đột"]]
          .map(([v, t]) => h("option", { value: v, selected: v === listFilter, text: t }))),
    ),
    listBox,
    countLine,
    more,
  );
  // A sync that lands while the person types a search redraws the list under the same words;
  // the box keeps its focus and caret.
  if (typing) {
    const search = document.getElementById("search");
    search.focus();
    search.setSelectionRange(typing[0], typing[1]);
  }
  setStatus();
  // When the list first showed after the page opened, and when it last did.
  window.mam.listShownAt = performance.now();
  if (window.mam.openedAt === undefined) window.mam.openedAt = window.mam.listShownAt;
}

function renderChooseForm() {
  // The forms village collaborators collect (a commune office's forms are not theirs).
  const current = (manifest ? manifest.forms : []).filter((f) => {
    const form = latestForm(f.id);
    const by = (form && form.collected_by) || [];
    return by.length === 0 || by.includes("collaborator");
  });
  mount(
    h("h1", { text: "Chọn biểu mẫu" }),
    current.length === 0 ? h("p", { text: "Chưa có biểu mẫu: hãy đồng bộ khi có mạng." }) : null,
    h("ul", { class: "forms" }, current.map((f) =>
      h("li", {}, h("a", { href: `#fill/${f.id}`, "data-form": f.id, text: label(f.title, f.id) })))),
    h("p", {}, h("a", { href: "#", text: "← Quay lại" })),
  );
}

const pad2 = P.pad2;

/** The phone's offset from UTC at moment `d`, as a datetime value ends: `+07:00`. */
function offsetOf(d) {
  const minutes = -d.getTimezoneOffset();
  return `${minutes >= 0 ? "+" : "-"}${pad2(minutes / 60)}:${pad2(minutes % 60)}`;
}

/** A moment as the phone's local date and time with its offset: `2026-12-03T14:05:09+07:00`. */
function localDateTime(d) {
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}T${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}${offsetOf(d)}`;
}

/** Empty is empty: no value, an empty list and a blank all mean null. */
const emptyToNull = (v) => (v === undefined || v === "" || (Array.isArray(v) && v.length === 0) ? null : v);

/** What a collaborator is told of a value they sent that another's choice replaced: the
 *  value now, who chose it and, once the server said (`GET /v1/records/{id}/writes`), when. */
function replacedText(id, mine, other, field) {
  const at = (writtenAt[id] || {})[other.dot.join(":")];
  const when = at ? `, lúc ${new Date(at).toLocaleTimeString("vi-VN", { hour: "2-digit", minute: "2-digit" })} ngày ${P.dayText(new Date(at).toLocaleDateString("sv-SE"))}` : "";
  return `Giá trị bạn nhập “${show(mine, field)}” đã được thay bằng “${show(other.value, field)}” (${writerName(other.dot[0])}${when}).`;
}

/** Who wrote a value, by name where the server told the phone (`GET /v1/writers`). */
function writerName(device) {
  if (device === state.device) return "máy này";
  return writers[String(device)] || `máy số ${device}`;
}

/** A place where an attachment shows, filled when its bytes are read from the phone. */
function mediaSlot(ref, field, recordId) {
  const slot = h("div", { class: "media-preview" });
  mediaView(ref, field, recordId).then((v) => slot.replaceChildren(v));
  return slot;
}

/**
 * An attachment as the phone shows it: the photo, a player, or a link, from the bytes the
 * phone holds; "đang chờ tải lên" until the server has it. One the phone does not hold (taken
 * on another phone) is fetched only when the person asks, and kept.
 */
async function mediaView(ref, field, recordId) {
  const a = await M.held(ref.sha256);
  if (!a) {
    if (!recordId) return h("p", { class: "muted", text: "Tệp không còn trên máy." });
    const box = h("div", {});
    const get = h("button", { type: "button", class: "secondary media-fetch", text: field && field.type === "image" ? "Xem ảnh" : "Tải tệp", onclick: async () => {
      get.disabled = true;
      try {
        const res = await fetch(`/v1/records/${encodeURIComponent(recordId)}/attachments/${ref.sha256}`, { headers: { authorization: `Bearer ${auth.token}` } });
        if (!res.ok) throw new Error(res.status === 404 ? "chưa có trên máy chủ" : `HTTP ${res.status}`);
        await M.keepFetched(ref.sha256, await res.arrayBuffer(), ref.type);
        box.replaceChildren(await mediaView(ref, field, recordId));
      } catch (e) {
        get.disabled = false;
        box.append(h("p", { class: "error", text: `Chưa tải được: ${e.message}` }));
      }
    } });
    box.append(get);
    return box;
  }
  const url = URL.createObjectURL(new Blob([a.bytes], { type: a.type }));
  const kind = a.type.split("/")[0];
  const media = kind === "image" ? h("img", { src: url, alt: ref.name || "ảnh", class: "photo" })
    : kind === "audio" ? h("audio", { src: url, controls: true })
    : kind === "video" ? h("video", { src: url, controls: true, class: "photo" })
    : h("a", { href: url, download: ref.name || ref.sha256, text: ref.name || "Tệp" });
  const note = a.refused ? h("p", { class: "error", text: `Máy chủ không nhận tệp: ${a.refused}` })
    : !a.confirmed ? h("p", { class: "notice pending-upload", text: kind === "image" ? "ảnh đang chờ tải lên" : "tệp đang chờ tải lên" })
    : null;
  return h("div", {}, media, note);
}

function renderRecord(id) {
  const record = P.view(state, id);
  if (!record) return go("#");
  const form = formOf(record);
  const refused = state.rejected.filter((r) => r.edit.record === id);
  const fields = form ? form.fields.map((f) => f.name) : Object.keys(record.fields);
  const rows = fields.filter((n) => record.fields[n]).map((name) => {
    const field = form && form.fields.find((f) => f.name === name);
    const sibs = record.fields[name];
    const conflict = sibs.length > 1;
    // A value this phone sent that another's choice replaced: said, with whose it is now.
    const mine = state.kept.filter((k) => k.edit.record === id && k.edit.fields[name]);
    const last = mine.length ? mine[mine.length - 1].edit.fields[name].value : undefined;
    const other = sibs.find((x) => x.dot[0] !== state.device);
    const replaced = last !== undefined && other && !sibs.some((x) => JSON.stringify(x.value) === JSON.stringify(last))
      ? h("p", { class: "notice replaced", "data-dot": other.dot.join(":"), text: replacedText(id, last, other, field) })
      : null;
    const choose = (s) => {
      // Two steps: the value not chosen goes for everyone.
      const box = document.querySelector(`[data-field="${CSS.escape(name)}"] .confirm-settle`);
      box.replaceChildren(
        h("p", { text: `Chọn “${show(s.value, field)}” (${writerName(s.dot[0])}) cho ${label(field && field.label, name)}? Giá trị còn lại sẽ được thay trên mọi máy.` }),
        h("button", { type: "button", id: "confirm-settle", onclick: async () => {
          // Settles exactly the values shown here.
          await update((t) => { P.editShown(t, id, { [name]: { value: s.value, supersedes: sibs.map((x) => x.dot) } }); });
          render();
          sync();
        }, text: "Chọn giá trị này" }), " ",
        h("button", { type: "button", class: "secondary", onclick: () => box.replaceChildren(), text: "Huỷ" }),
      );
    };
    return h("div", { class: conflict ? "field conflict" : "field", "data-field": name },
      h("div", { class: "label", text: label(field && field.label, name) }),
      conflict
        ? h("div", { class: "siblings" },
            h("p", { class: "muted", text: "Hai người sửa khác nhau. Chọn giá trị đúng:" }),
            sibs.map((s) => h("button", { class: "sibling", type: "button", onclick: () => choose(s) },
              show(s.value, field), " ", h("small", { text: `(${writerName(s.dot[0])})` }))),
            h("div", { class: "confirm-settle" }))
        : h("div", { class: "value", text: show(sibs[0].value, field) }),
      field && ["image", "audio", "video", "file"].includes(field.type) && !conflict && sibs[0].value
        ? mediaSlot(sibs[0].value, field, id) : null,
      replaced,
    );
  });
  const derived = form ? P.derive(form, record) : {};
  // When the replacing choices were made: asked of the server once, and kept for offline.
  const unknownWhen = rows.some((r) => {
    const notice = r.querySelector(".replaced");
    return notice && !(notice.dataset.dot in (writtenAt[id] || {}));
  });
  if (unknownWhen && navigator.onLine) {
    const shownFor = renderToken;
    api(`/v1/records/${encodeURIComponent(id)}/writes`).then(async (w) => {
      // A dot the server gives no time for is kept as asked (0), not asked again.
      const asked = Object.fromEntries(rows.map((r) => r.querySelector(".replaced")).filter(Boolean).map((n) => [n.dataset.dot, 0]));
      writtenAt[id] = { ...asked, ...Object.fromEntries((w.writes || []).map((x) => [x.dot.join(":"), x.received_at])) };
      await S.put("meta", "written_at", writtenAt);
      if (shownFor === renderToken) renderRecord(id);
    }).catch(() => { /* said without the time until the next look online */ });
  }
  mount(
    h("h1", { text: recordTitle(record) }),
    refused.map((r) => h("p", { class: "error", role: "alert" }, `Bị từ chối: ${r.rejection.message_vi || r.rejection.message}`)),
    rows,
    Object.keys(derived).length ? h("section", { class: "derived" },
      h("h2", { text: "Tự tính" }),
      Object.entries(derived).map(([n, v]) => {
        const d = form.derived.find((x) => x.name === n);
        return h("div", { class: "field" }, h("div", { class: "label", text: label(d && d.label, n) }), h("div", { class: "value", text: show(v, d) }));
      })) : null,
    h("div", { class: "actions" },
      h("a", { class: "button", href: `#fill/${record.form}/${id}`, text: "Sửa" }),
      h("a", { href: "#", text: "← Quay lại" }),
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// Filling a form

/** Values of a form's fields as inputs hold them. */
/** A choice among `options` ([value, text]) with a last option to type another value: the
 *  select (class `choice`) and the text box (class `other`), shown when that option is chosen.
 *  `readField` reads whichever holds the value. */
function choiceOrOther(id, options, value, otherText, otherAttrs) {
  const listed = value == null || value === "" || options.some(([v]) => v === value);
  const other = h("input", { type: "text", class: "other", value: listed ? "" : value, hidden: listed, ...otherAttrs });
  const choice = h("select", { id, class: "choice", onchange: () => {
    other.hidden = choice.value !== "__other";
    if (!other.hidden) other.focus();
  } },
    h("option", { value: "", text: "—" }),
    options.map(([v, text]) => h("option", { value: v, selected: v === value, text })),
    h("option", { value: "__other", selected: !listed, text: otherText }));
  return [choice, other];
}

function readField(field, root) {
  const el = root.querySelector(`[data-name="${CSS.escape(field.name)}"]`);
  if (!el) return undefined;
  switch (field.type) {
    case "note":
      return undefined;
    case "datetime": {
      const v = el.querySelector("input").value;
      if (!v) return null;
      // With the phone's offset from UTC (Việt Nam: +07:00).
      return `${v}${offsetOf(new Date(v))}`;
    }
    case "boolean": {
      const checked = el.querySelector("input:checked");
      return checked ? checked.value === "true" : null;
    }
    case "select_many":
      return [...el.querySelectorAll("input:checked")].map((i) => i.value);
    case "rank": {
      // Ranked once the person has put the choices in order (a first move, or "as shown").
      const list = el.querySelector(":scope ol.rank");
      return list.dataset.ranked ? [...list.children].map((li) => li.dataset.code) : null;
    }
    case "integer": case "decimal": {
      const v = el.querySelector("input").value.trim();
      if (v === "") return null;
      const n = Number(v.replace(",", "."));
      return Number.isFinite(n) ? n : v;
    }
    case "reference": {
      const v = el.querySelector(":scope > input.ref-value");
      return v && v.value ? v.value : null;
    }
    case "geopoint": {
      const [lat, lon] = [...el.querySelectorAll("input")].map((i) => i.value.trim());
      if (lat === "" && lon === "") return null;
      const point = { lat: Number(lat.replace(",", ".")), lon: Number(lon.replace(",", ".")) };
      // The accuracy and altitude of a reading, while the place is the one read.
      const read = el.dataset.reading ? JSON.parse(el.dataset.reading) : null;
      if (read && read.lat === point.lat && read.lon === point.lon) return read;
      return point;
    }
    case "geotrace": case "geoshape": {
      const points = el.querySelector("textarea").value.split("\n").map((l) => l.trim()).filter(Boolean).map((l) => {
        const [lat, lon, acc] = l.split(/[\s;]+/).map((x) => Number(x.replace(",", ".")));
        return Number.isFinite(acc) ? { lat, lon, acc } : { lat, lon };
      });
      if (!points.length) return null;
      // An area ends where it starts: closed for the person.
      const [a, b] = [points[0], points[points.length - 1]];
      if (field.type === "geoshape" && points.length >= 3 && (a.lat !== b.lat || a.lon !== b.lon)) points.push({ lat: a.lat, lon: a.lon });
      return points;
    }
    case "image": case "audio": case "video": case "file":
      return el.dataset.value ? JSON.parse(el.dataset.value) : null;
    case "repeat":
      return [...el.querySelectorAll(":scope > .items > .item")].map((item) => {
        const out = {};
        for (const sub of field.fields || []) {
          const v = readField(sub, item);
          if (v !== null && v !== undefined && !(Array.isArray(v) && v.length === 0)) out[sub.name] = v;
        }
        return out;
      });
    default: {
      const choice = el.querySelector(":scope > select.choice");
      const input = !choice ? el.querySelector("input, select, textarea")
        : choice.value === "__other" ? el.querySelector(":scope > input.other") : choice;
      const v = input ? input.value : "";
      return v.trim() === "" ? null : v.trim().normalize("NFC");
    }
  }
}

function fieldInput(field, value, villages) {
  const wrap = fieldControl(field, value, villages);
  // The form's hint under the question, its longer guidance on request (XLSForm's
  // guidance_hint), and a read-only question shown as it is.
  if (field.type !== "note" && field.hint) wrap.append(h("p", { class: "hint muted", text: label(field.hint, "") }));
  if (field.guidance) wrap.append(h("details", { class: "guidance" }, h("summary", { text: "Hướng dẫn" }), h("p", { text: label(field.guidance, "") })));
  if (field.read_only) for (const el of wrap.querySelectorAll("input, select, textarea, button")) el.disabled = true;
  return wrap;
}

function fieldControl(field, value, villages) {
  const id = `f-${field.name}-${Math.random().toString(36).slice(2, 8)}`;
  const wrap = h("div", { class: "input", "data-name": field.name, "data-type": field.type });
  const lab = h("label", { for: id }, label(field.label, field.name), field.required ? h("span", { class: "req", "aria-hidden": "true", text: " *" }) : null);
  switch (field.type) {
    case "note":
      // Words for the person filling the form: shown, never stored.
      wrap.append(h("p", { class: "note", text: label(field.label, "") }));
      if (field.hint) wrap.append(h("p", { class: "muted", text: label(field.hint, "") }));
      return wrap;
    case "time":
      wrap.append(lab, h("input", { id, type: "time", value: value ?? "" }));
      return wrap;
    case "datetime":
      // The phone's local time, with its offset, as the value.
      wrap.append(lab, h("input", { id, type: "datetime-local", value: typeof value === "string" ? value.slice(0, 16) : "" }));
      return wrap;
    case "boolean":
      wrap.append(h("fieldset", {},
        h("legend", {}, label(field.label, field.name), field.required ? " *" : ""),
        ...[["true", "Có"], ["false", "Không"]].map(([v, t]) => h("label", { class: "choice" },
          h("input", { type: "radio", name: id, value: v, checked: value === (v === "true") }), ` ${t}`))));
      return wrap;
    case "select_one":
      wrap.append(lab, h("select", { id, name: field.name },
        h("option", { value: "", text: "—" }),
        (field.choices || []).map((c, i) => h("option", { value: c.code, "data-choice": i, selected: value === c.code, text: label(c.label, c.code) }))));
      return wrap;
    case "rank": {
      // The choices in order: ↑ and ↓ move one; the order shown is the answer once moved or
      // confirmed.
      const codes = Array.isArray(value) ? value : (field.choices || []).map((c) => c.code);
      const list = h("ol", { class: "rank" });
      if (Array.isArray(value)) list.dataset.ranked = "1";
      const changed = () => { list.dataset.ranked = "1"; app.dispatchEvent(new Event("input")); };
      const move = (li, by) => {
        const to = by < 0 ? li.previousElementSibling : li.nextElementSibling;
        if (!to) return;
        if (by < 0) list.insertBefore(li, to); else list.insertBefore(to, li);
        changed();
      };
      for (const code of codes) {
        const c = (field.choices || []).find((x) => x.code === code) || { code };
        const li = h("li", { "data-code": code }, h("span", { text: label(c.label, code) }));
        li.append(
          h("button", { type: "button", class: "secondary", "aria-label": "Lên", text: "↑", onclick: () => move(li, -1) }),
          h("button", { type: "button", class: "secondary", "aria-label": "Xuống", text: "↓", onclick: () => move(li, 1) }));
        list.append(li);
      }
      wrap.append(h("fieldset", {}, h("legend", { text: label(field.label, field.name) }), list,
        h("button", { type: "button", class: "secondary rank-keep", text: "Giữ thứ tự này", onclick: changed })));
      return wrap;
    }
    case "select_many":
      wrap.append(h("fieldset", {}, h("legend", { text: label(field.label, field.name) }),
        (field.choices || []).map((c, i) => h("label", { class: "choice", "data-choice": i },
          h("input", { type: "checkbox", value: c.code, checked: Array.isArray(value) && value.includes(c.code) }), ` ${label(c.label, c.code)}`))));
      return wrap;
    case "reference": {
      // A picker over the records this phone holds of the form referred to (the child
      // register unless the field names another), by name, birth date or village: offline.
      const target = field.references || "child";
      const picked = h("input", { type: "hidden", class: "ref-value", value: value ?? "" });
      const describe = (rid) => {
        const r = rid && P.view(state, rid);
        return r ? `${recordTitle(r)} · ${recordDetails(r)}` : rid ? `Hồ sơ ${String(rid).slice(0, 8)}` : "Chưa chọn";
      };
      const chosen = h("p", { class: "ref-chosen", text: describe(value) });
      const results = h("ul", { class: "ref-results" });
      const search = h("input", { id, type: "search", class: "ref-search", placeholder: "Tìm theo tên, ngày sinh, thôn…" });
      const find = () => {
        const want = folded(search.value.trim());
        const rows = want ? listing()
          .filter((r) => r.form === target && !r.deleted)
          .filter((r) => r.everything.includes(want))
          .slice(0, 20) : [];
        results.replaceChildren(...rows.map((r) => h("li", {},
          h("button", { type: "button", class: "secondary ref-option", "data-record": r.id, onclick: () => {
            picked.value = r.id;
            chosen.textContent = describe(r.id);
            search.value = "";
            results.replaceChildren();
            app.dispatchEvent(new Event("input"));
          } }, describe(r.id)))));
        if (want && !rows.length) results.append(h("li", { class: "muted", text: "Không thấy hồ sơ nào khớp trên máy." }));
      };
      search.addEventListener("input", find);
      wrap.append(lab, chosen, search, results, picked);
      return wrap;
    }
    case "integer": case "decimal":
      wrap.append(lab, h("input", { id, type: "number", inputmode: field.type === "integer" ? "numeric" : "decimal", step: field.type === "integer" ? "1" : "any", value: value ?? "" }));
      return wrap;
    case "date":
      wrap.append(lab, h("input", { id, type: "date", value: value ?? "" }));
      return wrap;
    case "geopoint": {
      const lat = h("input", { type: "number", step: "any", "aria-label": "Vĩ độ", value: value ? value.lat : "" });
      const lon = h("input", { type: "number", step: "any", "aria-label": "Kinh độ", value: value ? value.lon : "" });
      if (value && typeof value.acc === "number") wrap.dataset.reading = JSON.stringify(value);
      const accuracy = h("p", { class: "muted accuracy", "aria-live": "polite", text: value && typeof value.acc === "number" ? `Độ chính xác: ±${Math.round(value.acc)} m` : "" });
      // A reading with its accuracy; where the form wants one (capture-accuracy), the phone
      // waits for it (a minute at most, then keeps the best it had).
      const here = h("button", { type: "button", class: "secondary", text: "Lấy vị trí", onclick: () => {
        if (!navigator.geolocation) { accuracy.textContent = "Máy này không lấy được vị trí."; return; }
        const want = field.accuracy || null;
        let best = null;
        const take = (p) => {
          const c = p.coords;
          const reading = { lat: Number(c.latitude.toFixed(6)), lon: Number(c.longitude.toFixed(6)), acc: Math.round(c.accuracy * 10) / 10,
            ...(typeof c.altitude === "number" ? { alt: Math.round(c.altitude * 10) / 10 } : {}) };
          if (!best || reading.acc < best.acc) best = reading;
          lat.value = best.lat; lon.value = best.lon;
          wrap.dataset.reading = JSON.stringify(best);
          accuracy.textContent = `Độ chính xác: ±${Math.round(best.acc)} m` + (want && best.acc > want ? ` — đang chờ ±${want} m…` : "");
          lat.dispatchEvent(new Event("input", { bubbles: true }));
          return !want || best.acc <= want;
        };
        accuracy.textContent = "Đang lấy vị trí…";
        const watch = navigator.geolocation.watchPosition((p) => { if (take(p)) stop(); },
          (e) => { accuracy.textContent = `Không lấy được vị trí: ${e.message}`; stop(); },
          { enableHighAccuracy: true, maximumAge: 0, timeout: 60000 });
        const timer = setTimeout(() => stop(), 60000);
        function stop() { navigator.geolocation.clearWatch(watch); clearTimeout(timer); }
      } });
      wrap.append(h("fieldset", {}, h("legend", { text: label(field.label, field.name) }), lat, lon, here, accuracy));
      return wrap;
    }
    case "geotrace": case "geoshape": {
      // One place a line, "vĩ độ kinh độ"; a button adds where the phone is.
      const text = (Array.isArray(value) ? value : []).map((p) => `${p.lat} ${p.lon}${typeof p.acc === "number" ? ` ${p.acc}` : ""}`).join("\n");
      const area = h("textarea", { id, rows: 4, text, placeholder: "16.4637 107.5909" });
      const add = h("button", { type: "button", class: "secondary", text: "Thêm điểm ở đây", onclick: () =>
        navigator.geolocation && navigator.geolocation.getCurrentPosition((p) => {
          const c = p.coords;
          area.value = `${area.value.trim()}\n${c.latitude.toFixed(6)} ${c.longitude.toFixed(6)} ${Math.round(c.accuracy)}`.trim();
          area.dispatchEvent(new Event("input", { bubbles: true }));
        }, () => {}, { enableHighAccuracy: true, timeout: 60000 }) });
      wrap.append(lab, area, add);
      return wrap;
    }
    case "image": case "audio": case "video": case "file": {
      // Taken with the camera (or the recorder), or picked from the phone's files; a photo is
      // scaled down first. Kept on the phone with the record until the server has it.
      wrap.dataset.value = value ? JSON.stringify(value) : "";
      const preview = h("div", { class: "media-preview" });
      const accept = { image: "image/*", audio: "audio/*", video: "video/*", file: "" }[field.type];
      const chosen = async (input) => {
        const file = input.files && input.files[0];
        if (!file) return;
        const kept = field.type === "image" ? await M.scaleDown(file, field.max_pixels || 1024) : file;
        let ref;
        try { ref = await M.keep(kept, file.name); } catch (e) {
          preview.replaceChildren(h("p", { class: "error", text: `Không giữ được tệp: ${e.message}` }));
          return;
        }
        countWaiting();
        wrap.dataset.value = JSON.stringify(ref);
        preview.replaceChildren(await mediaView(ref, field, null));
        wrap.dispatchEvent(new Event("input", { bubbles: true }));
      };
      const pick = h("input", { type: "file", class: "media-pick", ...(accept ? { accept } : {}), "aria-label": "Chọn tệp" });
      pick.addEventListener("change", () => chosen(pick));
      const parts = [lab];
      if (field.type !== "file") {
        const take = h("input", { type: "file", class: "media-take", accept, capture: "environment", hidden: true });
        take.addEventListener("change", () => chosen(take));
        const word = { image: "Chụp ảnh", audio: "Ghi âm", video: "Quay video" }[field.type];
        parts.push(h("button", { type: "button", class: "secondary", text: word, onclick: () => take.click() }), take);
      }
      parts.push(pick, preview);
      wrap.append(...parts);
      if (value) mediaView(value, field, null).then((v) => preview.replaceChildren(v));
      return wrap;
    }
    case "repeat": {
      const items = h("div", { class: "items" });
      const addItem = (item) => {
        const box = h("fieldset", { class: "item" }, h("legend", { text: `${label(field.label, field.name)} ${items.children.length + 1}` }));
        for (const sub of field.fields || []) box.append(fieldInput(sub, item ? item[sub.name] : undefined, villages));
        if ((field.derived || []).length) box.append(h("div", { class: "derived item-derived", "aria-live": "polite" }));
        box.append(h("button", { type: "button", class: "secondary", text: "Xoá mục", onclick: () => { box.remove(); app.dispatchEvent(new Event("input")); } }));
        items.append(box);
      };
      (Array.isArray(value) ? value : []).forEach(addItem);
      wrap.append(h("h3", { text: label(field.label, field.name) }), items,
        h("button", { type: "button", class: "secondary add-item", text: "Thêm mục", onclick: () => { addItem(null); app.dispatchEvent(new Event("input")); } }));
      return wrap;
    }
    default: {
      // The commune's villages to choose from, or the province's communes by name; "Khác" to
      // type what the list lacks.
      if (field.name === "village" && villages.length) {
        wrap.append(lab, ...choiceOrOther(id, villages.map((v) => [v, v]), value, "Khác (nhập tên)…", { "aria-label": "Tên thôn khác" }));
        return wrap;
      }
      if (field.appearance === "commune" && manifest && manifest.province_communes) {
        const all = Object.entries(manifest.province_communes)
          .sort((x, y) => x[1].localeCompare(y[1], "vi"))
          .map(([c, name]) => [c, `${name} (${c})`]);
        wrap.append(lab, ...choiceOrOther(id, all, value, "Khác (nhập mã xã)…", { "aria-label": "Mã xã (5 chữ số)", inputmode: "numeric" }));
        return wrap;
      }
      // A code typed in, or read from a photo where the browser can read barcodes.
      if (field.appearance === "barcode") {
        const input = h("input", { id, type: "text", value: value ?? "" });
        wrap.append(lab, input);
        if ("BarcodeDetector" in window) {
          const shot = h("input", { type: "file", accept: "image/*", capture: "environment", hidden: true, onchange: async () => {
            try {
              const found = await new window.BarcodeDetector().detect(await createImageBitmap(shot.files[0]));
              if (found.length) { input.value = found[0].rawValue; input.dispatchEvent(new Event("input", { bubbles: true })); }
            } catch { /* typed in instead */ }
          } });
          wrap.append(shot, h("button", { type: "button", class: "secondary", text: "Quét mã", onclick: () => shot.click() }));
        }
        return wrap;
      }
      // XLSForm's appearances: several lines, or a keypad of digits.
      if (field.appearance === "multiline") wrap.append(lab, h("textarea", { id, rows: 4, text: value ?? "" }));
      else wrap.append(lab, h("input", { id, type: "text", value: value ?? "", ...(field.appearance === "numbers" ? { inputmode: "numeric" } : {}) }));
      return wrap;
    }
  }
}

async function renderFill(formId, recordId) {
  const existing = recordId ? P.view(state, recordId) : null;
  let form = existing ? formOf(existing) : latestForm(formId);
  if (!form) {
    mount(h("p", { class: "error", text: "Chưa có biểu mẫu này trên máy: hãy đồng bộ khi có mạng." }), h("a", { href: "#", text: "← Quay lại" }));
    return;
  }
  const id = recordId || P.uuidv7();
  // A new record gets its id in the address, so that a reload finds its draft again.
  if (!recordId) history.replaceState(null, "", `#fill/${form.id}/${id}`);
  const draftKey = `${form.id}/${id}`;
  const refused = state.rejected.filter((r) => r.edit.record === id);
  // What the form showed when it was first opened: per field, the value and the dots of the
  // values shown. The draft keeps them, so that saving it, even days later, writes only the
  // fields the person changed, each superseding exactly what was shown for it then: a value
  // another phone wrote meanwhile stays, or stands beside this one as a conflict.
  const shownFor = renderToken;
  const draft = await S.get("drafts", draftKey);
  if (shownFor !== renderToken) return;
  // A draft of a record the server had when the draft was opened, which has left the phone
  // since (a server restored from a backup has not got it back yet): still an edit of that
  // record, of its form's version, not a new one. A record that was only this phone's own,
  // refused since, is made again whole.
  const gone = !existing && draft && draft.base && draft.base_known;
  const isNew = !existing && !gone;
  if (gone && draft.base_version) form = formOf({ form: form.id, version: draft.base_version });
  const known = !!existing && (!!state.pulled[id] || state.acked_unpulled.some((e) => e.record === id));
  const opened = draft && draft.base
    ? { base: draft.base, dots: draft.dots || {}, commune: draft.base_commune, known: !!draft.base_known, version: draft.base_version }
    : { base: {}, dots: {}, commune: existing ? existing.commune : null, known, version: existing ? existing.version : null };
  if (existing && !(draft && draft.base)) {
    for (const n of Object.keys(existing.fields)) {
      opened.base[n] = P.valueOf(existing, n);
      opened.dots[n] = P.dotsOf(existing, n);
    }
  }
  // What the form opens with: the draft typed before, else the record as shown, with the
  // refused edit being corrected on top.
  const start = { ...opened.base };
  for (const r of refused) for (const [n, f] of Object.entries(r.edit.fields)) start[n] = f.value;
  // A new record starts from the form's defaults.
  if (isNew) for (const f of form.fields) if (f.default !== undefined && !(f.name in start)) start[f.name] = f.default;
  // And the defaults the form computes when it is opened (`today()`, another answer).
  if (isNew) {
    for (const f of form.fields.filter((x) => x.default_expr && !(x.name in start))) {
      let v = null;
      try { v = P.evaluate(f.default_expr, (n) => (n in start ? start[n] : null)); } catch { v = null; }
      if (v !== null && v !== "" && !P.checkValue(f, v, P.today())) start[f.name] = v;
    }
  }
  const values = draft ? draft.values : start;
  const communes = auth.communes;
  const commune = (draft && draft.commune) || (existing && existing.commune) || (refused[0] && refused[0].edit.commune) || communes[0];
  const villages = () => (manifest && manifest.villages && manifest.villages[communeSelect.value]) || [];
  const names = (manifest && manifest.communes) || {};
  const communeSelect = h("select", { id: "commune", name: "commune" }, communes.map((c) => h("option", { value: c, selected: c === commune, text: names[c] ? `${names[c]} (${c})` : c })));
  const errors = h("div", { id: "errors", role: "alert", class: "error", hidden: true });
  const derivedBox = h("div", { class: "derived", "aria-live": "polite" });
  // Metadata the phone fills itself (XLSForm's start, end, today, deviceid, username): for a
  // new record only, never shown. `start` is when the form was first opened (kept in the draft).
  const started = (draft && draft.started) || localDateTime(new Date());
  const autoValue = (f) => {
    switch (f.auto) {
      case "start": return started;
      case "end": return localDateTime(new Date());
      case "today": return P.today();
      case "deviceid": return String(state.device);
      case "username": return writers[String(state.device)] || null;
      default: return null;
    }
  };
  const shown = (f) => !f.retired && !f.auto && f.appearance !== "hidden";
  const body = h("div", { class: "fields" }, form.fields.filter(shown).map((f) => fieldInput(f, values[f.name], villages())));
  // A form in sections is filled a page at a time, with its progress shown; leaving a page
  // checks its fields, and saving goes to the page of the first problem.
  const sections = form.sections || [];
  const sectionOf = {};
  sections.forEach((sec, i) => sec.fields.forEach((n) => { sectionOf[n] = i; }));
  let page = 0;
  const progress = h("div", { class: "progress", id: "progress", "aria-live": "polite" });
  const back = h("button", { type: "button", class: "secondary", id: "page-back", onclick: () => showPage(page - 1, -1) }, "← Trang trước");
  const next = h("button", { type: "button", id: "page-next", onclick: () => {
    const problems = pageProblems(page);
    showProblems(problems.all, null);
    if (problems.here.length) return focusFirst();
    showPage(page + 1, 1);
  } }, "Trang sau →");
  const save = h("button", { type: "submit", id: "save", text: "Lưu" });
  const communeBox = h("div", { class: "input" }, h("label", { for: "commune", text: "Xã/phường" }), communeSelect);
  const fieldEl = (name) => body.querySelector(`:scope > [data-name="${CSS.escape(name)}"]`);
  // A page whose every question is hidden by its conditions is passed over.
  const pageShown = (i) => sections[i].fields.some((n) => { const el = fieldEl(n); return el && !el.hidden; });
  const showPage = (i, step) => {
    if (!sections.length) return;
    while (step && i > 0 && i < sections.length - 1 && !pageShown(i)) i += step;
    page = Math.max(0, Math.min(sections.length - 1, i));
    for (const el of body.querySelectorAll(":scope > [data-name]")) {
      el.classList.toggle("off-page", (sectionOf[el.dataset.name] ?? 0) !== page);
    }
    communeBox.classList.toggle("off-page", page !== 0);
    const sec = sections[page];
    progress.replaceChildren(
      h("p", { text: `Phần ${page + 1}/${sections.length}: ${label(sec.label, "")}` }),
      h("progress", { max: sections.length, value: page + 1 }));
    back.hidden = page === 0;
    next.hidden = page === sections.length - 1;
    save.hidden = page !== sections.length - 1;
    if (step) window.scrollTo(0, 0);
  };

  // Values the form works out when their trigger question changes (XLSForm's trigger), kept
  // as answers: what was worked out last, by field.
  const triggered = {};
  const triggerSeen = {};
  const current = () => {
    const out = {};
    for (const f of form.fields.filter(shown)) out[f.name] = readField(f, body);
    Object.assign(out, triggered);
    if (isNew) {
      for (const f of form.fields.filter((x) => !x.retired && x.auto)) out[f.name] = autoValue(f);
      // A hidden question keeps the value the form gives it.
      for (const f of form.fields.filter((x) => !x.retired && x.appearance === "hidden" && x.default !== undefined)) out[f.name] = f.default;
    }
    return out;
  };
  const prospective = (vals) => {
    const rec = existing ? JSON.parse(JSON.stringify(existing)) : { id, form: form.id, version: form.version, commune: communeSelect.value, fields: {} };
    // A record that left the phone is checked as its draft showed it.
    if (!existing && !isNew) for (const [n, v] of Object.entries(opened.base)) rec.fields[n] = [{ value: v, dot: [0, 0] }];
    for (const [n, v] of Object.entries(vals)) rec.fields[n] = [{ value: v, dot: [state.device, state.next_seq] }];
    return rec;
  };
  const refresh = () => {
    const vals = current();
    const rec = prospective(vals);
    // A value worked out when its trigger question changes, then kept.
    for (const f of form.fields.filter((x) => x.trigger && x.calculate && !x.retired)) {
      const now = JSON.stringify(vals[f.trigger] ?? null);
      if (!(f.name in triggerSeen)) { triggerSeen[f.name] = now; continue; }
      if (triggerSeen[f.name] === now) continue;
      triggerSeen[f.name] = now;
      let v = null;
      try { v = P.evaluate(f.calculate, (n) => (n in vals ? vals[n] : P.valueOf(rec, n) ?? null)); } catch { v = null; }
      triggered[f.name] = v === null || v === undefined ? null : typeof v === "string" ? v : String(v);
      vals[f.name] = triggered[f.name];
      rec.fields[f.name] = [{ value: vals[f.name], dot: [state.device, state.next_seq] }];
    }
    // Rules read the answers, then the calculations (derived fields) made of them.
    const computed = P.derive(form, rec);
    const answered = (n) => (n in vals ? vals[n] : P.valueOf(rec, n) ?? computed[n] ?? null);
    // A repeat group's field read from outside it: its values in each item (count, sum).
    const lookup = (n) => answered(n) ?? P.acrossItems(form, n, answered);
    for (const f of form.fields) {
      const el = body.querySelector(`:scope > [data-name="${CSS.escape(f.name)}"]`);
      if (!el) continue;
      let visible = true;
      // Shown once its condition holds (an unanswered question hides what depends on it).
      try { visible = !f.relevant || P.evaluate(f.relevant, lookup) === true; } catch { visible = true; }
      el.hidden = !visible;
      // Required fields carry their mark; a field required by a condition gets it when it holds.
      let needed = false;
      try { needed = !f.required && !!f.required_if && P.evaluate(f.required_if, lookup) === true; } catch { needed = false; }
      el.classList.toggle("needed", needed);
      // A choice filter offers the choices it is true for, as the answers it reads change.
      if (f.choice_filter) {
        for (const opt of el.querySelectorAll("[data-choice]")) {
          const c = (f.choices || [])[Number(opt.dataset.choice)];
          const column = (n) => (n === "@name" ? c.code : (c.props || {})[n.slice(1)] ?? null);
          let offered = true;
          try { offered = P.evaluate(f.choice_filter, (n) => (n.startsWith("@") ? column(n) : lookup(n))) === true; } catch { offered = true; }
          opt.hidden = !offered;
          if (opt.tagName === "OPTION") {
            opt.disabled = !offered;
            // A choice no longer offered is no longer the answer.
            if (!offered && opt.selected) opt.closest("select").value = "";
          } else {
            const box = opt.querySelector("input");
            if (!offered && box && box.checked) box.checked = false;
          }
        }
      }
    }
    // In each item of a repeat group: its questions shown as their conditions say, and its
    // calculations, reading the item's own answers first.
    for (const f of form.fields.filter((x) => x.type === "repeat")) {
      const el = body.querySelector(`:scope > [data-name="${CSS.escape(f.name)}"]`);
      if (!el) continue;
      const items = Array.isArray(vals[f.name]) ? vals[f.name] : [];
      // A repeat whose form says how many items it has (repeat_count): that many, adding
      // items and taking away only empty ones.
      if (f.repeat_count) {
        let n = null;
        try { n = P.evaluate(f.repeat_count, lookup); } catch { n = null; }
        const boxes = [...el.querySelectorAll(":scope > .items > .item")];
        if (typeof n === "number" && Number.isInteger(n) && n >= 0 && n <= 200) {
          const add = el.querySelector(":scope > button.add-item");
          if (boxes.length < n && add) { for (let k = boxes.length; k < n; k++) add.click(); return refresh(); }
          const extra = boxes.slice(n).reverse();
          const empty = (i) => Object.keys(items[i] || {}).length === 0;
          let removed = false;
          for (const [k, box] of extra.entries()) {
            if (!empty(boxes.length - 1 - k)) break;
            box.remove();
            removed = true;
          }
          if (removed) return refresh();
        }
      }
      el.querySelectorAll(":scope > .items > .item").forEach((box, i) => {
        const inner = P.itemValues(f, items[i] || {}, i + 1, lookup);
        for (const sub of f.fields || []) {
          const subEl = box.querySelector(`:scope > [data-name="${CSS.escape(sub.name)}"]`);
          if (!subEl || !sub.relevant) continue;
          let visible = true;
          try { visible = P.evaluate(sub.relevant, inner) === true; } catch { visible = true; }
          subEl.hidden = !visible;
        }
        const calc = box.querySelector(":scope > .item-derived");
        if (calc) {
          const made = P.deriveItem(f, items[i] || {}, i + 1, lookup);
          calc.replaceChildren(...Object.entries(made).map(([n, v]) => {
            const d = f.derived.find((x) => x.name === n);
            return h("div", { class: "field", "data-derived": n }, h("span", { class: "label", text: `${label(d && d.label, n)}: ` }), h("strong", { text: show(v, d) }));
          }));
        }
      });
    }
    const derived = P.derive(form, rec);
    derivedBox.replaceChildren(...Object.entries(derived).map(([n, v]) => {
      const d = form.derived.find((x) => x.name === n);
      return h("div", { class: "field", "data-derived": n }, h("span", { class: "label", text: `${label(d && d.label, n)}: ` }), h("strong", { text: show(v, d) }));
    }));
    // Read again: a choice filter may have taken back an answer it no longer offers.
    return current();
  };
  // Every keystroke is kept: a reload, a crash or a flat battery loses nothing typed. The
  // draft keeps what was shown when it was opened, as stored (a successor number renames the
  // dots of this phone's own edits there).
  const saveDraft = () => exclusive("mam-state", async () => {
    const stored = await S.get("drafts", draftKey);
    const kept = stored && stored.base ? stored : { base: opened.base, dots: opened.dots, base_commune: opened.commune, base_known: opened.known, base_version: opened.version };
    await S.put("drafts", draftKey, { values: current(), commune: communeSelect.value, at: Date.now(), started, base: kept.base, dots: kept.dots, base_commune: kept.base_commune, base_known: kept.base_known, base_version: kept.base_version });
  });
  app.oninput = () => { refresh(); saveDraft(); };
  app.onchange = () => { refresh(); saveDraft(); };

  // Problems show under their fields: on save all at once, on leaving a field its own. `only`
  // names the one field whose message changes (null: every field).
  const showProblems = (problems, only) => {
    for (const f of form.fields) {
      if (only && f.name !== only) continue;
      const el = body.querySelector(`:scope > [data-name="${CSS.escape(f.name)}"]`);
      if (!el) continue;
      const mine = problems.filter((p) => p.field.split("[")[0] === f.name);
      el.classList.toggle("invalid", mine.length > 0);
      const old = el.querySelector(":scope > .field-error");
      if (old) old.remove();
      const input = el.querySelector("input, select, textarea");
      if (mine.length) {
        const id = `error-${f.name}`;
        el.append(h("p", { class: "field-error", id, "data-error-for": f.name, text: mine.map((p) => p.vi).join(" ") }));
        if (input) { input.setAttribute("aria-invalid", "true"); input.setAttribute("aria-describedby", id); }
      } else if (input) {
        input.removeAttribute("aria-invalid");
        input.removeAttribute("aria-describedby");
      }
    }
  };
  // The problems of the fields of page `i` (`here`), and of the pages before it (`all`).
  const pageProblems = (i) => {
    const vals = refresh();
    const upto = {};
    for (const [n, v] of Object.entries(vals)) if ((sectionOf[n] ?? 0) <= i) upto[n] = emptyToNull(v);
    const edit = { fields: Object.fromEntries(Object.entries(upto).map(([n, v]) => [n, { value: v, supersedes: [] }])) };
    const all = P.checkAll(form, prospective(upto), edit, P.today(), false)
      .filter((p) => (sectionOf[p.field.split("[")[0]] ?? 0) <= i);
    return { all, here: all.filter((p) => (sectionOf[p.field.split("[")[0]] ?? 0) === i) };
  };
  // The page moves to the first problem, and the cursor goes there.
  const focusFirst = () => {
    const first = body.querySelector(":scope > .invalid");
    if (!first) return;
    if (sections.length) showPage(sectionOf[first.dataset.name] ?? 0, 0);
    first.scrollIntoView({ block: "center" });
    const input = first.querySelector("input, select, textarea");
    if (input) input.focus({ preventScroll: true });
  };
  // Leaving a field checks it alone: its value, and the rules it takes part in.
  fieldLeft = (ev) => {
    // Leaving a field for a button (Save, a page's Next): the button checks everything, and a
    // message changing under the finger now would move the button before the tap ends.
    if (ev.relatedTarget && ev.relatedTarget.tagName === "BUTTON") return;
    const el = ev.target.closest && ev.target.closest(".fields > [data-name]");
    if (!el) return;
    const name = el.dataset.name;
    const field = form.fields.find((f) => f.name === name);
    if (!field) return;
    const v = readField(field, body);
    const value = emptyToNull(v);
    const edit = { fields: { [name]: { value, supersedes: [] } } };
    const problems = P.checkAll(form, prospective({ [name]: value }), edit, P.today(), false)
      .filter((p) => p.field.split("[")[0] === name);
    // An empty field is told it is required only once the person has been through it.
    showProblems(problems, name);
  };
  // What the server refused last time shows under the fields it names, too.
  const refusedProblems = refused.map((r) => ({
    field: r.rejection.field || "",
    vi: (r.rejection.message_vi || r.rejection.message || "").replace(/^[^:\s]+: /, ""),
  }));

  const submit = async (ev) => {
    ev.preventDefault();
    // Enter (or the keyboard's Go) before the last page moves on a page, as Next does.
    if (sections.length && page !== sections.length - 1) {
      next.click();
      return;
    }
    const vals = refresh();
    // The edit: every filled field of a new record, or only what changed.
    const changed = {};
    for (const [n, v] of Object.entries(vals)) {
      const value = emptyToNull(v);
      if (isNew ? value !== null : JSON.stringify(value) !== JSON.stringify(emptyToNull(opened.base[n]))) changed[n] = value;
    }
    // A record moves only when the person chose another commune than the one shown.
    const moved = !isNew && !!opened.commune && communeSelect.value !== opened.commune;
    if (!isNew && !moved && Object.keys(changed).length === 0 && refused.length === 0) {
      app.oninput = null;
      app.onchange = null;
      fieldLeft = null;
      await exclusive("mam-state", () => S.del("drafts", draftKey));
      go(`#record/${id}`);
      return;
    }
    const edit = { seq: state.next_seq, record: id, form: form.id, version: form.version, commune: communeSelect.value, fields: {} };
    for (const [n, v] of Object.entries(changed)) edit.fields[n] = { value: v, supersedes: opened.dots[n] || [] };
    const problems = P.checkAll(form, prospective(changed), edit, P.today(), isNew);
    showProblems(problems, null);
    if (problems.length) {
      errors.hidden = false;
      errors.textContent = problems.length === 1
        ? "Có 1 chỗ cần sửa trước khi lưu."
        : `Có ${problems.length} chỗ cần sửa trước khi lưu.`;
      focusFirst();
      return;
    }
    errors.hidden = true;
    app.oninput = null;
    app.onchange = null;
    fieldLeft = null;
    await update(async (s) => {
      for (const r of refused) P.dismissRejected(s, r.edit.seq);
      const stored = await S.get("drafts", draftKey);
      const dots = stored && stored.base ? stored.dots || {} : opened.dots;
      const fields = {};
      for (const [n, v] of Object.entries(changed)) fields[n] = { value: v, supersedes: dots[n] || [] };
      if (P.view(s, id)) {
        if (Object.keys(fields).length || moved) P.editShown(s, id, fields, moved ? communeSelect.value : null, dots[P.COMMUNE_FIELD] || []);
      } else if (!isNew) {
        // The record left the phone while its draft waited: the edit goes all the same, under
        // the record as the draft opened it, each field superseding what the draft showed.
        const opening = { id, form: form.id, version: form.version, commune: communeSelect.value };
        if (Object.keys(fields).length || moved) P.editOpened(s, opening, fields, moved ? dots[P.COMMUNE_FIELD] || [] : null);
      } else if (Object.keys(changed).length) {
        P.create(s, id, form.id, form.version, communeSelect.value, changed);
      }
      return { dropDrafts: [draftKey] };
    });
    go("#");
    if (navigator.onLine) sync();
  };

  mount(
    h("h1", { text: label(form.title, form.id) }),
    h("form", { id: "fill", class: "stack", novalidate: true, onsubmit: submit },
      refused.map((r) => h("p", { class: "error", text: `Lần trước bị từ chối: ${(r.rejection.message_vi || r.rejection.message || "").replace(/^[^:\s]+: /, "")}` })),
      sections.length ? progress : null,
      communes.length > 1 ? communeBox : null,
      errors,
      body,
      derivedBox,
      h("div", { class: "actions" },
        sections.length ? back : null,
        sections.length ? next : null,
        save,
        h("a", { href: "#", text: "Huỷ" })),
    ),
  );
  refresh();
  showPage(0, 0);
  showProblems(refusedProblems.filter((p) => p.field), null);
}

// ---------------------------------------------------------------------------------------------
// Start

// WHO's growth tables, read once the app has shown its first screen.
let whoReady = Promise.resolve();

async function start() {
  // Offline storage of the app's files and location need a secure origin (https, or this
  // machine itself): say so plainly where there is none.
  if (!window.isSecureContext) document.getElementById("insecure").hidden = false;
  if ("serviceWorker" in navigator) navigator.serviceWorker.register("/app/sw.js", { scope: "/app/" }).catch(() => {});
  auth = (await S.get("meta", "auth")) || null;
  state = await S.loadState();
  if (state) state = P.upgrade(state);
  if (auth && !state) state = P.newState(auth.device);
  manifest = (await S.get("meta", "manifest")) || null;
  writers = (await S.get("meta", "writers")) || {};
  writtenAt = (await S.get("meta", "written_at")) || {};
  countWaiting();
  forms = await S.getAll("forms");
  whoReady = Promise.all(["wei_by_day", "len_by_day", "bmi_by_day", "wfl_by_length", "wfh_by_height"]
    .map((t) => fetch(`/app/who/${t}.csv`).then((r) => r.text()).catch(() => "")))
    .then((tables) => P.setWhoTables(...tables));
  render();
  setStatus();
  if (auth && navigator.onLine) sync();
}

window.mam.ready = start().then(() => whoReady).then(() => true);
window.mam.state = () => state;
window.mam.sync = () => sync();
window.mam.protocol = P;
window.mam.store = S;
/** Create a record as the form's "Lưu" does, without the screen (for bulk entry and tests). */
window.mam.createRecord = async (form, version, commune, values) => {
  const id = P.uuidv7();
  await update((s) => { P.create(s, id, form, version, commune, values); });
  return id;
};
