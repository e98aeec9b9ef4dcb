// The sender and the route against the REAL relay: `relay local` (the Rust binary, from
// RELAY_BIN or <repo>/target/debug/relay) between them. A missing binary fails these tests
// with the command that builds it; they are never skipped.
//
//   sender (relay-sender.mjs) ──signed, ingest secret──► relay local ──signed, webhook secret──►
//   a node:http receiver in the test, or the chatbot-atimo route served over node:http

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Webhook } from 'standardwebhooks';
import { createSender } from '../chat-whatsapp/relay-sender.mjs';
import { createHandler } from '../chatbot-atimo/app/api/webhook/chat-whatsapp/handler.ts';
import {
  captureLogger,
  freePort,
  newSecret,
  requireRelayBin,
  startRelay,
  startRouteServer,
  startServer,
  waitFor,
} from './helpers.mjs';
import { EventEmitter } from 'node:events';

const INGEST = newSecret();
const WEBHOOK = newSecret();
const WAIT = { timeoutMs: 20_000 };

/** Everything a suite started, stopped in reverse order (also when a test failed). */
function resources() {
  /** @type {Array<() => unknown>} */
  const stops = [];
  return {
    add(stop) {
      stops.push(stop);
    },
    async closeAll() {
      for (const stop of stops.splice(0).reverse()) {
        try {
          await stop();
        } catch {
          // keep stopping the rest
        }
      }
    },
  };
}

/** A webhook receiver: verifies each delivery with the WEBHOOK secret, records it. */
async function startReceiver() {
  const server = await startServer((record) => {
    try {
      new Webhook(WEBHOOK).verify(record.body, /** @type {any} */ (record.headers));
      record.verified = true;
      return { status: 204 };
    } catch {
      record.verified = false;
      return { status: 401 };
    }
  });
  return server;
}

/** A sender that records the exact bodies it POSTs to the relay. */
function recordingSender(url, options = {}) {
  /** @type {string[]} */
  const bodies = [];
  const log = captureLogger();
  const sender = createSender({
    url,
    secret: INGEST,
    retryBaseDelayMs: 50,
    retryMaxDelayMs: 250,
    logger: log.logger,
    fetch: (input, init) => {
      if (typeof init?.body === 'string') bodies.push(init.body);
      return fetch(input, init);
    },
    ...options,
  });
  return { sender, bodies, log };
}

describe('sender → relay local → receiver', { timeout: 120_000 }, () => {
  const res = resources();
  let receiver;
  let relay;

  before(async () => {
    requireRelayBin();
    receiver = await startReceiver();
    res.add(receiver.close);
    relay = await startRelay({ port: await freePort(), webhookUrl: `${receiver.url}/api/webhook/chat-whatsapp`, webhookSecret: WEBHOOK, ingestSecret: INGEST });
    res.add(relay.stop);
  });
  after(() => res.closeAll());

  it('the relay is up (GET /health)', async () => {
    const health = await fetch(`${relay.url}/health`);
    assert.equal(health.status, 200);
    assert.equal((await health.json()).status, 'ok');
  });

  it('each event type arrives, verified with the webhook secret, byte for byte', async () => {
    const { sender, bodies, log } = recordingSender(relay.eventsUrl);
    res.add(() => sender.close());
    const results = await Promise.all([
      sender.send('status', { connected: true, clientInfo: { wid: '5511999990000@c.us', pushname: 'Atimo', platform: 'android' } }),
      sender.send('status', { connected: false, authenticated: true }),
      sender.send('status', { connected: false, error: 'auth failed' }),
      sender.send('status', { connected: false, reason: 'NAVIGATION' }),
      sender.send('qr', { qr: 'data:image/png;base64,iVBORw0KGgo=', available: true }),
      sender.send('message', {
        message: {
          id: 'false_5511999990000@c.us_3EB0C767D097B7C7C030', from: '5511999990000@c.us', to: 'bot', content: 'Oi',
          type: 'text', direction: 'incoming', timestamp: '2025-12-21T18:02:52.836Z', status: 'received',
        },
      }, { id: 'message-e2e-1' }),
    ]);
    assert.deepEqual(results.map((r) => [r.ok, r.status]), Array(6).fill([true, 202]), log.text());
    await waitFor(() => receiver.requests.length >= 6, { ...WAIT, message: '6 deliveries' });

    assert.ok(receiver.requests.every((r) => r.verified), 'every delivery verifies with the webhook secret');
    assert.deepEqual(new Set(receiver.requests.map((r) => r.body)), new Set(bodies), 'bodies forwarded byte for byte');
    for (const delivery of receiver.requests) {
      assert.equal(delivery.url, '/api/webhook/chat-whatsapp');
      assert.equal(delivery.headers['webhook-id'], JSON.parse(delivery.body).id, 'webhook-id is the envelope id');
    }
    // Status events share one FIFO group: they arrive in the order they were sent.
    const statuses = receiver.requests.filter((r) => JSON.parse(r.body).event !== 'message' && JSON.parse(r.body).event !== 'qr');
    assert.deepEqual(statuses.map((r) => r.body), bodies.slice(0, 4));
    receiver.requests.length = 0;
  });

  it('wireClient: a whatsapp-web.js client\'s events travel through the relay', async () => {
    const { sender, bodies } = recordingSender(relay.eventsUrl);
    res.add(() => sender.close());
    const client = new EventEmitter();
    client.info = { wid: { _serialized: '5511999990000@c.us' }, pushname: 'Atimo', platform: 'android' };
    sender.wire(client);
    client.emit('qr', '2@AbCdEf');
    client.emit('authenticated');
    client.emit('ready');
    const msg = { id: { _serialized: 'false_5511888880000@c.us_ABC' }, from: '5511888880000@c.us', to: '5511999990000@c.us', body: 'Oi', type: 'chat', fromMe: false, timestamp: 1766340172 };
    client.emit('message', msg);
    client.emit('message_create', msg);
    // Markers, emitted last into the same two FIFO groups (the session's status group, which qr
    // shares, and the chat's group): the sender sends in emit order, one at a time, and the
    // relay delivers each group in order, so once both arrived, anything the events above
    // would have caused has arrived too.
    client.emit('disconnected', 'MARKER');
    client.emit('message', { ...msg, id: { _serialized: 'false_5511888880000@c.us_MARKER' }, body: 'marker' });
    const isMarker = (r) => r.body.includes('MARKER');
    await waitFor(() => receiver.requests.filter(isMarker).length === 2, { ...WAIT, message: 'the two markers' });
    assert.equal(receiver.requests.length, 6, 'the incoming message is sent once');
    assert.deepEqual(receiver.requests.map((r) => r.body).sort(), [...bodies].sort());
    const events = receiver.requests.filter((r) => !isMarker(r)).map((r) => JSON.parse(r.body));
    assert.deepEqual(events.filter((e) => e.event !== 'message').map((e) => e.event), ['qr', 'status', 'status']);
    assert.match(events.find((e) => e.event === 'qr').data.qr, /^data:image\/png;base64,/);
    receiver.requests.length = 0;
  });
});

describe('relay down, then up: the backlog drains in order', { timeout: 120_000 }, () => {
  const res = resources();
  after(() => res.closeAll());

  it('not started yet, then killed and restarted', async () => {
    requireRelayBin();
    const receiver = await startReceiver();
    res.add(receiver.close);
    const port = await freePort();
    const options = { port, webhookUrl: `${receiver.url}/hook`, webhookSecret: WEBHOOK, ingestSecret: INGEST };
    const { sender, log } = recordingSender(`http://127.0.0.1:${port}/events`);
    res.add(() => sender.close());
    const seqs = () => receiver.requests.map((r) => JSON.parse(r.body).data.seq);

    // 1. The relay is not running: events wait in the sender's backlog.
    const first = [0, 1, 2, 3, 4].map((seq) => sender.send('status', { connected: false, reason: `r${seq}`, seq }));
    await waitFor(() => log.lines.some((l) => /network error/.test(l.text)), { ...WAIT, message: 'a failed attempt' });
    assert.equal(sender.pending, 5);
    let relay = await startRelay(options);
    res.add(() => relay.stop());
    assert.ok((await Promise.all(first)).every((r) => r.ok));
    await waitFor(() => receiver.requests.length >= 5, { ...WAIT, message: '5 deliveries' });
    assert.deepEqual(seqs(), [0, 1, 2, 3, 4]);

    // 2. The relay dies (a crash, no graceful stop): events wait again; a new relay drains them.
    await relay.kill();
    const second = [5, 6, 7].map((seq) => sender.send('status', { connected: false, reason: `r${seq}`, seq }));
    await waitFor(() => log.lines.filter((l) => /network error/.test(l.text)).length >= 2, { ...WAIT, message: 'failed attempts' });
    relay = await startRelay(options);
    assert.ok((await Promise.all(second)).every((r) => r.ok));
    await waitFor(() => receiver.requests.length >= 8, { ...WAIT, message: '8 deliveries' });
    assert.deepEqual(seqs(), [0, 1, 2, 3, 4, 5, 6, 7]);
    assert.ok(receiver.requests.every((r) => r.verified));
  });

  it('the backlog bound holds while the relay is down: oldest dropped, warning logged', async () => {
    requireRelayBin();
    const receiver = await startReceiver();
    res.add(receiver.close);
    const port = await freePort();
    const { sender, log } = recordingSender(`http://127.0.0.1:${port}/events`, { maxBacklog: 4 });
    res.add(() => sender.close());
    const results = Array.from({ length: 10 }, (_, seq) => sender.send('status', { connected: false, seq }));
    assert.ok(sender.pending <= 4);
    const relay = await startRelay({ port, webhookUrl: `${receiver.url}/hook`, webhookSecret: WEBHOOK, ingestSecret: INGEST });
    res.add(relay.stop);
    const outcomes = await Promise.all(results);
    const dropped = outcomes.filter((o) => o.reason === 'backlog_full');
    assert.equal(dropped.length, 6);
    assert.equal(log.lines.filter((l) => l.level === 'warn' && /backlog full \(4 events\): dropped the oldest/.test(l.text)).length, 6);
    // A marker in the same status group, sent after the kept events were accepted: the relay
    // delivers the group in order, so once it arrived, every earlier event of the group has.
    assert.equal((await sender.send('status', { connected: false, seq: 'marker' })).ok, true);
    await waitFor(() => receiver.requests.some((r) => JSON.parse(r.body).data.seq === 'marker'), { ...WAIT, message: 'the marker' });
    assert.equal(JSON.parse(receiver.requests.at(-1).body).data.seq, 'marker', 'the marker came last');
    const seqs = receiver.requests.slice(0, -1).map((r) => JSON.parse(r.body).data.seq);
    assert.equal(seqs.length, 4);
    assert.deepEqual([...seqs].sort((a, b) => a - b), seqs, 'in order');
    assert.equal(seqs.at(-1), 9, 'the newest event is kept');
  });
});

describe('refusals from the relay are not retried', { timeout: 120_000 }, () => {
  const res = resources();
  let relay;
  let proxy;
  let receiver;

  before(async () => {
    requireRelayBin();
    receiver = await startReceiver();
    res.add(receiver.close);
    relay = await startRelay({ port: await freePort(), webhookUrl: `${receiver.url}/hook`, webhookSecret: WEBHOOK, ingestSecret: INGEST });
    res.add(relay.stop);
    // A counting proxy in front of the relay: every request the sender makes is seen here.
    proxy = await startServer(async (record) => {
      const response = await fetch(`${relay.url}${record.url}`, {
        method: record.method,
        headers: Object.fromEntries(Object.entries(record.headers).filter(([k]) => !['host', 'connection', 'content-length'].includes(k))),
        body: record.body,
      });
      const body = await response.text();
      record.status = response.status;
      return { status: response.status, headers: { 'content-type': response.headers.get('content-type') ?? 'text/plain' }, body };
    });
    res.add(proxy.close);
  });
  after(() => res.closeAll());

  it('422 (a message with missing fields): one request, warning with the relay\'s path, next event still goes', async () => {
    const { sender, log } = recordingSender(`${proxy.url}/events`);
    res.add(() => sender.close());
    const refused = sender.send('message', { message: { id: 'x', from: '5511999990000@c.us', direction: 'incoming' } });
    const next = sender.send('status', { connected: true });
    const result = await refused;
    assert.equal(result.ok, false);
    assert.equal(result.status, 422);
    assert.equal(result.reason, 'rejected');
    // `next` is the marker: the sender delivers one event at a time, in order, and makes every
    // attempt of an event before it starts the next, so once `next` was accepted the refused
    // event has had all the attempts it will get.
    assert.equal((await next).ok, true);
    const attempts = proxy.requests.filter((r) => r.headers['webhook-id'] === result.id);
    assert.equal(attempts.length, 1, 'not retried');
    const warning = log.lines.find((l) => l.level === 'warn' && l.text.includes(result.id));
    assert.ok(warning, log.text());
    assert.match(warning.text, /HTTP 422: schema_violation: .*\(at data\.message\.\w+\); dropped \(not retried\)/);
    await waitFor(() => receiver.requests.length >= 1, { ...WAIT, message: 'the next event delivered' });
    assert.equal(JSON.parse(receiver.requests[0].body).event, 'status');
  });

  it('401 (wrong ingest secret): retried for unauthorizedRetryMs with an error each time, then dropped', async () => {
    const { sender, log } = recordingSender(`${proxy.url}/events`, { secret: newSecret(), unauthorizedRetryMs: 400 });
    res.add(() => sender.close());
    const result = await sender.send('status', { connected: true });
    assert.equal(result.status, 401);
    assert.equal(result.reason, 'rejected');
    const attempts = proxy.requests.filter((r) => r.headers['webhook-id'] === result.id);
    assert.ok(attempts.length >= 2, `retried (${attempts.length} attempts)`);
    assert.ok(attempts.every((r) => r.status === 401));
    const errors = log.lines.filter((l) => l.level === 'error' && l.text.includes(result.id));
    assert.equal(errors.length, attempts.length, log.text());
    assert.match(errors[0].text, /HTTP 401: unauthorized: .*retrying for up to/);
    assert.match(errors.at(-1)?.text ?? '', /HTTP 401: unauthorized: .*; dropped$/);
    // A marker sent after the drop: the sender works in order, one event at a time, so once the
    // marker is settled the dropped event can have no attempt left. Past the 401 window, the
    // marker itself gets one attempt.
    const marker = await sender.send('status', { connected: false });
    assert.equal(marker.status, 401);
    assert.equal(proxy.requests.filter((r) => r.headers['webhook-id'] === marker.id).length, 1, 'one attempt past the 401 window');
    assert.equal(proxy.requests.filter((r) => r.headers['webhook-id'] === result.id).length, attempts.length, 'not retried after the drop');
  });
});

describe('end to end: sender → relay local → chatbot-atimo route', { timeout: 120_000 }, () => {
  const res = resources();
  after(() => res.closeAll());

  it('the route gets typed events once; a failing handler is retried by the relay; replays are dropped', async () => {
    requireRelayBin();
    /** @type {any[]} */
    const calls = [];
    let failNextMessage = true;
    /** @type {{headers: Headers, body: string}[]} */
    const captured = [];
    const POST = createHandler({
      secret: WEBHOOK,
      logger: captureLogger().logger,
      handlers: {
        status: (event, ctx) => void calls.push({ event, id: ctx.webhookId }),
        qr: (event, ctx) => void calls.push({ event, id: ctx.webhookId }),
        message: (event, ctx) => {
          calls.push({ event, id: ctx.webhookId });
          if (failNextMessage) {
            failNextMessage = false;
            throw new Error('database briefly down');
          }
        },
      },
    });
    const route = await startRouteServer(async (request) => {
      captured.push({ headers: new Headers(request.headers), body: await request.clone().text() });
      return POST(request);
    });
    res.add(route.close);
    const relay = await startRelay({ port: await freePort(), webhookUrl: `${route.url}/api/webhook/chat-whatsapp`, webhookSecret: WEBHOOK, ingestSecret: INGEST });
    res.add(relay.stop);

    const { sender } = recordingSender(relay.eventsUrl);
    res.add(() => sender.close());
    const client = new EventEmitter();
    client.info = { wid: { _serialized: '5511999990000@c.us' }, pushname: 'Atimo', platform: 'android' };
    sender.wire(client);
    client.emit('ready');
    client.emit('message', { id: { _serialized: 'false_5511888880000@c.us_E2E' }, from: '5511888880000@c.us', to: '5511999990000@c.us', body: 'Oi', type: 'chat', fromMe: false, timestamp: 1766340172 });

    // The message handler fails once (500): the relay retries it after its 1 s schedule step.
    await waitFor(() => calls.filter((c) => c.event.event === 'message').length >= 2, { ...WAIT, message: 'the retried message' });
    await waitFor(() => calls.some((c) => c.event.event === 'status'), { ...WAIT, message: 'the status' });
    const messages = calls.filter((c) => c.event.event === 'message');
    assert.equal(messages[0].id, messages[1].id, 'the retry carries the same webhook-id');
    assert.equal(messages[1].event.data.message.content, 'Oi');
    assert.equal(messages[1].event.data.message.direction, 'incoming');
    const status = calls.find((c) => c.event.event === 'status');
    assert.deepEqual(status.event.data.clientInfo, { wid: '5511999990000@c.us', pushname: 'Atimo', platform: 'android' });

    // Replaying a captured delivery (same id, same signature) does not run the handler again.
    const count = calls.length;
    const last = captured.at(-1);
    const replay = await fetch(`${route.url}/api/webhook/chat-whatsapp`, { method: 'POST', headers: last.headers, body: last.body });
    assert.equal(replay.status, 200);
    assert.equal((await replay.json()).status, 'duplicate');
    assert.equal(calls.length, count);
  });
});
