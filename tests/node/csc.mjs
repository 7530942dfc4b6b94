// node-redis 5 with client-side caching (RESP3, CLIENT TRACKING) against
// ONE Redis URL: reads are served from its cache until another client
// changes the keys or flushes, exactly as against one Redis server.
// Prints one JSON line; see tests/node.rs for the expected figures.
//
// usage: node csc.mjs PORT
import { createClient } from 'redis';

const port = Number(process.argv[2]);
const client = createClient({
  socket: { port },
  RESP: 3,
  clientSideCache: { ttl: 0, maxEntries: 0, evictPolicy: 'LRU' },
});
const other = createClient({ socket: { port } });
const pause = (ms) => new Promise((r) => setTimeout(r, ms));

await client.connect();
await other.connect();
// Keys in three slots (three masters behind the proxy).
const keys = ['csc:a', 'csc:b{x}', 'csc:c{y}'];
const getAll = () => Promise.all(keys.map((k) => client.get(k)));
for (const k of keys) await other.set(k, 'v1');
const first = await getAll(); // misses: read from the server
const second = await getAll(); // hits: served from the cache
const s1 = client.clientSideCache.stats();
for (const k of keys) await other.set(k, 'v2');
await pause(200); // the invalidation pushes arrive
const third = await getAll(); // misses: the new values
const s2 = client.clientSideCache.stats();
await other.flushAll();
await pause(200); // a null invalidation empties the cache
const fourth = await getAll();
const s3 = client.clientSideCache.stats();
console.log(JSON.stringify({
  first, second, third, fourth,
  hits: [s1.hitCount, s2.hitCount, s3.hitCount],
  misses: [s1.missCount, s2.missCount, s3.missCount],
}));
await client.quit();
await other.quit();
