// The chatbot-atimo route (no relay needed): deliveries signed exactly as the Rust dispatcher
// signs them (Standard Webhooks, the webhook secret, webhook-id = event id), posted as real
// web-standard Request objects.

import assert from 'node:assert/strict';
import { describe, it, beforeEach } from 'node:test';
import { Webhook } from 'standardwebhooks';
import {
  DEFAULT_MAX_BODY_BYTES,
  REDIS_COMPLETE_SCRIPT,
  REDIS_RELEASE_SCRIPT,
  createHandler,
  createMemoryStore,
  createRedisStore,
  parseEnvelope,
} from '../chatbot-atimo/app/api/webhook/chat-whatsapp/handler.ts';
import { captureLogger, newSecret, sleep } from './helpers.mjs';

const SECRET = newSecret();
const URL_ = 'http://localhost:3000/api/webhook/chat-whatsapp';

const statusBody = {
  event: 'status',
  data: { connected: true, clientInfo: { wid: '5511999990000@c.us', pushname: 'Atimo', platform: 'android' } },
  timestamp: '2025-12-21T18:22:44.850Z',
  id: 'status-1',
  session: 'default',
};
const messageBody = {
  event: 'message',
  data: {
    message: {
      id: 'false_5511999990000@c.us_3EB0C767D097B7C7C030',
      from: '5511999990000@c.us',
      to: 'bot',
      content: 'Oi',
      type: 'text',
      direction: 'incoming',
      timestamp: '2025-12-21T18:02:52.836Z',
      status: 'received',
      hasMedia: false, // an extra field: kept
    },
  },
  timestamp: '2025-12-21T18:02:52.900Z',
};
const qrBody = {
  event: 'qr',
  data: { qr: 'data:image/png;base64,iVBORw0KGgo=', available: true },
  timestamp: '2025-12-21T18:00:00.000Z',
};

let seq = 0;

/**
 * A delivery as the relay sends it. `body` may be an object (serialised) or a raw string.
 * @param {object | string} body
 * @param {{id?: string, at?: Date, secrets?: string[], omit?: string[], tamper?: (s: string) => string}} [o]
 */
function delivery(body, o = {}) {
  const raw = typeof body === 'string' ? body : JSON.stringify(body);
  const id = o.id ?? `evt_${++seq}_${Date.now()}`;
  const at = o.at ?? new Date();
  const signature = (o.secrets ?? [SECRET]).map((s) => new Webhook(s).sign(id, at, raw)).join(' ');
  /** @type {Record<string, string>} */
  const headers = {
    'content-type': 'application/json',
    'webhook-id': id,
    'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
    'webhook-signature': signature,
  };
  for (const name of o.omit ?? []) delete headers[name];
  return { id, request: () => new Request(URL_, { method: 'POST', headers, body: o.tamper ? o.tamper(raw) : raw }) };
}

function recordingHandlers() {
  /** @type {{type: string, event: any, context: any}[]} */
  const calls = [];
  return {
    calls,
    handlers: {
      status: async (event, context) => void calls.push({ type: 'status', event, context }),
      qr: async (event, context) => void calls.push({ type: 'qr', event, context }),
      message: async (event, context) => void calls.push({ type: 'message', event, context }),
    },
  };
}

const CHUNK = 64 * 1024;

/** A body stream of `total` bytes (Infinity: endless) in 64 KiB chunks, counting what was pulled. */
function byteSource(total) {
  let pulled = 0;
  let cancelled = false;
  const stream = new ReadableStream({
    pull(controller) {
      if (pulled >= total) return controller.close();
      const size = Math.min(CHUNK, total - pulled);
      pulled += size;
      controller.enqueue(new Uint8Array(size).fill(0x20));
    },
    cancel() {
      cancelled = true;
    },
  });
  return { stream, pulled: () => pulled, cancelled: () => cancelled };
}

/** Wraps a store to report each complete / release once it is done (`next()` awaits the next one). */
function settling(inner) {
  /** @type {string[]} */
  const settled = [];
  /** @type {((kind: string) => void)[]} */
  const waiting = [];
  const report = (kind) => {
    settled.push(kind);
    waiting.shift()?.(kind);
  };
  let seen = 0;
  return {
    settled,
    next: () => (seen < settled.length ? Promise.resolve(settled[seen++]) : new Promise((resolve) => waiting.push((kind) => { seen += 1; resolve(kind); }))),
    store: {
      claim: (id, lease) => inner.claim(id, lease),
      complete: async (id, ttl, token) => { await inner.complete(id, ttl, token); report('complete'); },
      release: async (id, token) => { await inner.release(id, token); report('release'); },
    },
  };
}

describe('chatbot-atimo route: verify, dedupe, dispatch', () => {
  /** @type {ReturnType<typeof recordingHandlers>} */
  let rec;
  /** @type {(r: Request) => Promise<Response>} */
  let POST;
  /** @type {ReturnType<typeof captureLogger>} */
  let log;

  beforeEach(() => {
    rec = recordingHandlers();
    log = captureLogger();
    POST = createHandler({ secret: SECRET, handlers: rec.handlers, logger: log.logger });
  });

  it('valid delivery → 200, handler called once with the typed event', async () => {
    const d = delivery(statusBody);
    const res = await POST(d.request());
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/json');
    assert.deepEqual(await res.json(), { status: 'ok', id: d.id, event: 'status', handled: true });
    assert.equal(rec.calls.length, 1);
    assert.equal(rec.calls[0].type, 'status');
    assert.deepEqual(rec.calls[0].event, statusBody);
    assert.equal(rec.calls[0].context.webhookId, d.id);
    assert.ok(rec.calls[0].context.webhookTimestamp instanceof Date);
  });

  it('each event type reaches its own handler; extra fields are kept', async () => {
    for (const body of [messageBody, qrBody]) {
      const res = await POST(delivery(body).request());
      assert.equal(res.status, 200);
    }
    assert.deepEqual(rec.calls.map((c) => c.type), ['message', 'qr']);
    assert.equal(rec.calls[0].event.data.message.content, 'Oi');
    assert.equal(rec.calls[0].event.data.message.hasMedia, false);
    assert.equal(rec.calls[1].event.data.available, true);
  });

  it('replay of the same webhook-id → 200 duplicate, handler not called again', async () => {
    const d = delivery(messageBody);
    assert.equal((await POST(d.request())).status, 200);
    const again = await POST(d.request());
    assert.equal(again.status, 200);
    assert.deepEqual(await again.json(), { status: 'duplicate', id: d.id });
    // A retry signed later (new timestamp, same id) is a duplicate too.
    const retry = delivery(messageBody, { id: d.id, at: new Date(Date.now() + 2000) });
    assert.equal((await POST(retry.request())).status, 200);
    assert.equal(rec.calls.length, 1);
  });

  it('tampered body → 401, handler not called', async () => {
    const d = delivery(statusBody, { tamper: (s) => s.replace('"connected":true', '"connected":false') });
    const res = await POST(d.request());
    assert.equal(res.status, 401);
    assert.equal((await res.json()).error, 'unauthorized');
    assert.equal(rec.calls.length, 0);
  });

  it('stale timestamp (6 min old) → 401; 6 min in the future → 401', async () => {
    for (const offset of [-6 * 60_000, 6 * 60_000]) {
      const res = await POST(delivery(statusBody, { at: new Date(Date.now() + offset) }).request());
      assert.equal(res.status, 401);
    }
    assert.equal(rec.calls.length, 0);
  });

  it('missing headers → 401 naming them', async () => {
    for (const name of ['webhook-id', 'webhook-timestamp', 'webhook-signature']) {
      const res = await POST(delivery(statusBody, { omit: [name] }).request());
      assert.equal(res.status, 401, name);
      assert.match((await res.json()).message, new RegExp(name));
    }
    const bare = new Request(URL_, { method: 'POST', body: JSON.stringify(statusBody) });
    assert.equal((await POST(bare)).status, 401);
    assert.equal(rec.calls.length, 0);
  });

  it('wrong secret → 401; a failed delivery is not remembered as seen', async () => {
    const d = delivery(statusBody, { secrets: [newSecret()] });
    assert.equal((await POST(d.request())).status, 401);
    const good = delivery(statusBody, { id: d.id });
    assert.equal((await POST(good.request())).status, 200);
    assert.equal(rec.calls.length, 1);
  });

  it('secret rotation: several signatures, several secrets', async () => {
    const oldSecret = newSecret();
    // The relay signs with old and new during a rotation; a receiver with either accepts.
    assert.equal((await POST(delivery(qrBody, { secrets: [oldSecret, SECRET] }).request())).status, 200);
    const both = createHandler({ secret: `${oldSecret} ${SECRET}`, handlers: rec.handlers, logger: log.logger });
    assert.equal((await both(delivery(qrBody, { secrets: [oldSecret] }).request())).status, 200);
    assert.equal((await both(delivery(qrBody).request())).status, 200);
    assert.equal(rec.calls.length, 3);
  });

  it('malformed JSON after a valid signature → 400', async () => {
    const res = await POST(delivery('{"event":"status",').request());
    assert.equal(res.status, 400);
    assert.equal((await res.json()).error, 'malformed_json');
    assert.equal(rec.calls.length, 0);
  });

  it('unknown event type → 200 ignored (so the relay stops retrying), no handler called', async () => {
    const res = await POST(delivery({ event: 'presence', data: {}, timestamp: '2025-12-21T18:00:00Z' }).request());
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.equal(body.status, 'ignored');
    assert.equal(rec.calls.length, 0);
  });

  it('known event breaking the contract → 422 with the path', async () => {
    const broken = structuredClone(messageBody);
    delete broken.data.message.content;
    const res = await POST(delivery(broken).request());
    assert.equal(res.status, 422);
    assert.deepEqual(await res.json(), { error: 'schema_violation', path: 'data.message.content', expected: 'a string' });
    assert.equal(rec.calls.length, 0);
  });

  it('a handler that throws → 500 (the relay retries), and the retry runs the handler again', async () => {
    let fail = true;
    const calls = [];
    const handler = createHandler({
      secret: SECRET,
      logger: log.logger,
      handlers: {
        message: async (event) => {
          calls.push(event);
          if (fail) throw new Error('database down');
        },
      },
    });
    const d = delivery(messageBody);
    const first = await handler(d.request());
    assert.equal(first.status, 500);
    assert.equal((await first.json()).error, 'handler_failed');
    fail = false;
    assert.equal((await handler(d.request())).status, 200);
    assert.equal((await handler(d.request())).status, 200); // now a duplicate
    assert.equal(calls.length, 2);
    // Logs name the event, never its content.
    assert.doesNotMatch(log.text(), /Oi|5511999990000/);
  });

  it('no handler for a type → 200 handled:false, and a warning naming the type (not the payload)', async () => {
    const handler = createHandler({ secret: SECRET, handlers: {}, logger: log.logger });
    const d = delivery(qrBody);
    const res = await handler(d.request());
    assert.equal(res.status, 200);
    assert.equal((await res.json()).handled, false);
    const warnings = log.lines.filter((l) => l.level === 'warn').map((l) => l.text);
    assert.equal(warnings.length, 1, log.text());
    assert.match(warnings[0], /no handler for "qr" events/);
    assert.match(warnings[0], new RegExp(d.id));
    assert.doesNotMatch(log.text(), /data:image|iVBORw0KGgo/);
  });

  it('a pluggable store (async, like Redis): claim with the lease, complete and release with the claim\'s token', async () => {
    const ops = [];
    const map = new Map();
    let n = 0;
    const store = {
      async claim(id, lease) {
        ops.push(['claim', id, lease]);
        if (map.has(id)) return { status: map.get(id) === 'done' ? 'done' : 'in_progress' };
        const token = `t${++n}`;
        map.set(id, token);
        return { status: 'claimed', token };
      },
      async complete(id, ttl, token) { ops.push(['complete', id, ttl, token]); map.set(id, 'done'); },
      async release(id, token) { ops.push(['release', id, token]); map.delete(id); },
    };
    const handler = createHandler({ secret: SECRET, store, handlers: rec.handlers, dedupeTtlSeconds: 3600, claimLeaseSeconds: 30, logger: log.logger });
    const d = delivery(statusBody);
    await handler(d.request());
    await handler(d.request());
    assert.deepEqual(ops, [['claim', d.id, 30], ['complete', d.id, 3600, 't1'], ['claim', d.id, 30]]);
    assert.equal(rec.calls.length, 1);
    // Refusals after the claim (bad JSON, contract) release it.
    const bad = delivery('{"event":');
    assert.equal((await handler(bad.request())).status, 400);
    assert.deepEqual(ops.slice(-2), [['claim', bad.id, 30], ['release', bad.id, 't2']]);
  });

  it('a store answering something else than a claim result → processed anyway, with a warning', async () => {
    const store = { claim: async () => 'claimed', complete: async () => {}, release: async () => {} };
    const handler = createHandler({ secret: SECRET, store, handlers: rec.handlers, logger: log.logger });
    assert.equal((await handler(delivery(statusBody).request())).status, 200);
    assert.equal(rec.calls.length, 1);
    assert.match(log.text(), /idempotency store unavailable/);
  });

  it('a failing store does not lose the event (processed anyway, warning logged)', async () => {
    const down = async () => { throw new Error('redis down'); };
    const store = { claim: down, complete: down, release: down };
    const handler = createHandler({ secret: SECRET, store, handlers: rec.handlers, logger: log.logger });
    assert.equal((await handler(delivery(statusBody).request())).status, 200);
    assert.equal(rec.calls.length, 1);
    assert.match(log.text(), /idempotency store unavailable/);
  });

  it('without the signature headers, a 5 MiB or endless body → 401 without reading it', async () => {
    for (const total of [5 * 1024 * 1024, Infinity]) {
      const source = byteSource(total);
      const request = new Request(URL_, { method: 'POST', body: source.stream, duplex: 'half', headers: { 'content-type': 'application/json' } });
      const res = await POST(request);
      assert.equal(res.status, 401);
      assert.match((await res.json()).message, /missing header\(s\): webhook-id, webhook-timestamp, webhook-signature/);
      // At most the stream's own read-ahead (one chunk) was produced.
      assert.ok(source.pulled() <= CHUNK, `${source.pulled()} bytes pulled`);
    }
    // A 5 MiB string body too (nothing to count, but the same answer).
    const big = new Request(URL_, { method: 'POST', body: 'x'.repeat(5 * 1024 * 1024) });
    assert.equal((await POST(big)).status, 401);
    assert.equal(rec.calls.length, 0);
  });

  it('signed headers but a body over the limit → 413: a declared length unread, a stream cut at the limit', async () => {
    const headers = () => {
      const d = delivery(statusBody);
      return Object.fromEntries(d.request().headers);
    };
    // Content-Length over the limit: refused before a byte is read.
    const declared = byteSource(Infinity);
    const res = await POST(new Request(URL_, {
      method: 'POST', body: declared.stream, duplex: 'half',
      headers: { ...headers(), 'content-length': String(DEFAULT_MAX_BODY_BYTES + 1) },
    }));
    assert.equal(res.status, 413);
    assert.deepEqual(await res.json(), { error: 'payload_too_large', limit: DEFAULT_MAX_BODY_BYTES, message: `body is over the limit of ${DEFAULT_MAX_BODY_BYTES} bytes` });
    assert.ok(declared.pulled() <= CHUNK, `${declared.pulled()} bytes pulled`);
    // No Content-Length (chunked), endless: read up to the limit, then cancelled.
    const endless = byteSource(Infinity);
    const cut = await POST(new Request(URL_, { method: 'POST', body: endless.stream, duplex: 'half', headers: headers() }));
    assert.equal(cut.status, 413);
    assert.ok(endless.pulled() <= DEFAULT_MAX_BODY_BYTES + 2 * CHUNK, `${endless.pulled()} bytes pulled`);
    assert.equal(endless.cancelled(), true);
    // A smaller configured limit applies the same way.
    const small = createHandler({ secret: SECRET, handlers: rec.handlers, logger: log.logger, maxBodyBytes: 100 });
    assert.equal((await small(delivery(messageBody).request())).status, 413);
    assert.equal(rec.calls.length, 0);
    assert.match(log.text(), /body over/);
  });

  it('an event of the relay\'s largest size (1 MiB) is read and handled', async () => {
    const body = structuredClone(messageBody);
    body.data.message.content = '';
    const room = 1_048_576 - Buffer.byteLength(JSON.stringify(body));
    body.data.message.content = 'é'.repeat(Math.floor(room / 2)); // 2 bytes each in UTF-8
    const raw = JSON.stringify(body);
    assert.ok(Buffer.byteLength(raw) > 1_048_570 && Buffer.byteLength(raw) <= 1_048_576);
    const res = await POST(delivery(raw).request());
    assert.equal(res.status, 200);
    assert.equal(rec.calls[0].event.data.message.content, body.data.message.content);
  });

  it('a handler still running at its deadline → 503 + Retry-After; the claim holds, then becomes done when it ends', async () => {
    /** @type {() => void} */
    let finish = () => {};
    let calls = 0;
    const watched = settling(createMemoryStore());
    const handler = createHandler({
      secret: SECRET,
      store: watched.store,
      logger: log.logger,
      claimLeaseSeconds: 60,
      handlerTimeoutMs: 50,
      handlers: { message: () => { calls += 1; return new Promise((resolve) => { finish = resolve; }); } },
    });
    const d = delivery(messageBody);
    const res = await handler(d.request());
    assert.equal(res.status, 503);
    assert.equal(res.headers.get('retry-after'), '60'); // the lease left, rounded up
    assert.equal((await res.json()).error, 'handler_timeout');
    assert.deepEqual(watched.settled, [], 'neither completed nor released at the deadline');
    // The relay's retry while it runs: not run alongside it.
    assert.equal((await handler(d.request())).status, 409);
    finish();
    assert.equal(await watched.next(), 'complete');
    const after = await handler(d.request());
    assert.equal((await after.json()).status, 'duplicate');
    assert.equal(calls, 1);
    assert.match(log.text(), /handler still running after 50 ms/);
  });

  it('a handler that outlives its lease cannot undo the claim a later copy took', async () => {
    let now = 1_000_000;
    const watched = settling(createMemoryStore({ now: () => now }));
    /** @type {((err?: Error) => void)[]} */
    const pending = [];
    const handler = createHandler({
      secret: SECRET,
      store: watched.store,
      logger: log.logger,
      claimLeaseSeconds: 60,
      handlerTimeoutMs: 20,
      handlers: {
        message: () => new Promise((resolve, reject) => void pending.push((err) => (err ? reject(err) : resolve()))),
      },
    });
    const d = delivery(messageBody);
    assert.equal((await handler(d.request())).status, 503); // copy A hangs past its deadline
    assert.equal((await handler(d.request())).status, 409, 'A holds the claim');
    now += 61_000; // A's lease is over
    assert.equal((await handler(d.request())).status, 503); // copy B claims, runs and hangs too
    assert.equal(pending.length, 2, 'B ran');
    assert.equal((await handler(d.request())).status, 409, 'B holds the claim');
    pending[0](new Error('A failed late')); // A's late failure: release with A's token
    assert.equal(await watched.next(), 'release');
    assert.equal((await handler(d.request())).status, 409, 'B still holds the claim');
    pending[1](); // B succeeds: its claim becomes done
    assert.equal(await watched.next(), 'complete');
    assert.equal((await (await handler(d.request())).json()).status, 'duplicate');
    assert.equal(pending.length, 2);
  });

  it('no secret configured → 500 not_configured (never processes unsigned events)', async () => {
    const saved = process.env.WEBHOOK_SECRET;
    delete process.env.WEBHOOK_SECRET;
    try {
      const handler = createHandler({ handlers: rec.handlers, logger: log.logger });
      const res = await handler(delivery(statusBody).request());
      assert.equal(res.status, 500);
      assert.equal((await res.json()).error, 'not_configured');
      assert.equal(rec.calls.length, 0);
    } finally {
      if (saved !== undefined) process.env.WEBHOOK_SECRET = saved;
    }
  });
});

/**
 * A Redis stand-in with the semantics createRedisStore relies on (SET NX EX answers "OK" or
 * null, GET, expiry, and EVAL of the store's two scripts, each run as one step as Redis runs a
 * script), answering each command after a network-like pause so concurrent requests
 * interleave between commands as they would against a real server. `now` is its clock.
 */
function fakeRedis(now = Date.now) {
  /** @type {Map<string, {value: string, expiresAt: number}>} */
  const data = new Map();
  /** @type {unknown[][]} */
  const commands = [];
  const live = (key) => {
    const entry = data.get(key);
    if (entry && entry.expiresAt <= now()) data.delete(key);
    return data.get(key);
  };
  /** The two Lua scripts, in JavaScript (the Lua itself is not run here). */
  const scripts = new Map([
    [REDIS_COMPLETE_SCRIPT, ([key], [, ttl, done]) => {
      const current = live(key)?.value;
      if (current === done) return 0;
      data.set(key, { value: done, expiresAt: now() + Number(ttl) * 1000 });
      return 1;
    }],
    [REDIS_RELEASE_SCRIPT, ([key], [token]) => (live(key)?.value === token && data.delete(key) ? 1 : 0)],
  ]);
  return {
    data,
    commands,
    async set(key, value, { ex, nx } = {}) {
      commands.push(['set', key, value, { ex, nx }]);
      await sleep(2);
      if (nx && live(key)) return null;
      data.set(key, { value, expiresAt: now() + ex * 1000 });
      return 'OK';
    },
    async get(key) {
      commands.push(['get', key]);
      await sleep(2);
      return live(key)?.value ?? null;
    },
    async eval(script, keys, args) {
      commands.push(['eval', script, keys, args]);
      await sleep(2);
      const run = scripts.get(script);
      if (!run) throw new Error('ERR unknown script');
      return run(keys, args);
    },
  };
}

/** Handlers that take a while (so deliveries overlap) and fail while `fail.next` > 0. */
function slowHandlers(fail = { next: 0 }) {
  /** @type {string[]} */
  const calls = [];
  const run = async (_event, context) => {
    calls.push(context.webhookId);
    await sleep(50);
    if (fail.next > 0) {
      fail.next -= 1;
      throw new Error('database briefly down');
    }
  };
  return { calls, fail, handlers: { status: run, qr: run, message: run } };
}

for (const [name, makeStore] of [
  ['in-memory store', (now = Date.now) => ({ store: createMemoryStore({ now }), redis: null })],
  ['Redis / KV store (SET NX EX, EVAL)', (now = Date.now) => { const redis = fakeRedis(now); return { store: createRedisStore(redis), redis }; }],
]) {
  describe(`concurrent copies of one webhook-id: ${name}`, () => {
    it('two concurrent deliveries → handled once; the other answers 409 (relay retries) and then duplicate', async () => {
      const { store, redis } = makeStore();
      const h = slowHandlers();
      const POST = createHandler({ secret: SECRET, store, handlers: h.handlers, logger: captureLogger().logger });
      const d = delivery(messageBody);
      const answers = await Promise.all([POST(d.request()), POST(d.request())]);
      assert.deepEqual(answers.map((r) => r.status).sort(), [200, 409]);
      assert.deepEqual(h.calls, [d.id], 'the handler ran once');
      const conflict = answers.find((r) => r.status === 409);
      assert.equal((await conflict?.json()).error, 'in_progress');
      // The relay's retry of the 409 copy finds the id done.
      const retry = await POST(d.request());
      assert.equal(retry.status, 200);
      assert.equal((await retry.json()).status, 'duplicate');
      assert.deepEqual(h.calls, [d.id]);
      if (redis) {
        // The claim is one atomic set-if-absent of a fresh token with the lease; success turns
        // that token into "done" for 48 h (a compare-and-set script).
        const key = `webhook:chat-whatsapp:${d.id}`;
        const [op, claimedKey, token, options] = redis.commands[0];
        assert.deepEqual([op, claimedKey, options], ['set', key, { ex: 60, nx: true }]);
        assert.match(token, /^claim:[0-9a-f-]{36}$/);
        assert.ok(redis.commands.some((c) => c[0] === 'eval' && c[1] === REDIS_COMPLETE_SCRIPT && c[2][0] === key && c[3].join() === [token, 2 * 24 * 3600, 'done'].join()));
        assert.equal(redis.data.get(key)?.value, 'done');
      }
    });

    it('ten concurrent copies → the handler runs once', async () => {
      const { store } = makeStore();
      const h = slowHandlers();
      const POST = createHandler({ secret: SECRET, store, handlers: h.handlers, logger: captureLogger().logger });
      const d = delivery(statusBody);
      const answers = await Promise.all(Array.from({ length: 10 }, () => POST(d.request())));
      assert.equal(h.calls.length, 1);
      assert.equal(answers.filter((r) => r.status === 200).length, 1);
      assert.equal(answers.filter((r) => r.status === 409).length, 9);
    });

    it('a failing handler releases the claim: the relay\'s retry is handled', async () => {
      const { store, redis } = makeStore();
      const h = slowHandlers({ next: 1 });
      const POST = createHandler({ secret: SECRET, store, handlers: h.handlers, logger: captureLogger().logger });
      const d = delivery(messageBody);
      const [first, concurrent] = await Promise.all([POST(d.request()), POST(d.request())]);
      assert.equal(first.status, 500, 'the handler failed');
      assert.equal(concurrent.status, 409, 'the concurrent copy did not run, and was not acknowledged either');
      if (redis) assert.equal(redis.data.size, 0, 'claim deleted');
      const retry = await POST(d.request());
      assert.equal(retry.status, 200);
      assert.equal((await retry.json()).status, 'ok');
      assert.deepEqual(h.calls, [d.id, d.id], 'handled again after the failure');
      assert.equal((await (await POST(d.request())).json()).status, 'duplicate');
    });

    it('a claim whose server died mid-handler expires with its lease', async () => {
      let now = 1_000_000;
      const { store } = makeStore(() => now);
      assert.equal((await store.claim('evt_crashed', 60)).status, 'claimed');
      assert.equal((await store.claim('evt_crashed', 60)).status, 'in_progress');
      now += 59_000;
      assert.equal((await store.claim('evt_crashed', 60)).status, 'in_progress');
      now += 2_000;
      assert.equal((await store.claim('evt_crashed', 60)).status, 'claimed');
    });

    it('a copy whose lease ended cannot release the claim a later copy took; its late success still counts', async () => {
      let now = 1_000_000;
      const { store } = makeStore(() => now);
      const a = await store.claim('evt', 60);
      assert.equal(a.status, 'claimed');
      now += 61_000; // A's handler hangs past its lease
      const b = await store.claim('evt', 60);
      assert.equal(b.status, 'claimed');
      assert.notEqual(b.token, a.token);
      await store.release('evt', a.token); // A fails late
      assert.equal((await store.claim('evt', 60)).status, 'in_progress', 'B\'s claim survives A\'s release');
      await store.complete('evt', 3600, a.token); // then A succeeds late: the event was handled
      assert.equal((await store.claim('evt', 60)).status, 'done', 'A\'s success counts even though B holds the id');
      await store.release('evt', b.token); // B failing afterwards does not undo it
      assert.equal((await store.claim('evt', 60)).status, 'done');
      await store.complete('evt', 3600, b.token);
      assert.equal((await store.claim('evt', 60)).status, 'done');
      await store.release('evt', b.token); // a done id is never released
      await store.release('evt', a.token);
      assert.equal((await store.claim('evt', 60)).status, 'done');
      now += 3_601_000;
      assert.equal((await store.claim('evt', 60)).status, 'claimed', 'done ids expire with their TTL');
    });

    it('a late success with nobody holding the id any more records it as done', async () => {
      let now = 1_000_000;
      const { store } = makeStore(() => now);
      const a = await store.claim('evt', 60);
      now += 61_000;
      await store.complete('evt', 3600, a.token);
      assert.equal((await store.claim('evt', 60)).status, 'done');
    });
  });
}

describe('route.ts POST (env defaults)', () => {
  it('reads WEBHOOK_SECRET from the environment and answers 200, then duplicate', async () => {
    const saved = process.env.WEBHOOK_SECRET;
    const savedInfo = console.info;
    process.env.WEBHOOK_SECRET = SECRET;
    const printed = [];
    console.info = (...args) => void printed.push(args.map((a) => JSON.stringify(a)).join(' '));
    try {
      const { POST } = await import('../chatbot-atimo/app/api/webhook/chat-whatsapp/route.ts');
      const d = delivery(messageBody);
      const res = await POST(d.request());
      assert.equal(res.status, 200);
      assert.equal((await res.json()).status, 'ok');
      const again = await POST(d.request());
      assert.equal((await again.json()).status, 'duplicate');
      assert.equal((await POST(delivery(qrBody).request())).status, 200);
      // A status with clientInfo (its wid is the account's phone number), correctly signed.
      const status = await POST(delivery(statusBody).request());
      assert.equal(status.status, 200);
      assert.equal((await status.json()).handled, true);
      assert.equal((await POST(delivery(statusBody, { secrets: [newSecret()] }).request())).status, 401);
      // The sample handlers log types and ids, never the text, numbers or the QR code.
      const text = printed.join('\n');
      assert.match(text, /message/);
      assert.match(text, /"\[webhook\] status" .*"clientInfo":"present"/);
      assert.doesNotMatch(text, /"Oi"|5511999990000|Atimo|data:image/);
    } finally {
      console.info = savedInfo;
      if (saved === undefined) delete process.env.WEBHOOK_SECRET;
      else process.env.WEBHOOK_SECRET = saved;
    }
  });
});

describe('in-memory idempotency store', () => {
  it('claims once, forgets done ids after their TTL', () => {
    let now = 1_000_000;
    const store = createMemoryStore({ now: () => now });
    const claim = store.claim('a', 10);
    assert.equal(claim.status, 'claimed');
    assert.deepEqual(store.claim('a', 10), { status: 'in_progress' });
    store.complete('a', 60, claim.token);
    assert.deepEqual(store.claim('a', 10), { status: 'done' });
    store.release('a', claim.token); // a done id is not released by a late failure
    now += 59_000;
    assert.deepEqual(store.claim('a', 10), { status: 'done' });
    now += 2_000;
    assert.equal(store.claim('a', 10).status, 'claimed');
  });

  it('release forgets a claim in progress, with its token only', () => {
    const store = createMemoryStore();
    const claim = store.claim('a', 60);
    store.release('a', 'claim:someone-else');
    assert.equal(store.claim('a', 60).status, 'in_progress');
    store.release('a', claim.token);
    assert.equal(store.claim('a', 60).status, 'claimed');
  });

  it('keeps at most maxEntries, forgetting the oldest', () => {
    const store = createMemoryStore({ maxEntries: 3 });
    for (const id of ['a', 'b', 'c', 'd', 'e']) {
      store.complete(id, 60, store.claim(id, 60).token);
    }
    assert.deepEqual(['c', 'd', 'e', 'a', 'b'].map((id) => store.claim(id, 60).status), ['done', 'done', 'done', 'claimed', 'claimed']);
  });
});

describe('parseEnvelope', () => {
  it('types the three events and reports the first offending path', () => {
    assert.equal(parseEnvelope(statusBody).kind, 'event');
    assert.equal(parseEnvelope(qrBody).kind, 'event');
    assert.equal(parseEnvelope(messageBody).kind, 'event');
    assert.deepEqual(parseEnvelope([]), { kind: 'invalid', path: 'body', expected: 'a JSON object (the event envelope)' });
    assert.deepEqual(parseEnvelope({ ...qrBody, data: { qr: 1, available: true } }), { kind: 'invalid', path: 'data.qr', expected: 'a string' });
    const badDirection = structuredClone(messageBody);
    badDirection.data.message.direction = 'sideways';
    assert.equal(parseEnvelope(badDirection).kind === 'invalid' && parseEnvelope(badDirection).path, 'data.message.direction');
    assert.deepEqual(parseEnvelope({ ...statusBody, data: { connected: 'yes' } }), { kind: 'invalid', path: 'data.connected', expected: 'true or false' });
    assert.deepEqual(parseEnvelope({ event: 'typing', data: {} }), { kind: 'unknown', eventName: 'typing' });
  });
});
