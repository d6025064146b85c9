// Offline support: every file of the site (listed in manifest.json, written by web/build.sh) is
// cached at install, and served from the cache first afterwards, so the page works without a
// network once it has loaded. A new build has a new manifest version, hence a new cache.
const VERSION_URL = 'manifest.json';

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const manifest = await (await fetch(VERSION_URL, { cache: 'no-store' })).json();
    const cache = await caches.open(`hvq-${manifest.version}`);
    await cache.addAll(['./', ...manifest.files]);
    await self.skipWaiting();
  })());
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    const manifest = await (await fetch(VERSION_URL, { cache: 'no-store' })).json().catch(() => null);
    if (manifest) {
      for (const key of await caches.keys()) {
        if (key !== `hvq-${manifest.version}`) await caches.delete(key);
      }
    }
    await self.clients.claim();
  })());
});

self.addEventListener('fetch', (event) => {
  if (event.request.method !== 'GET') return;
  event.respondWith((async () => {
    const hit = await caches.match(event.request, { ignoreSearch: true });
    if (hit) return hit;
    return fetch(event.request);
  })());
});
