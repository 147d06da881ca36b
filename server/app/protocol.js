// Mầm phone protocol: the client state machine of sync-protocol/src/client.rs, the field
// register, the expression language and the form rules, in plain JavaScript. The same
// messages, the same order rules and the same validation messages as the server.

export const PROTOCOL_VERSION = 1;
export const DELETED_FIELD = "_deleted";
/** The record's commune as a register: a move writes it, superseding the communes shown. */
export const COMMUNE_FIELD = "_commune";
export const MAX_TEXT_CHARS = 10000;
export const MAX_REPEAT_ITEMS = 200;
/** Edits in one request at most (the server's default limit is 1000). */
export const MAX_PUSH = 200;
export const DEFAULT_MAX_BYTES = 262144;

// ---------------------------------------------------------------------------------------------
// Records and the register

/** Apply one write to a register (a list of {value, dot}); `seen(dot)` is the replica's
 *  context before the write. The write removes exactly the siblings whose dots it supersedes:
 *  never a value by its device and seq alone, so it never removes a value its author did not
 *  see, even one written under the same device number by a phone restored from a backup. */
export function applyWrite(siblings, dot, value, supersedes, seen = () => false) {
  const covers = (d) => supersedes.some((c) => c[0] === d[0] && c[1] === d[1]);
  let present = false;
  const kept = siblings.filter((s) => {
    if (s.dot[0] === dot[0] && s.dot[1] === dot[1]) {
      present = true;
      return true;
    }
    return !covers(s.dot);
  });
  if (!present && !seen(dot)) kept.push({ value, dot });
  return kept;
}

/** The value a record shows for a field: the last sibling (the server's provisional value). */
export function valueOf(record, name) {
  const siblings = record.fields[name];
  if (!siblings || siblings.length === 0) return undefined;
  return siblings[siblings.length - 1].value;
}

export function dotsOf(record, name) {
  return (record.fields[name] || []).map((s) => s.dot);
}

export function isDeleted(record) {
  return valueOf(record, DELETED_FIELD) === true;
}

export function conflictedFields(record) {
  return Object.keys(record.fields).filter((n) => record.fields[n].length > 1);
}

export function hasDeleteConflict(record) {
  return (
    isDeleted(record) &&
    Object.entries(record.fields).some(
      ([n, sibs]) => n !== DELETED_FIELD && n !== COMMUNE_FIELD && sibs.some((s) => s.value !== null),
    )
  );
}

export function isConflicted(record) {
  return conflictedFields(record).length > 0 || hasDeleteConflict(record) || (record.broken || []).length > 0;
}

function recordFromEdit(edit) {
  return {
    id: edit.record,
    form: edit.form,
    version: edit.version,
    commune: edit.commune,
    fields: {},
  };
}

function applyEdit(record, device, edit) {
  const dot = [device, edit.seq];
  record.version = Math.max(record.version, edit.version);
  for (const [name, change] of Object.entries(edit.fields)) {
    record.fields[name] = applyWrite(
      record.fields[name] || [],
      dot,
      change.value,
      change.supersedes || [],
    );
  }
  // The commune changes only by a move: the provisional value of its register.
  const communes = record.fields[COMMUNE_FIELD];
  if (communes && communes.length) record.commune = communes[communes.length - 1].value;
}

const clone = (x) => (x === undefined ? undefined : JSON.parse(JSON.stringify(x)));

// ---------------------------------------------------------------------------------------------
// The client state machine

/** How long a phone keeps a consumed edit, to push it again should the server's database be
 *  restored from a backup that predates it: 30 days. */
export const DEFAULT_RETENTION_MS = 30 * 24 * 3600 * 1000;
/** Consumed edits kept at most, whatever their age. */
export const MAX_KEPT = 50000;

/** A phone's sync state, plain data so that it can be stored as it is. */
export function newState(device) {
  return upgrade({ device });
}

/** A stored state with every key this version knows (a state an earlier version stored lacks
 *  the newer ones). */
export function upgrade(state) {
  const defaults = {
    next_seq: 1,
    cursor: 0,
    pulled: {},
    pending: [],
    acked_unpulled: [],
    rejected: [],
    forms: {},
    // The database epoch the cursor belongs to.
    epoch: null,
    // The seqs the last request carried: only those can be acknowledged by its response.
    in_flight: [],
    // Consumed edits of this device number (applied or refused), oldest first: {edit, acked_at}.
    kept: [],
    // The highest seq the server ever acknowledged to this device number.
    acked_max: 0,
    // Seqs a restore lost that this phone no longer holds, told to the server with the next push.
    lost_through: null,
    // The server holds another history under this device number: take a successor first.
    successor_needed: false,
    // The id of the successor number asked for (POST /v1/successor), kept until it is taken,
    // so that a retry after a lost response names the same one.
    successor_request: null,
    // A pull from the start is under way: its pages replace every pulled record.
    resetting: false,
    retention_ms: DEFAULT_RETENTION_MS,
    now_ms: 0,
  };
  for (const [k, v] of Object.entries(defaults)) if (state[k] === undefined) state[k] = v;
  return state;
}

/** The phone's clock in milliseconds, for how long consumed edits are kept. A state never told
 *  the time keeps them by count alone. */
export function setNow(state, nowMs) {
  state.now_ms = nowMs;
}

/** The record as the phone shows it: as pulled, with its own unacknowledged edits on top. */
export function view(state, id) {
  let record = clone(state.pulled[id]);
  for (const edit of [...state.acked_unpulled, ...state.pending]) {
    if (edit.record !== id) continue;
    if (!record) record = recordFromEdit(edit);
    applyEdit(record, state.device, edit);
  }
  return record;
}

export function records(state) {
  const ids = new Set(Object.keys(state.pulled));
  for (const e of [...state.acked_unpulled, ...state.pending]) ids.add(e.record);
  return [...ids].sort().map((id) => view(state, id)).filter(Boolean);
}

function takeSeq(state) {
  const seq = state.next_seq;
  state.next_seq += 1;
  return seq;
}

/** Start a new record: an edit that supersedes nothing. */
export function create(state, id, form, version, commune, values) {
  const fields = {};
  for (const [name, value] of Object.entries(values)) fields[name] = { value, supersedes: [] };
  const edit = { seq: takeSeq(state), record: id, form, version, commune, fields };
  state.pending.push(edit);
  return edit.seq;
}

/** Change fields of a record the phone shows: each supersedes exactly the siblings shown. */
export function edit(state, id, values) {
  const record = view(state, id);
  if (!record) return null;
  const fields = {};
  for (const [name, value] of Object.entries(values)) {
    fields[name] = { value, supersedes: dotsOf(record, name) };
  }
  return write(state, record, fields);
}

/** Change fields of a record with the supersedes given per field ({name: {value,
 *  supersedes}}): the dots the person was shown, which may be older than the phone's view. */
export function editShown(state, id, fields, commune, communeShown) {
  const record = view(state, id);
  if (!record) return null;
  const copy = {};
  for (const [name, change] of Object.entries(fields)) {
    copy[name] = { value: change.value, supersedes: clone(change.supersedes || []) };
  }
  // A move writes the commune register over the communes the person was shown.
  if (commune && !copy[COMMUNE_FIELD]) {
    const shown = communeShown || dotsOf(record, COMMUNE_FIELD);
    copy[COMMUNE_FIELD] = { value: commune, supersedes: clone(shown) };
  }
  return write(state, { ...record, commune: commune || record.commune }, copy);
}

/** Change fields of a record the phone no longer shows (it left while a draft of it waited):
 *  the edit goes under the record as the draft opened it ({id, form, version, commune}), each
 *  field superseding the dots given for it; `communeShown` (the commune's dots the draft
 *  showed), when given, makes it a move to `record.commune`. */
export function editOpened(state, record, fields, communeShown) {
  const copy = {};
  for (const [name, change] of Object.entries(fields)) {
    copy[name] = { value: change.value, supersedes: clone(change.supersedes || []) };
  }
  if (communeShown && !copy[COMMUNE_FIELD]) {
    copy[COMMUNE_FIELD] = { value: record.commune, supersedes: clone(communeShown) };
  }
  return write(state, record, copy);
}

function write(state, record, fields) {
  const e = {
    seq: takeSeq(state),
    record: record.id,
    form: record.form,
    version: record.version,
    commune: record.commune,
    fields,
  };
  state.pending.push(e);
  return e.seq;
}

/** Delete: `_deleted` true and null over every field shown. */
export function remove(state, id) {
  const record = view(state, id);
  if (!record) return null;
  const values = {};
  for (const name of Object.keys(record.fields)) if (name !== COMMUNE_FIELD) values[name] = null;
  values[DELETED_FIELD] = true;
  return edit(state, id, values);
}

/** Become the successor device (POST /v1/successor): every pending edit is numbered again from
 *  1 under the new number, in the same order, each keeping the supersedes it was made with (its
 *  own earlier pending edits renamed to their new dots). Nothing pending is dropped. Returns
 *  `rename(dot)`, which gives a dot of the old number's pending edits its new name (for dots
 *  kept elsewhere, as drafts keep them), or null when nothing changed. */
export function adoptSuccessor(state, device) {
  if (device === state.device) return null;
  const old = state.device;
  const renumbered = new Map(state.pending.map((e, i) => [e.seq, i + 1]));
  const rename = (dot) =>
    dot[0] === old && renumbered.has(dot[1]) ? [device, renumbered.get(dot[1])] : dot;
  for (const e of state.pending) {
    e.seq = renumbered.get(e.seq);
    for (const change of Object.values(e.fields)) {
      change.supersedes = (change.supersedes || []).map(rename);
    }
  }
  // The old number's consumed edits are the server's now; a restore of them is the old
  // number's to repair.
  state.acked_unpulled = [];
  state.kept = [];
  state.device = device;
  state.next_seq = state.pending.length + 1;
  state.acked_max = 0;
  state.lost_through = null;
  state.in_flight = [];
  state.successor_needed = false;
  return rename;
}

/**
 * Edits that another device number never sent (it was revoked before they reached the server)
 * carried onto this state: appended to the pending queue under new seqs of this number, their
 * dots on each other renamed. Returns `rename(dot)` for dots kept elsewhere (drafts).
 */
export function carryOver(state, oldDevice, edits) {
  const renumbered = new Map();
  for (const e of [...edits].sort((a, b) => a.seq - b.seq)) renumbered.set(e.seq, takeSeq(state));
  const rename = (dot) =>
    dot[0] === oldDevice && renumbered.has(dot[1]) ? [state.device, renumbered.get(dot[1])] : dot;
  for (const e of [...edits].sort((a, b) => a.seq - b.seq)) {
    const fields = {};
    for (const [name, change] of Object.entries(e.fields)) {
      fields[name] = { ...change, supersedes: (change.supersedes || []).map(rename) };
    }
    state.pending.push({ ...e, seq: renumbered.get(e.seq), fields });
  }
  return rename;
}

/** The next request: the oldest pending edits, the cursor and its epoch. Safe to send again.
 *  While a successor is needed it pushes nothing (it still pulls). */
export function syncRequest(state, maxPush = MAX_PUSH, maxBytes = DEFAULT_MAX_BYTES) {
  const push = state.successor_needed ? [] : state.pending.slice(0, maxPush);
  state.in_flight = push.map((e) => e.seq);
  const request = {
    protocol: PROTOCOL_VERSION,
    push,
    cursor: state.cursor,
    max_bytes: maxBytes,
  };
  if (state.epoch !== null && state.epoch !== undefined) request.epoch = state.epoch;
  if (state.lost_through !== null && state.lost_through !== undefined) request.lost_through = state.lost_through;
  return request;
}

/** Take in a response (PROTOCOL.md): edits the request carried and the response acknowledges
 *  go (kept for the retention period), refused ones are kept with their reason, a reused seq
 *  marks the need for a successor, pulled records replace, evicted go. Returns {cleared}:
 *  whether every pulled record was dropped (the first page of a pull from the start). */
export function applyResponse(state, response) {
  const acked = response.acked_through;
  const inFlight = new Set(state.in_flight || []);
  state.in_flight = [];
  const sent = (seq) => inFlight.has(seq);
  const rejections = response.rejected || [];
  // The server consumed seqs this phone never sent: another history holds this number.
  const forked =
    rejections.some((r) => r.code === "seq_reused" && sent(r.seq)) ||
    state.pending.some((e) => e.seq <= acked && !sent(e.seq));
  const done = state.pending.filter((e) => e.seq <= acked && sent(e.seq));
  state.pending = state.pending.filter((e) => !(e.seq <= acked && sent(e.seq)));
  const back = [];
  for (const e of done) {
    const r = rejections.find((x) => x.seq === e.seq);
    if (r && r.code === "seq_reused") {
      // The server holds another edit under this seq: nothing is wrong with this one, it goes
      // again under a successor's number.
      back.push(e);
    } else if (r) {
      state.kept.push({ edit: clone(e), acked_at: state.now_ms });
      state.rejected = state.rejected.filter((x) => x.edit.seq !== e.seq);
      state.rejected.push({ edit: e, rejection: r });
    } else {
      state.kept.push({ edit: clone(e), acked_at: state.now_ms });
      state.acked_unpulled.push(e);
    }
  }
  if (back.length) {
    state.pending.push(...back);
    state.pending.sort((a, b) => a.seq - b.seq);
  }
  if (forked) state.successor_needed = true;
  // A phone must never reuse a seq the server consumed.
  else state.next_seq = Math.max(state.next_seq, acked + 1);
  if (acked >= (state.lost_through ?? 0)) state.lost_through = null;
  if (!forked) state.acked_max = Math.max(state.acked_max, acked);
  if (response.next_seq !== undefined && response.next_seq !== null && !forked) {
    replayLost(state, response.next_seq);
  }
  pruneKept(state);

  const reset = response.reset === true;
  const cleared = reset && !state.resetting;
  if (cleared) {
    // The pull starts again from the beginning: what the server now holds replaces
    // everything pulled before, over this page and the next ones.
    state.pulled = {};
    state.cursor = 0;
  }
  state.resetting = reset && response.more === true;
  for (const record of response.records || []) {
    state.acked_unpulled = state.acked_unpulled.filter((e) => e.record !== record.id);
    state.pulled[record.id] = record;
  }
  for (const id of response.evicted || []) {
    state.acked_unpulled = state.acked_unpulled.filter((e) => e.record !== id);
    delete state.pulled[id];
  }
  if (!response.more) state.acked_unpulled = [];
  state.cursor = reset ? response.cursor : Math.max(state.cursor, response.cursor);
  if (response.epoch !== undefined && response.epoch !== null) state.epoch = response.epoch;
  state.forms = response.forms || state.forms;
  return { cleared };
}

/** The server expects `next` while this phone had seen seqs up to `acked_max` acknowledged: its
 *  database lost them (restored from a backup). Every kept edit from `next` on goes back to the
 *  queue under its own seq; seqs no longer kept are declared lost, so that the server does not
 *  wait behind them. */
function replayLost(state, next) {
  if (next > state.acked_max) return;
  const again = state.kept.filter((k) => k.edit.seq >= next);
  state.kept = state.kept.filter((k) => k.edit.seq < next);
  const firstKept = again.length
    ? again.reduce((m, k) => Math.min(m, k.edit.seq), Infinity)
    : state.acked_max + 1;
  const lostTo = firstKept - 1;
  state.lost_through = lostTo >= next ? lostTo : null;
  const pendingSeqs = new Set(state.pending.map((e) => e.seq));
  const replay = again.map((k) => k.edit).filter((e) => !pendingSeqs.has(e.seq));
  state.pending.push(...replay);
  state.pending.sort((a, b) => a.seq - b.seq);
  state.acked_max = next - 1;
}

function pruneKept(state) {
  if (state.now_ms > 0) {
    const horizon = state.now_ms - state.retention_ms;
    state.kept = state.kept.filter((k) => k.acked_at >= horizon);
  }
  if (state.kept.length > MAX_KEPT) state.kept = state.kept.slice(state.kept.length - MAX_KEPT);
}

export function dismissRejected(state, seq) {
  state.rejected = state.rejected.filter((r) => r.edit.seq !== seq);
}

// ---------------------------------------------------------------------------------------------
// Dates

export function parseDate(s) {
  if (typeof s !== "string" || !/^\d{4}-\d{2}-\d{2}$/.test(s)) return null;
  const [y, m, d] = s.split("-").map(Number);
  const leap = (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;
  const days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m - 1];
  if (!days || y < 1 || d < 1 || d > days) return null;
  return [y, m, d];
}

/** Days since 1970-01-01 of a date. */
export function dayNumber(s) {
  const p = parseDate(s);
  if (!p) return null;
  return Math.round(Date.UTC(p[0], p[1] - 1, p[2]) / 86400000);
}

/** Today in Việt Nam (UTC+7), YYYY-MM-DD. */
export function today(now = Date.now()) {
  return new Date(now + 7 * 3600000).toISOString().slice(0, 10);
}

/** The date of a day number (the inverse of `dayNumber`). */
function dateOfDay(days) {
  return new Date(days * 86400000).toISOString().slice(0, 10);
}

/** A number as two digits. */
export const pad2 = (n) => String(Math.floor(Math.abs(n))).padStart(2, "0");

// ---------------------------------------------------------------------------------------------
// Expressions (sync-protocol/src/expr.rs)

let whoTables = null;
/** Give the WHO growth tables (the CSV texts of schemas/who-growth: weight, length/height and
 *  BMI by day of age, weight by length and by height) to the `who` ops. */
export function setWhoTables(wei, len, bmi, wfl, wfh) {
  const parse = (text, tenths) => {
    const rows = new Map();
    for (const line of text.split("\n").slice(1)) {
      if (!line.trim()) continue;
      const c = line.split(",");
      const key = tenths ? Math.round(Number(c[1]) * 10) : Number(c[1]);
      rows.set(`${c[0]}:${key}`, { l: Number(c[2]), m: Number(c[3]), s: Number(c[4]) });
    }
    return rows;
  };
  whoTables = { wei: parse(wei), len: parse(len), bmi: parse(bmi), wfl: parse(wfl, true), wfh: parse(wfh, true) };
}

/** R's round(x, 2): the nearer of the two 2-decimal neighbours, the even one on a tie
 *  (sync-protocol's `who::round2`). */
export function round2(x) {
  if (x === 0 || !Number.isFinite(x)) return x;
  const sign = x < 0 ? -1 : 1;
  const a = Math.abs(x);
  const x10 = 100 * a;
  const i10 = Math.floor(x10);
  const down = i10 / 100, up = Math.ceil(x10) / 100;
  const du = up - a, dd = a - down;
  return sign * (du < dd || (du === dd && i10 % 2 === 1) ? up : down);
}

const WHO_PLAUSIBLE = { waz: [-6, 5], haz: [-6, 6], whz: [-5, 5], baz: [-5, 5] };

/** One WHO z-score of a child, as sync-protocol's `who::Child::score` computes it:
 *  `{ z, flagged }`, or null where WHO gives none. `child` is { boy, ageDays, weightKg,
 *  lenheiCm, position ("lying", "standing" or null), oedema }. */
export function whoScore(score, child) {
  if (!whoTables || !(score in WHO_PLAUSIBLE)) return null;
  const { boy, ageDays } = child;
  if (!(ageDays >= 0) || ageDays / 30.4375 >= 60) return null;
  if (child.oedema && score !== "haz") return null;
  const floor = Math.floor(ageDays);
  const days = ageDays - floor >= 0.5 ? floor + 1 : floor;
  const sex = boy ? "1" : "2";
  const byAge = (t) => whoTables[t].get(`${sex}:${days}`) || null;
  const positive = (v) => (typeof v === "number" && v > 0 ? v : null);
  // A standing measurement under 9 months counts as lying, uncorrected.
  const position = child.position === "standing" && ageDays / 30.4375 < 9 ? null : child.position;
  let x = typeof child.lenheiCm === "number" ? child.lenheiCm : null;
  if (typeof x === "number") {
    if (position === "standing" && days < 731) x = x + 0.7;
    else if (position === "lying" && days >= 731) x = x - 0.7;
  }
  const lmsZ = (y, p) => (Math.pow(y / p.m, p.l) - 1) / (p.s * p.l);
  const restricted = (y, p) => {
    const sd = (k) => p.m * Math.pow(1 + p.l * p.s * k, 1 / p.l);
    const z = lmsZ(y, p);
    if (z > 3) return 3 + (y - sd(3)) / (sd(3) - sd(2));
    if (z < -3) return -3 + (y - sd(-3)) / (sd(-2) - sd(-3));
    return z;
  };
  let z = null;
  const weight = positive(child.weightKg);
  const lenhei = positive(x);
  if (score === "waz") {
    const p = byAge("wei");
    if (weight !== null && p) z = restricted(weight, p);
  } else if (score === "haz") {
    const p = byAge("len");
    if (lenhei !== null && p) z = lmsZ(lenhei, p);
  } else if (score === "baz") {
    const p = byAge("bmi");
    if (weight !== null && lenhei !== null && p) {
      const metres = lenhei / 100;
      z = restricted(weight / (metres * metres), p);
    }
  } else if (weight !== null && typeof x === "number") {
    const lying = days < 731;
    const [t, low, high] = lying ? ["wfl", 45, 110] : ["wfh", 65, 120];
    if (x >= low && x <= high) {
      const lower = whoTables[t].get(`${sex}:${Math.trunc(x * 10)}`);
      const diff = (x - Math.trunc(x * 10) / 10) / 0.1;
      let p = lower;
      if (lower && diff > 0) {
        const upper = whoTables[t].get(`${sex}:${Math.trunc(x * 10 + 1)}`);
        const mix = (a, b) => a + diff * (b - a);
        p = upper ? { l: mix(lower.l, upper.l), m: mix(lower.m, upper.m), s: mix(lower.s, upper.s) } : null;
      }
      if (p) z = restricted(weight, p);
    }
  }
  if (z === null) return null;
  z = round2(z);
  if (Number.isNaN(z)) return null;
  const [low, high] = WHO_PLAUSIBLE[score];
  return { z, flagged: z < low || z > high };
}

/** The child a growth op's arguments describe; null without a sex or an age. */
function growthChild(sex, age, weightKg, lenheiCm, lying, oedema) {
  const boy = sex === "m" || sex === 1 ? true : sex === "f" || sex === 2 ? false : null;
  if (boy === null || !isNum(age)) return null;
  return {
    boy,
    ageDays: age,
    weightKg: isNum(weightKg) ? weightKg : null,
    lenheiCm: isNum(lenheiCm) ? lenheiCm : null,
    position: lying === true ? "lying" : lying === false ? "standing" : null,
    oedema: oedema === true,
  };
}

const isNum = (v) => typeof v === "number" && Number.isFinite(v);
const isNull = (v) => v === null || v === undefined;
function deepEqual(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** The most places a line or an area holds (sync-protocol's `MAX_POINTS`). */
const MAX_POINTS = 2000;
/** The largest attachment a field may name (sync-protocol's `media::MAX_BYTES`). */
export const MAX_ATTACHMENT_BYTES = 64 * 1024 * 1024;
const MEDIA_WANTED = {
  image: ["a photo (image/…)", "ảnh (image/…)"],
  audio: ["a sound recording (audio/…)", "bản ghi âm (audio/…)"],
  video: ["a video (video/…)", "video (video/…)"],
  file: ["a file", "một tệp"],
};

/** A place: `{lat, lon}` in range, with `alt` and `acc` (metres, not negative) when known. */
function isPoint(v) {
  const optional = (x) => x === undefined || x === null || isNum(x);
  return !!v && typeof v === "object" && isNum(v.lat) && isNum(v.lon) && Math.abs(v.lat) <= 90 && Math.abs(v.lon) <= 180
    && optional(v.alt) && optional(v.acc) && !(isNum(v.acc) && v.acc < 0);
}

/** A media field's reference, if well formed (sync-protocol's `media::Attachment::of`). */
export function attachmentOf(v) {
  if (!v || typeof v !== "object" || Array.isArray(v)) return null;
  if (!Object.keys(v).every((k) => ["sha256", "size", "type", "name"].includes(k))) return null;
  const part = /^[A-Za-z0-9!#$&^_.+-]{1,127}$/;
  const type = typeof v.type === "string" ? v.type.split("/") : [];
  const ok = typeof v.sha256 === "string" && /^[0-9a-f]{64}$/.test(v.sha256)
    && Number.isInteger(v.size) && v.size >= 1 && v.size <= MAX_ATTACHMENT_BYTES
    && type.length === 2 && part.test(type[0]) && part.test(type[1])
    && (v.name === undefined || (typeof v.name === "string" && [...v.name].length <= 255 && !/[/\\]/.test(v.name)));
  return ok ? v : null;
}

/** Evaluate an expression; `lookup(name)` gives a field's value. Unknown inputs give null. */
/** A value as XPath reads it as text (sync-protocol's `expr::text_of`). */
function textOf(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "string") return v;
  if (typeof v === "number") return String(v);
  if (typeof v === "boolean") return String(v);
  if (Array.isArray(v)) return v.map(textOf).join(" ");
  return "";
}

/** A value as XPath's number() (sync-protocol's `expr::number_of`). */
function numberOf(v) {
  if (typeof v === "number") return Number.isFinite(v) ? v : null;
  if (typeof v === "string") {
    const t = v.trim();
    if (t === "" || !/^[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|infinity|nan)$/i.test(t)) return null;
    const n = Number(t);
    return Number.isFinite(n) ? n : null;
  }
  if (typeof v === "boolean") return v ? 1 : 0;
  return null;
}

export function evaluate(expr, lookup) {
  return evaluateIn(expr, lookup, false);
}

/** Now on Việt Nam's clock (UTC+7), `YYYY-MM-DDTHH:MM:SS+07:00` (sync-protocol's `now`). */
function vietnamNow() {
  const ms = Date.now() + 7 * 3600000;
  const day = Math.floor(ms / 86400000), s = Math.floor((ms - day * 86400000) / 1000);
  return `${dateOfDay(day)}T${pad2(Math.floor(s / 3600))}:${pad2(Math.floor(s / 60) % 60)}:${pad2(s % 60)}+07:00`;
}

/** Days since 1970-01-01 (UTC) of a date or a date and time (sync-protocol's `decimal_days`). */
function decimalDays(v) {
  if (typeof v !== "string") return null;
  const day = dayNumber(v.slice(0, 10));
  if (day === null) return null;
  if (v.length === 10) return day;
  if (v[10] !== "T") return null;
  const time = v.slice(11);
  const at = time.search(/[Z+-]/);
  const clock = at < 0 ? time : time.slice(0, at), offset = at < 0 ? "" : time.slice(at);
  const parts = clock.split(":").map(Number);
  if (parts.length < 2 || parts.some((x) => !Number.isFinite(x))) return null;
  const [h, m, sec = 0] = parts;
  let shift = 0;
  if (offset !== "" && offset !== "Z") {
    const [oh, om = "0"] = offset.slice(1).split(":");
    shift = (offset[0] === "-" ? -1 : 1) * (Number(oh) * 60 + Number(om));
    if (!Number.isFinite(shift)) return null;
  }
  return day + (h * 3600 + m * 60 + sec - shift * 60) / 86400;
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const WEEKDAYS = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

/** XPath's format-date (sync-protocol's `format_date`). */
function formatDate(days, original, format) {
  const date = original.slice(0, 10);
  const [y, m, d] = dayNumber(date) === null ? [1970, 1, 1] : date.split("-").map(Number);
  const clock = original.slice(11, 19).split(":").map((p) => Number(p.slice(0, 2))).filter((x) => Number.isFinite(x));
  const part = (i) => clock[i] ?? 0;
  const day = dayNumber(date) ?? Math.floor(days);
  let out = "";
  for (let i = 0; i < format.length; i++) {
    const c = format[i];
    if (c !== "%") { out += c; continue; }
    const k = format[++i];
    switch (k) {
      case "Y": out += String(y).padStart(4, "0"); break;
      case "y": out += pad2(((y % 100) + 100) % 100); break;
      case "m": out += pad2(m); break;
      case "n": out += String(m); break;
      case "d": out += pad2(d); break;
      case "e": out += String(d); break;
      case "b": out += MONTHS[(m - 1) % 12]; break;
      case "a": out += WEEKDAYS[((day % 7) + 7) % 7]; break;
      case "H": out += pad2(part(0)); break;
      case "M": out += pad2(part(1)); break;
      case "S": out += pad2(part(2)); break;
      case undefined: out += "%"; break;
      default: out += "%" + k;
    }
  }
  return out;
}

/** XPath's truth of a value (sync-protocol's `expr::truth`). */
function truth(v) {
  if (typeof v === "boolean") return v;
  if (typeof v === "number") return v !== 0 && !Number.isNaN(v);
  if (typeof v === "string" || Array.isArray(v)) return v.length > 0;
  return false;
}

/** A value in arithmetic as XPath reads it: numeric text, a date as its day number. */
function xpathNumber(v) {
  if (typeof v === "string" && v.length === 10 && v[4] === "-") return dayNumber(v);
  if (typeof v === "boolean") return null;
  return numberOf(v);
}

// Under XPath, a comparison that cannot be made is false (`!=` true), as NaN compares.
const TESTS = new Set(["<", "<=", ">", ">=", "==", "!=", "and", "or", "not", "selected", "regex"]);

/** `xp` is true inside `{"xpath": rule}`: an unanswered question is the empty text, and
 * nothing is unknown (sync-protocol's `expr::eval_in`). */
function evaluateIn(expr, lookup, xp) {
  if (expr === null || typeof expr !== "object" || Array.isArray(expr)) return expr;
  const keys = Object.keys(expr);
  if (keys.length !== 1) throw new Error("an expression object has exactly one key");
  const op = keys[0];
  const raw = expr[op];
  if (op === "var") {
    const v = lookup(raw);
    return isNull(v) ? (xp ? "" : null) : v;
  }
  if (op === "xpath") {
    if (!Array.isArray(raw) || raw.length !== 1) throw new Error("xpath takes one rule");
    return evaluateIn(raw[0], lookup, true);
  }
  const v = compute(op, Array.isArray(raw) ? raw : [raw], lookup, xp);
  return xp && v === null && TESTS.has(op) ? op === "!=" : v;
}

function compute(op, args, lookup, xp) {
  const ev = (a) => evaluateIn(a, lookup, xp);
  const arg = (i) => ev(args[i]);
  const num = (v) => (xp ? xpathNumber(v) : isNum(v) ? v : null);
  const cond = (v) => (typeof v === "boolean" ? v : xp ? truth(v) : null);
  switch (op) {
    case "+": case "-": case "*": case "/": {
      const nums = args.map((a) => num(ev(a)));
      if (!nums.every(isNum)) return null;
      let acc = nums[0];
      for (const n of nums.slice(1)) {
        acc = op === "+" ? acc + n : op === "-" ? acc - n : op === "*" ? acc * n : acc / n;
      }
      return Number.isFinite(acc) ? acc : null;
    }
    case "<": case "<=": case ">": case ">=": case "==": case "!=": {
      let a = arg(0), b = arg(1);
      // No answer is the empty text, as XPath reads it (sync-protocol's `expr::eval`).
      const empty = (v) => isNull(v) || v === "";
      if ((op === "==" || op === "!=") && (isNull(a) || isNull(b)) && empty(a) && empty(b)) return op === "==";
      if (isNull(a) || isNull(b)) return null;
      // A number against text that is a number compares as numbers.
      const numeric = (v) => (typeof v === "string" ? numberOf(v) : null);
      let na = num(a), nb = num(b);
      if (na !== null && nb === null) nb = numeric(b);
      else if (na === null && nb !== null) na = numeric(a);
      let ord;
      if (na !== null && nb !== null) {
        if (Number.isNaN(na) || Number.isNaN(nb)) return null;
        ord = na < nb ? -1 : na > nb ? 1 : 0;
      } else if (typeof a === "string" && typeof b === "string") ord = a < b ? -1 : a > b ? 1 : 0;
      else if (op === "==") return deepEqual(a, b);
      else if (op === "!=") return !deepEqual(a, b);
      else return null;
      return { "<": ord < 0, "<=": ord <= 0, ">": ord > 0, ">=": ord >= 0, "==": ord === 0, "!=": ord !== 0 }[op];
    }
    case "and": case "or": {
      const decisive = op === "or";
      let unknown = false;
      for (const a of args) {
        const v = cond(ev(a));
        if (v === decisive) return decisive;
        if (v === null) unknown = true;
      }
      return unknown ? null : !decisive;
    }
    case "not": {
      const v = cond(arg(0));
      return v === null ? null : !v;
    }
    case "if": {
      const c = cond(arg(0));
      return c === true ? arg(1) : c === false ? arg(2) : null;
    }
    case "present":
      return !isNull(arg(0));
    case "sum_where": {
      const items = arg(0);
      if (!Array.isArray(items)) return null;
      let total = 0;
      for (const item of items) {
        const inner = (n) => (item && typeof item === "object" ? item[n] : undefined);
        if (evaluate(args[1], inner) === true) {
          const v = evaluate(args[2], inner);
          total += isNum(v) ? v : 0;
        }
      }
      return total;
    }
    case "days": {
      const a = dayNumber(arg(0)), b = dayNumber(arg(1));
      return a === null || b === null ? null : b - a;
    }
    case "in": {
      const x = arg(0), list = arg(1);
      if (list === null) return null;
      if (!Array.isArray(list)) throw new Error("in takes a list as its second argument");
      if (x === null) return null;
      if (Array.isArray(x)) return x.some((i) => list.some((l) => deepEqual(i, l)));
      return list.some((l) => deepEqual(x, l));
    }
    case "round": {
      const x = num(arg(0)), d = num(arg(1));
      if (!isNum(x) || !isNum(d)) return null;
      const f = Math.pow(10, d);
      // Halves away from zero, as the server rounds.
      return (Math.sign(x) * Math.round(Math.abs(x) * f)) / f + 0;
    }
    case "mod": {
      const x = num(arg(0)), y = num(arg(1));
      return isNum(x) && isNum(y) && y !== 0 ? x % y : null;
    }
    case "selected": {
      const v = arg(0), code = arg(1);
      if (Array.isArray(v)) return v.some((x) => deepEqual(x, code));
      if (typeof v === "string" && typeof code === "string") return v.split(/\s+/).filter(Boolean).includes(code);
      return null;
    }
    case "selected_at": {
      const v = arg(0), n = num(arg(1));
      const codes = Array.isArray(v) ? v.map(textOf) : textOf(v).split(/\s+/).filter(Boolean);
      return n !== null && n >= 0 && Math.trunc(n) < codes.length ? codes[Math.trunc(n)] : "";
    }
    case "count_selected": {
      const v = arg(0);
      if (Array.isArray(v)) return v.length;
      if (typeof v === "string") return v.split(/\s+/).filter(Boolean).length;
      return 0;
    }
    case "string_length":
      return [...textOf(arg(0))].length;
    case "contains": case "starts_with": case "ends_with": {
      const a = textOf(arg(0)), b = textOf(arg(1));
      return op === "contains" ? a.includes(b) : op === "starts_with" ? a.startsWith(b) : a.endsWith(b);
    }
    case "regex": {
      const a = arg(0), p = arg(1);
      if (isNull(a) || typeof p !== "string") return null;
      return new RegExp(p, "u").test(textOf(a));
    }
    case "concat":
      return args.map((a) => textOf(ev(a))).join("");
    case "substr": {
      const chars = [...textOf(arg(0))];
      const first = num(arg(1));
      const start = Math.max(0, Math.trunc(isNum(first) ? first : 0));
      const from = Math.min(start, chars.length);
      let to = chars.length;
      if (args.length > 2) { const n = num(arg(2)); if (isNum(n)) to = Math.max(0, Math.trunc(n)); }
      return chars.slice(from, Math.max(from, Math.min(to, chars.length))).join("");
    }
    case "coalesce": {
      const a = arg(0);
      return isNull(a) || a === "" ? arg(1) : a;
    }
    case "position": {
      const p = lookup("@position");
      return isNull(p) ? null : p;
    }
    case "count": {
      const v = arg(0);
      return Array.isArray(v) ? v.length : isNull(v) || v === "" ? 0 : 1;
    }
    case "sum": case "max": case "min": {
      const v = arg(0);
      const items = Array.isArray(v) ? v : isNull(v) ? [] : [v];
      const nums = items.map(num);
      if (nums.some((n) => n === null)) return null;
      if (op === "sum") return nums.reduce((a, b) => a + b, 0);
      if (!nums.length) return null;
      return op === "max" ? Math.max(...nums) : Math.min(...nums);
    }
    case "indexed_repeat": {
      const v = arg(0), n = num(arg(1));
      if (!Array.isArray(v) || n === null || n < 1) return null;
      const x = v[Math.trunc(n) - 1];
      return x === undefined ? null : x;
    }
    case "today": {
      const t = lookup("@today");
      return typeof t === "string" ? t : vietnamNow().slice(0, 10);
    }
    case "now": {
      const t = lookup("@now");
      return typeof t === "string" ? t : vietnamNow();
    }
    case "date": {
      const v = arg(0);
      if (typeof v === "string") {
        const d = v.slice(0, 10);
        return dayNumber(d) === null ? null : d;
      }
      const x = numberOf(v);
      return x === null ? null : dateOfDay(Math.floor(x));
    }
    case "decimal_date_time":
      return decimalDays(arg(0));
    case "format_date": {
      const d = arg(0), f = arg(1);
      const days = decimalDays(d);
      return days === null || typeof f !== "string" ? null : formatDate(days, d, f);
    }
    case "int": {
      const x = numberOf(arg(0));
      return x === null ? null : Math.trunc(x) + 0;
    }
    case "number":
      return numberOf(arg(0));
    case "who_z": {
      // The first nutrition form's op: one score from one measure, by today's rules.
      const v = args.map(ev);
      const weight = v[0] === "wfa";
      const child = growthChild(v[1], v[2], weight ? v[3] : null, weight ? null : v[3], v[4], null);
      const z = child && whoScore(weight ? "waz" : "haz", child);
      return z ? z.z : null;
    }
    case "who":
    case "who_flag": {
      const v = args.map(ev);
      const child = growthChild(v[1], v[2], v[3], v[4], v[5], v[6]);
      const z = child && whoScore(v[0], child);
      if (!z) return null;
      return op === "who" ? z.z : z.flagged;
    }
    default:
      throw new Error(`unknown operator ${op}`);
  }
}

export function vars(expr, out = []) {
  if (Array.isArray(expr)) expr.forEach((e) => vars(e, out));
  else if (expr && typeof expr === "object") {
    for (const [k, v] of Object.entries(expr)) {
      if (k === "var" && typeof v === "string") out.push(v);
      else vars(v, out);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Form rules (sync-protocol/src/form.rs): the same rules and messages as the server

function brief(value) {
  const text = JSON.stringify(value);
  const chars = [...text];
  return chars.length > 60 ? chars.slice(0, 60).join("") + "…" : text;
}

function violation(field, rule, en, vi) {
  return { field, rule, message: `${field}: ${en}`, message_vi: `${field}: ${vi}`, en, vi };
}

/** A date as Việt Nam writes it (`2020-03-01` → `01/03/2020`); other text as it is. */
export function dayText(date) {
  return typeof date === "string" && /^\d{4}-\d{2}-\d{2}$/.test(date)
    ? `${date.slice(8, 10)}/${date.slice(5, 7)}/${date.slice(0, 4)}`
    : String(date);
}

/** A field's name as people read it. */
export function labelEn(field) {
  return (field.label && field.label.en) || field.name;
}
export function labelVi(field) {
  return (field.label && field.label.vi) || field.name;
}

/** A broken constraint of `field`: the form's own words when it gives them, else these. */
function constraint(field, rule, en, vi) {
  const m = field.constraint_message;
  return m ? violation(field.name, rule, m.en, m.vi) : violation(field.name, rule, en, vi);
}

/** `field`, required and empty (under the name `name`, a path inside a repeat group). */
function missing(field, name) {
  const m = field.required_message;
  return m
    ? violation(name, "required", m.en, m.vi)
    : violation(name, "required", `${labelEn(field)} is required.`, `Chưa nhập ${labelVi(field)}.`);
}

/** Numbers as the server writes them (Rust's f64 display). */
function num(x) {
  return String(x);
}

/** Whether `value` fits the field's type and rules; null, or the violation. */
/** `HH:MM`, `HH:MM:SS` or `HH:MM:SS.sss`, 24-hour (sync-protocol's `form::is_time`). */
export function isTime(s) {
  return /^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,3})?)?$/.test(s);
}

function isTimeWithOffset(s) {
  if (s.endsWith("Z")) return isTime(s.slice(0, -1));
  const off = s.slice(-6);
  if (/^[+-]([01][0-9]|2[0-3]):[0-5][0-9]$/.test(off)) return isTime(s.slice(0, -6));
  return isTime(s);
}

export function checkValue(field, value, day) {
  if (isNull(value)) return null;
  const [en, vi] = [labelEn(field), labelVi(field)];
  const bad = (rule, e, v) => violation(field.name, rule, e, v);
  const broken = (rule, e, v) => constraint(field, rule, e, v);
  const wrongType = (what, viWhat) =>
    bad("type", `${en} must be ${what}, not ${brief(value)}.`, `${vi} phải là ${viWhat}, không phải ${brief(value)}.`);
  switch (field.type) {
    case "text": {
      if (typeof value !== "string") return wrongType("text", "chữ");
      const n = [...value].length;
      if (n > MAX_TEXT_CHARS) {
        return bad("max_length", `${en} is ${n} characters long, over ${MAX_TEXT_CHARS}.`, `${vi} dài ${n} ký tự, quá mức ${MAX_TEXT_CHARS}.`);
      }
      if (field.pattern) {
        let re = null;
        try { re = new RegExp(`^(?:${field.pattern})$`, "u"); } catch { re = null; }
        if (re && !re.test(value)) {
          return broken("pattern", `${en} is not in the expected form: ${brief(value)}.`, `${vi} không đúng dạng: ${brief(value)}.`);
        }
      }
      return null;
    }
    case "integer":
    case "decimal": {
      const ok = field.type === "integer" ? Number.isInteger(value) : isNum(value);
      if (!ok) return field.type === "integer" ? wrongType("a whole number", "số nguyên") : wrongType("a number", "một số");
      if (isNum(field.min) && value < field.min) {
        return broken("min", `${en} must be at least ${num(field.min)}; it is ${num(value)}.`, `${vi} phải từ ${num(field.min)} trở lên; đã nhập ${num(value)}.`);
      }
      if (isNum(field.max) && value > field.max) {
        return broken("max", `${en} must be at most ${num(field.max)}; it is ${num(value)}.`, `${vi} tối đa là ${num(field.max)}; đã nhập ${num(value)}.`);
      }
      return null;
    }
    case "boolean":
      return typeof value === "boolean" ? null : wrongType("yes or no", "có hoặc không");
    case "date": {
      if (typeof value !== "string" || !parseDate(value)) return wrongType("a date", "một ngày");
      const d = dayText(value);
      if (field.not_future && value > day) return broken("not_future", `${en} (${d}) cannot be after today.`, `${vi} (${d}) không được sau hôm nay.`);
      if (typeof field.min === "string" && value < field.min) return broken("min", `${en} (${d}) cannot be before ${dayText(field.min)}.`, `${vi} (${d}) không được trước ${dayText(field.min)}.`);
      if (typeof field.max === "string" && value > field.max) return broken("max", `${en} (${d}) cannot be after ${dayText(field.max)}.`, `${vi} (${d}) không được sau ${dayText(field.max)}.`);
      return null;
    }
    case "note":
      return bad("note", `${en} is a note: it holds no value.`, `${vi} là lời dặn: không nhận giá trị.`);
    case "time":
      return typeof value === "string" && isTime(value) ? null : wrongType("a time (HH:MM)", "một giờ (HH:MM)");
    case "datetime": {
      const at = typeof value === "string" ? value.indexOf("T") : -1;
      const ok = at > 0 && parseDate(value.slice(0, at)) && isTimeWithOffset(value.slice(at + 1));
      return ok ? null : wrongType("a date and time (YYYY-MM-DDTHH:MM)", "ngày và giờ (YYYY-MM-DDTHH:MM)");
    }
    case "reference":
      return typeof value === "string" && /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(value)
        ? null
        : wrongType("a record", "một hồ sơ");
    case "geopoint":
      return isPoint(value) ? null : wrongType("a place (latitude, longitude)", "một vị trí (vĩ độ, kinh độ)");
    case "geotrace": case "geoshape": {
      if (!Array.isArray(value) || value.length > MAX_POINTS || !value.every(isPoint)) return wrongType("a list of places", "danh sách các vị trí");
      const enough = field.type === "geoshape" ? 4 : 2;
      if (value.length < enough) return bad("points", `${en} needs at least ${enough} places; it has ${value.length}.`, `${vi} cần ít nhất ${enough} vị trí; mới có ${value.length}.`);
      const [first, last] = [value[0], value[value.length - 1]];
      if (field.type === "geoshape" && (first.lat !== last.lat || first.lon !== last.lon)) return bad("closed", `${en}: an area ends where it starts.`, `${vi}: một vùng phải kết thúc ở vị trí bắt đầu.`);
      return null;
    }
    case "image": case "audio": case "video": case "file": {
      const a = attachmentOf(value);
      if (!a) return wrongType("an attachment (sha256, size, type)", "một tệp đính kèm (sha256, size, type)");
      const family = { image: "image/", audio: "audio/", video: "video/", file: "" }[field.type];
      if (!a.type.startsWith(family)) {
        const [wantEn, wantVi] = MEDIA_WANTED[field.type];
        return bad("media_type", `${en} takes ${wantEn}, not ${JSON.stringify(a.type)}.`, `${vi} nhận ${wantVi}, không nhận ${JSON.stringify(a.type)}.`);
      }
      return null;
    }
    case "select_one":
      if (typeof value !== "string") return wrongType("one of the choices", "một lựa chọn");
      return checkChoice(field, value);
    case "select_many": {
      if (!Array.isArray(value)) return wrongType("a list of choices", "danh sách lựa chọn");
      for (let i = 0; i < value.length; i++) {
        if (typeof value[i] !== "string") return wrongType("a list of choices", "danh sách lựa chọn");
        const v = checkChoice(field, value[i]);
        if (v) return v;
        if (value.slice(0, i).includes(value[i])) {
          return bad("unique", `${en}: ${JSON.stringify(value[i])} is chosen twice.`, `${vi}: ${JSON.stringify(value[i])} bị chọn hai lần.`);
        }
      }
      return null;
    }
    case "rank": {
      if (!Array.isArray(value) || value.some((x) => typeof x !== "string")) return wrongType("the choices in order", "các lựa chọn theo thứ tự");
      for (let i = 0; i < value.length; i++) {
        const v = checkChoice(field, value[i]);
        if (v) return v;
        if (value.slice(0, i).includes(value[i])) {
          return bad("unique", `${en}: ${JSON.stringify(value[i])} is ranked twice.`, `${vi}: ${JSON.stringify(value[i])} được xếp hai lần.`);
        }
      }
      const left = (field.choices || []).find((c) => !value.includes(c.code));
      if (left) return bad("rank", `${en}: every choice is ranked; ${JSON.stringify(left.code)} is missing.`, `${vi}: cần xếp mọi lựa chọn; còn thiếu ${JSON.stringify(left.code)}.`);
      return null;
    }
    case "repeat": {
      if (!Array.isArray(value)) return wrongType("a list of items", "danh sách các mục");
      if (value.length > MAX_REPEAT_ITEMS) {
        return bad("max_items", `${en} has ${value.length} items, over ${MAX_REPEAT_ITEMS}.`, `${vi} có ${value.length} mục, quá mức ${MAX_REPEAT_ITEMS}.`);
      }
      const subs = field.fields || [];
      for (let i = 0; i < value.length; i++) {
        const item = value[i];
        if (!item || typeof item !== "object" || Array.isArray(item)) return wrongType("a list of items", "danh sách các mục");
        for (const [key, v] of Object.entries(item)) {
          const sub = subs.find((f) => f.name === key);
          if (!sub) return bad("unknown_field", `${en}, item ${i + 1}: there is no field ${JSON.stringify(key)}.`, `${vi}, mục ${i + 1}: không có trường ${JSON.stringify(key)}.`);
          const inner = checkValue(sub, v, day);
          if (inner) {
            return violation(`${field.name}[${i + 1}].${inner.field}`, inner.rule, `${en}, item ${i + 1}: ${inner.en}`, `${vi}, mục ${i + 1}: ${inner.vi}`);
          }
        }
      }
      return null;
    }
    default:
      return null;
  }
}

function checkChoice(field, code) {
  if ((field.choices || []).some((c) => c.code === code)) return null;
  const codes = (field.choices || []).map((c) => c.code).join(", ");
  return violation(field.name, "choice", `${labelEn(field)}: ${JSON.stringify(code)} is not one of the choices (${codes}).`, `${labelVi(field)}: ${JSON.stringify(code)} không có trong các lựa chọn (${codes}).`);
}

/** The rules that span fields, on the record as it would be after an edit touching `touched`:
 *  the first broken, or null. */
export function checkRecord(form, record, touched, isNew) {
  return recordProblems(form, record, touched, isNew)[0] || null;
}

/** The rules of a repeat group's items (sync-protocol's `FormField::check_items`): each
 * field asked in its item is required as the form says and keeps its constraint. */
function checkItems(repeat, items, outer) {
  const en = labelEn(repeat), vi = labelVi(repeat);
  for (let i = 0; i < items.length; i++) {
    const inner = itemValues(repeat, items[i], i + 1, outer);
    const place = (e) => violation(`${repeat.name}[${i + 1}].${e.field}`, e.rule, `${en}, item ${i + 1}: ${e.en}`, `${vi}, mục ${i + 1}: ${e.vi}`);
    const holds = (rule) => { try { return evaluate(rule, inner); } catch { return null; } };
    for (const sub of (repeat.fields || []).filter((x) => !x.retired)) {
      if (sub.relevant && holds(sub.relevant) !== true) continue;
      const v = inner(sub.name);
      if (v === null) {
        if (sub.required || (sub.required_if && holds(sub.required_if) === true)) return place(missing(sub, sub.name));
      } else if (sub.constraint && holds(sub.constraint) === false) {
        return place(constraint(sub, "constraint", `${labelEn(sub)} does not meet the form's rule.`, `${labelVi(sub)} không đúng điều kiện của biểu mẫu.`));
      }
    }
  }
  return null;
}

/** Every rule spanning fields that the record breaks, in the form's order. */
function recordProblems(form, record, touched, isNew) {
  const out = [];
  // A rule may read a derived field (XLSForm: a calculation).
  const derived = derive(form, record);
  const top = (name) => {
    const v = valueOf(record, name);
    return isNull(v) ? (isNull(derived[name]) ? null : derived[name]) : v;
  };
  const value = (name) => { const v = top(name); return v !== null ? v : acrossItems(form, name, top); };
  if (isDeleted(record)) return out;
  for (const f of form.fields.filter((x) => !x.retired)) {
    const current = value(f.name);
    const mine = touched.has(f.name);
    // A question its condition hides is not asked, so it cannot be required.
    let asked = true;
    if (f.relevant) { try { asked = evaluate(f.relevant, value) === true; } catch { asked = false; } }
    if (f.required && asked && current === null && (isNew || mine)) {
      out.push(missing(f, f.name));
      continue;
    }
    if (f.required_if && asked) {
      const relevant = isNew || mine || vars(f.required_if).some((v) => touched.has(v));
      if (relevant && current === null && evaluate(f.required_if, value) === true) {
        const named = (lang) => vars(f.required_if).map((n) => {
          const other = form.fields.find((x) => x.name === n);
          return other ? (lang === "vi" ? labelVi(other) : labelEn(other)) : n;
        }).join(", ");
        const m = f.required_message;
        out.push(m
          ? violation(f.name, "required_if", m.en, m.vi)
          : violation(f.name, "required_if", `${labelEn(f)} is required once ${named("en")} is filled in.`, `Cần nhập ${labelVi(f)} khi đã có ${named("vi")}.`));
        continue;
      }
    }
    if (f.not_before && typeof current === "string") {
      const floor = value(f.not_before);
      if (typeof floor === "string" && (mine || touched.has(f.not_before)) && current < floor) {
        const other = form.fields.find((x) => x.name === f.not_before) || { name: f.not_before };
        out.push(constraint(f, "not_before", `${labelEn(f)} (${dayText(current)}) cannot be before ${labelEn(other)} (${dayText(floor)}).`, `${labelVi(f)} (${dayText(current)}) không được trước ${labelVi(other)} (${dayText(floor)}).`));
      }
    }
    if (f.type === "repeat" && Array.isArray(current) && (isNew || mine)) {
      const v = checkItems(f, current, value);
      if (v) { out.push(v); continue; }
    }
    // The form's own rule (XLSForm's constraint): broken only when it is false, not unknown.
    if (f.constraint && current !== null && (mine || vars(f.constraint).some((v) => touched.has(v)))) {
      let holds = null;
      try { holds = evaluate(f.constraint, value); } catch { holds = null; }
      if (holds === false) {
        out.push(constraint(f, "constraint", `${labelEn(f)} does not meet the form's rule.`, `${labelVi(f)} không đúng điều kiện của biểu mẫu.`));
      }
    }
  }
  return out;
}

/** Every check the server makes of one edit against its form, in the server's order: each
 *  field on its own, then the rules across fields. Null, or the first violation. */
/** Every problem of an edit at once, one per field at most, in the form's order: the values
 *  that do not fit their fields, then the rules spanning fields, for the fields whose values
 *  fit. What a form shows under its fields. */
export function checkAll(form, record, edit, day, isNew) {
  const out = [];
  const bad = new Set();
  for (const f of form.fields) {
    if (!(f.name in edit.fields) || f.retired) continue;
    const v = checkValue(f, edit.fields[f.name].value, day);
    if (v) { out.push(v); bad.add(f.name); }
  }
  for (const p of recordProblems(form, record, new Set(Object.keys(edit.fields)), isNew)) {
    if (!bad.has(p.field)) { out.push(p); bad.add(p.field); }
  }
  const order = new Map(form.fields.map((f, i) => [f.name, i]));
  const top = (p) => order.get(p.field.split("[")[0]) ?? 1e9;
  return out.sort((x, y) => top(x) - top(y));
}

export function checkEdit(form, record, edit, day, isNew) {
  for (const [name, change] of Object.entries(edit.fields)) {
    if (name === DELETED_FIELD || name === COMMUNE_FIELD) continue;
    const field = form.fields.find((f) => f.name === name);
    if (!field || field.retired) {
      return violation(name, "unknown_field", `form ${form.id} version ${form.version} has no field ${JSON.stringify(name)}`, `biểu mẫu ${form.id} phiên bản ${form.version} không có trường ${JSON.stringify(name)}`);
    }
    const v = checkValue(field, change.value, day);
    if (v) return v;
  }
  return checkRecord(form, record, new Set(Object.keys(edit.fields)), isNew);
}

/** A derived field's value (sync-protocol's `Derived::value`): null while its condition is
 * not true (a calculation in a group not shown), or when an input is unknown. */
function derivedValue(d, lookup) {
  let asked = true;
  if (d.relevant) { try { asked = evaluate(d.relevant, lookup) === true; } catch { asked = false; } }
  if (!asked) return null;
  try { const v = evaluate(d.expr, lookup); return v === undefined ? null : v; } catch { return null; }
}

/** The calculations of item `position` (from 1) of a repeat group (sync-protocol's
 * `FormField::derive_item`); `outer` gives the form's values. */
export function deriveItem(repeat, item, position, outer) {
  const out = {};
  for (const d of repeat.derived || []) {
    out[d.name] = derivedValue(d, (name) => itemValue(repeat, item, position, out, name, outer));
  }
  return out;
}

function itemValue(repeat, item, position, derived, name, outer) {
  if (name === "@position") return position;
  const empty = (v) => (isNull(v) ? null : v);
  if ((repeat.fields || []).some((f) => f.name === name)) return empty(item ? item[name] : null);
  if ((repeat.derived || []).some((d) => d.name === name)) return empty(derived[name]);
  return outer(name);
}

/** The values a rule inside item `position` of a repeat reads (sync-protocol's
 * `FormField::item_values`). */
export function itemValues(repeat, item, position, outer) {
  const derived = deriveItem(repeat, item, position, outer);
  return (name) => itemValue(repeat, item, position, derived, name, outer);
}

/** A repeat group's field or calculation read from outside it: its value in each item
 * (sync-protocol's `Form::across_items`). */
export function acrossItems(form, name, value) {
  const repeat = (form.fields || []).find((f) => f.type === "repeat"
    && ((f.fields || []).some((s) => s.name === name) || (f.derived || []).some((d) => d.name === name)));
  if (!repeat) return null;
  const items = value(repeat.name);
  return (Array.isArray(items) ? items : []).map((item, i) => {
    const v = itemValues(repeat, item, i + 1, value)(name);
    return isNull(v) ? null : v;
  });
}

/** The derived fields of a record, as the server computes them. */
export function derive(form, record) {
  const out = {};
  const value = (name) => { const v = valueOf(record, name); return v === undefined ? null : v; };
  for (const d of form.derived || []) {
    const lookup = (name) => {
      if (name in out) return out[name];
      const v = value(name);
      return !isNull(v) ? v : acrossItems(form, name, value);
    };
    out[d.name] = derivedValue(d, lookup);
  }
  return out;
}

/** A version 7 UUID: time-ordered, random. */
export function uuidv7(now = Date.now()) {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  let t = now;
  for (let i = 5; i >= 0; i--) { b[i] = t % 256; t = Math.floor(t / 256); }
  b[6] = (b[6] & 0x0f) | 0x70;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
