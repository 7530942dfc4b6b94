// A chat server run as two Socket.IO servers that share rooms through ONE
// Redis URL with @socket.io/redis-adapter: classic Pub/Sub (createAdapter)
// or sharded Pub/Sub (createShardedAdapter: SSUBSCRIBE/SPUBLISH). A room
// message and a broadcast reach users on both servers, fetchSockets() and
// serverCount() ask the other server through Redis, and everything closes
// cleanly. Prints one JSON line with "ok"; see tests/node.rs.
//
// usage: node sio.mjs PORT classic|sharded
import { createServer } from 'node:http';
import { Server } from 'socket.io';
import { io as connect } from 'socket.io-client';
import { createAdapter, createShardedAdapter } from '@socket.io/redis-adapter';
import { createClient } from 'redis';

const [port, mode] = [Number(process.argv[2]), process.argv[3]];
const pause = (ms) => new Promise((r) => setTimeout(r, ms));
const result = { ok: false, mode };
const closers = [];
try {
  const servers = [];
  for (let i = 0; i < 2; i++) {
    const pub = createClient({ socket: { port } });
    const sub = pub.duplicate();
    await Promise.all([pub.connect(), sub.connect()]);
    closers.push(() => pub.quit(), () => sub.quit());
    const adapter = mode === 'sharded' ? createShardedAdapter(pub, sub) : createAdapter(pub, sub);
    const http = createServer();
    const io = new Server(http, { adapter });
    await new Promise((r) => http.listen(0, r));
    closers.push(() => new Promise((r) => io.close(r)));
    io.on('connection', (s) => {
      s.on('join', (room, ack) => { s.join(room); ack('joined'); });
    });
    servers.push({ io, port: http.address().port });
  }
  // Two chat users on server 0, one on server 1.
  const users = [];
  for (const [i, srv] of [[0, 0], [1, 0], [2, 1]]) {
    const c = connect(`http://127.0.0.1:${servers[srv].port}`, { transports: ['websocket'] });
    closers.push(() => c.close());
    await new Promise((r) => c.on('connect', r));
    c.got = [];
    c.on('chat', (m) => c.got.push(m));
    await c.emitWithAck('join', i === 1 ? 'other' : 'room');
    users.push(c);
  }
  await pause(300);
  // Server 1 broadcasts to the room: user 0 (on server 0) and user 2.
  servers[1].io.to('room').emit('chat', 'hello room');
  servers[0].io.emit('chat', 'hello all');
  await pause(500);
  result.got = users.map((u) => u.got);
  // Cross-server queries go through Redis too (requests, then replies).
  const sockets = await servers[1].io.in('room').fetchSockets();
  result.inRoom = sockets.length;
  result.serverCount = await servers[0].io.of('/').adapter.serverCount();
  // Arrival order between a local and a relayed emit is not defined.
  result.got = result.got.map((g) => [...g].sort());
  result.ok = JSON.stringify(result.got) === JSON.stringify([['hello all', 'hello room'], ['hello all'], ['hello all', 'hello room']])
    && result.inRoom === 2 && result.serverCount === 2;
} catch (e) {
  result.error = String(e && e.stack || e);
} finally {
  for (const c of closers.reverse()) { try { await c(); } catch {} }
  console.log(JSON.stringify(result));
  process.exit(result.ok ? 0 : 1);
}
