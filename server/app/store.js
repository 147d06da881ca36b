// IndexedDB: what the phone keeps between runs. One transaction per change, so a crash or a
// dead battery leaves either the old state or the new one, never half of each.

const DB_NAME = "mam";
const DB_VERSION = 1;
const STORES = ["meta", "records", "pending", "forms", "drafts"];

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
      req.onsuccess = () => resolve(req.result);
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

function all(store) {
  return new Promise((resolve, reject) => {
    const out = {};
    const req = store.openCursor();
    req.onsuccess = () => {
      const c = req.result;
      if (c) {
        out[c.key] = c.value;
        c.continue();
      } else resolve(out);
    };
    req.onerror = () => reject(req.error);
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

/** The protocol state as stored: meta (device, seqs, cursor, acknowledged and refused edits),
 *  the pulled records, the pending edits. */
export async function loadState() {
  const db = await open();
  const tx = db.transaction(["meta", "records", "pending"]);
  const [meta, records, pending] = await Promise.all([
    new Promise((resolve, reject) => {
      const req = tx.objectStore("meta").get("state");
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    }),
    all(tx.objectStore("records")),
    all(tx.objectStore("pending")),
  ]);
  if (!meta) return null;
  return {
    ...meta,
    pulled: records,
    pending: Object.values(pending).sort((a, b) => a.seq - b.seq),
  };
}

/** Store the state in one transaction: meta, every pending edit, and the records named
 *  (`changed` to put, `evicted` to delete). */
export async function saveState(state, changed = [], evicted = []) {
  const db = await open();
  const tx = db.transaction(["meta", "records", "pending"], "readwrite");
  const { pulled, pending, ...meta } = state;
  tx.objectStore("meta").put(meta, "state");
  const p = tx.objectStore("pending");
  p.clear();
  for (const e of pending) p.put(e, e.seq);
  const r = tx.objectStore("records");
  for (const id of changed) if (pulled[id]) r.put(pulled[id], id);
  for (const id of evicted) r.delete(id);
  return done(tx);
}
