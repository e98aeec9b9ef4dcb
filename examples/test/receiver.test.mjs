// The chatbot-atimo route (no relay needed): deliveries signed exactly as the Rust dispatcher
// signs them (Standard Webhooks, the webhook secret, webhook-id = event id), posted as real
// web-standard Request objects.

import assert from 'node:assert/strict';
import { describe, it, beforeEach } from 'node:test';
import { Webhook } from 'standardwebhooks';
import { createHandler, createMemoryStore, createRedisStore, parseEnvelope } from '../chatbot-atimo/app/api/webhook/chat-whatsapp/handler.ts';
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

  it('no handler for a type → 200 handled:false', async () => {
    const handler = createHandler({ secret: SECRET, handlers: {}, logger: log.logger });
    const res = await handler(delivery(qrBody).request());
    assert.equal(res.status, 200);
    assert.equal((await res.json()).handled, false);
  });

  it('a pluggable store (async, like Redis): claim with the lease, complete with the TTL', async () => {
    const ops = [];
    const map = new Map();
    const store = {
      async claim(id, lease) { ops.push(['claim', id, lease]); if (map.has(id)) return map.get(id); map.set(id, 'in_progress'); return 'claimed'; },
      async complete(id, ttl) { ops.push(['complete', id, ttl]); map.set(id, 'done'); },
      async release(id) { ops.push(['release', id]); map.delete(id); },
    };
    const handler = createHandler({ secret: SECRET, store, handlers: rec.handlers, dedupeTtlSeconds: 3600, claimLeaseSeconds: 30, logger: log.logger });
    const d = delivery(statusBody);
    await handler(d.request());
    await handler(d.request());
    assert.deepEqual(ops, [['claim', d.id, 30], ['complete', d.id, 3600], ['claim', d.id, 30]]);
    assert.equal(rec.calls.length, 1);
    // Refusals after the claim (bad JSON, contract) release it.
    const bad = delivery('{"event":');
    assert.equal((await handler(bad.request())).status, 400);
    assert.deepEqual(ops.slice(-2), [['claim', bad.id, 30], ['release', bad.id]]);
  });

  it('a failing store does not lose the event (processed anyway, warning logged)', async () => {
    const down = async () => { throw new Error('redis down'); };
    const store = { claim: down, complete: down, release: down };
    const handler = createHandler({ secret: SECRET, store, handlers: rec.handlers, logger: log.logger });
    assert.equal((await handler(delivery(statusBody).request())).status, 200);
    assert.equal(rec.calls.length, 1);
    assert.match(log.text(), /idempotency store unavailable/);
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
 * null, GET, DEL, expiry), answering each command after a network-like pause so concurrent
 * requests interleave between commands as they would against a real server.
 */
function fakeRedis() {
  /** @type {Map<string, {value: string, expiresAt: number}>} */
  const data = new Map();
  /** @type {unknown[][]} */
  const commands = [];
  const live = (key) => {
    const entry = data.get(key);
    if (entry && entry.expiresAt <= Date.now()) data.delete(key);
    return data.get(key);
  };
  return {
    data,
    commands,
    async set(key, value, { ex, nx } = {}) {
      commands.push(['set', key, value, { ex, nx }]);
      await sleep(2);
      if (nx && live(key)) return null;
      data.set(key, { value, expiresAt: Date.now() + ex * 1000 });
      return 'OK';
    },
    async get(key) {
      commands.push(['get', key]);
      await sleep(2);
      return live(key)?.value ?? null;
    },
    async del(key) {
      commands.push(['del', key]);
      await sleep(2);
      return data.delete(key) ? 1 : 0;
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
  ['in-memory store', () => ({ store: createMemoryStore(), redis: null })],
  ['Redis / KV store (SET NX EX)', () => { const redis = fakeRedis(); return { store: createRedisStore(redis), redis }; }],
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
        // The claim is one atomic set-if-absent with the lease; success stores "done" for 48 h.
        assert.deepEqual(redis.commands[0], ['set', `webhook:chat-whatsapp:${d.id}`, 'processing', { ex: 60, nx: true }]);
        assert.ok(redis.commands.some((c) => c[0] === 'set' && c[2] === 'done' && c[3].ex === 2 * 24 * 3600 && !c[3].nx));
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
      const { store } = makeStore();
      assert.equal(await store.claim('evt_crashed', 1), 'claimed');
      assert.equal(await store.claim('evt_crashed', 1), 'in_progress');
      await sleep(1100);
      assert.equal(await store.claim('evt_crashed', 1), 'claimed');
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
      assert.equal((await POST(delivery(statusBody, { secrets: [newSecret()] }).request())).status, 401);
      // The sample handlers log types and ids, never the text, numbers or the QR code.
      const text = printed.join('\n');
      assert.match(text, /message/);
      assert.doesNotMatch(text, /"Oi"|5511999990000|data:image/);
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
    assert.equal(store.claim('a', 10), 'claimed');
    assert.equal(store.claim('a', 10), 'in_progress');
    store.complete('a', 60);
    assert.equal(store.claim('a', 10), 'done');
    store.release('a'); // a done id is not released by a late failure elsewhere
    now += 59_000;
    assert.equal(store.claim('a', 10), 'done');
    now += 2_000;
    assert.equal(store.claim('a', 10), 'claimed');
  });

  it('release forgets a claim in progress', () => {
    const store = createMemoryStore();
    assert.equal(store.claim('a', 60), 'claimed');
    store.release('a');
    assert.equal(store.claim('a', 60), 'claimed');
  });

  it('keeps at most maxEntries, forgetting the oldest', () => {
    const store = createMemoryStore({ maxEntries: 3 });
    for (const id of ['a', 'b', 'c', 'd', 'e']) {
      store.claim(id, 60);
      store.complete(id, 60);
    }
    assert.deepEqual(['c', 'd', 'e', 'a', 'b'].map((id) => store.claim(id, 60)), ['done', 'done', 'done', 'claimed', 'claimed']);
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
