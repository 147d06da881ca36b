// Mầm service worker: the app's files come from the cache, so the app opens with no network
// after the first visit. Data never goes through here: /v1/ requests go to the network, and
// the app keeps its records in IndexedDB.
const VERSION = "__MAM_APP_VERSION__";
const CACHE = `mam-app-${VERSION}`;
const FILES = [
  "/app/", "/app/app.js", "/app/protocol.js", "/app/store.js", "/app/media.js", "/app/app.css",
  "/app/manifest.webmanifest", "/app/icon.svg", "/app/who/wei_by_day.csv", "/app/who/len_by_day.csv", "/app/who/bmi_by_day.csv", "/app/who/wfl_by_length.csv", "/app/who/wfh_by_height.csv",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(FILES)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith("mam-app-") && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== location.origin || !url.pathname.startsWith("/app/")) return;
  const key = event.request.mode === "navigate" ? "/app/" : url.pathname;
  event.respondWith(
    caches.open(CACHE).then(async (cache) => {
      const hit = await cache.match(key);
      if (hit) return hit;
      const response = await fetch(event.request);
      if (response.ok) cache.put(key, response.clone());
      return response;
    }),
  );
});
