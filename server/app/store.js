// IndexedDB: what the phone keeps between runs. One transaction per change, so a crash or a
// dead battery leaves either the old state or the new one, never half of each.

const DB_NAME = "mam";
const DB_VERSION = 3;
// `attachments`: photos, sound and files by their SHA-256, {bytes, type, size, confirmed}.
const STORES = ["meta", "records", "pending", "forms", "drafts", "kept", "attachments"];

let dbPromise = null;

function open() {
  if (!dbPromise) {
    dbPromise = new Promise((resolve, reject) => {
      const req = indexedDB.open(DB_NAME, DB_VERSION);
      req.onupgradeneeded = () => {
        const db = req.result;
        for (const name of STORES) {
          if (!db.objectStoreNames.contains(name)) db.createObjectStore(name);
        }
      };
      req.onsuccess = () => {
        // A newer version of the app in another tab needs the database upgraded: let it.
        req.result.onversionchange = () => {
          req.result.close();
          dbPromise = null;
        };
        resolve(req.result);
      };
      req.onerror = () => reject(req.error);
    });
  }
  return dbPromise;
}

function done(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error || new Error("transaction aborted"));
  });
}

/** Every entry of a store as {key: value}: its keys and its values read in two requests (a
 *  cursor would take one step per record: seconds for a big commune on a cheap phone). */
function all(store) {
  return Promise.all([request(store.getAllKeys()), request(store.getAll())]).then(([keys, values]) => {
    const out = {};
    for (let i = 0; i < keys.length; i++) out[keys[i]] = values[i];
    return out;
  });
}

export async function get(storeName, key) {
  const db = await open();
  return new Promise((resolve, reject) => {
    const req = db.transaction(storeName).objectStore(storeName).get(key);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

export async function put(storeName, key, value) {
  const db = await open();
  const tx = db.transaction(storeName, "readwrite");
  tx.objectStore(storeName).put(value, key);
  return done(tx);
}

export async function del(storeName, key) {
  const db = await open();
  const tx = db.transaction(storeName, "readwrite");
  tx.objectStore(storeName).delete(key);
  return done(tx);
}

export async function getAll(storeName) {
  const db = await open();
  return all(db.transaction(storeName).objectStore(storeName));
}

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

const keptKey = (k) => [k.acked_at, k.edit.seq];

function readQueue(tx) {
  return Promise.all([
    request(tx.objectStore("meta").get("state")),
    request(tx.objectStore("pending").getAll()),
    request(tx.objectStore("kept").getAll()),
  ]).then(([meta, pending, kept]) => {
    if (!meta) return null;
    // Kept edits are keyed by [acked_at, seq]: oldest first, as they were acknowledged.
    return { ...meta, pending: pending.sort((a, b) => a.seq - b.seq), kept };
  });
}

/** The protocol state as stored: meta (device, seqs, cursor, acknowledged and refused edits),
 *  the pulled records, the pending edits, the kept ones. */
export async function loadState() {
  const db = await open();
  const tx = db.transaction(["meta", "records", "pending", "kept"]);
  const [queue, records] = await Promise.all([readQueue(tx), all(tx.objectStore("records"))]);
  return queue && { ...queue, pulled: records };
}

/** The state without the pulled records: what every change of the queue reads first. */
export async function loadQueue() {
  const db = await open();
  return readQueue(db.transaction(["meta", "pending", "kept"]));
}

/** Store the state in one transaction: meta, every pending edit, the kept edits, and the
 *  records named (`changed` to put, `evicted` to delete; `cleared`: every other record goes).
 *  `meta` entries (such as the token) and `drafts` ({key: draft}) are written with it, and the
 *  drafts `dropDrafts` names are deleted. */
export async function saveState(state, { changed = [], evicted = [], cleared = false, meta = {}, drafts = {}, dropDrafts = [] } = {}) {
  const db = await open();
  const tx = db.transaction(["meta", "records", "pending", "kept", "drafts"], "readwrite");
  const { pulled, pending, kept, ...rest } = state;
  const m = tx.objectStore("meta");
  m.put(rest, "state");
  for (const [key, value] of Object.entries(meta)) m.put(value, key);
  const p = tx.objectStore("pending");
  p.clear();
  for (const e of pending) p.put(e, e.seq);
  // Kept edits never change once kept: only the new ones are written, the gone ones deleted.
  const k = tx.objectStore("kept");
  const want = new Map(kept.map((x) => [JSON.stringify(keptKey(x)), x]));
  k.getAllKeys().onsuccess = (ev) => {
    const have = new Set();
    for (const key of ev.target.result) {
      const text = JSON.stringify(key);
      if (want.has(text)) have.add(text);
      else k.delete(key);
    }
    for (const [text, x] of want) if (!have.has(text)) k.put(x, keptKey(x));
  };
  const r = tx.objectStore("records");
  if (cleared) r.clear();
  for (const id of changed) if (pulled[id]) r.put(pulled[id], id);
  for (const id of evicted) r.delete(id);
  const d = tx.objectStore("drafts");
  for (const [key, draft] of Object.entries(drafts)) d.put(draft, key);
  for (const key of dropDrafts) d.delete(key);
  return done(tx);
}

/** Forget what this phone holds for its enrolment: the records, the queue, the drafts, the
 *  token. The forms stay (they are public), and so does what `meta` keeps under `keep`. */
export async function forgetEnrolment() {
  const db = await open();
  const tx = db.transaction(["meta", "records", "pending", "kept", "drafts"], "readwrite");
  for (const name of ["records", "pending", "kept", "drafts"]) tx.objectStore(name).clear();
  const m = tx.objectStore("meta");
  m.delete("state");
  m.delete("auth");
  return done(tx);
}
