// The chat-whatsapp sender against a fake relay (a node:http server answering what each test
// needs): envelope and signature, U+FFFE/U+FFFF escaping, retry policy, Retry-After as a floor,
// timeouts, bounded answer bodies, only 202 counts, order, backlog bound, never throwing, never
// logging secrets, data or the relay's free text, and the whatsapp-web.js wiring.
// The same behaviour against the real relay is in relay.test.mjs.

import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import http from 'node:http';
import { after, describe, it } from 'node:test';
import { Webhook } from 'standardwebhooks';
import {
  createSender,
  messageEventId,
  parseRetryAfter,
  sendWebhook,
  toChatMessage,
  wireClient,
} from '../chat-whatsapp/relay-sender.mjs';
import { captureLogger, freePort, newSecret, sleep, startServer, waitFor } from './helpers.mjs';

const INGEST = newSecret();
const accepted = (record) => ({ status: 202, body: JSON.stringify({ id: record.headers['webhook-id'], status: 'queued' }) });

/** @type {Array<() => unknown>} */
const cleanups = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function fakeRelay(respond = accepted) {
  const server = await startServer(respond);
  cleanups.push(server.close);
  return { ...server, eventsUrl: `${server.url}/events` };
}

function sender(options) {
  const s = createSender({ secret: INGEST, retryBaseDelayMs: 20, retryMaxDelayMs: 100, logger: captureLogger().logger, ...options });
  cleanups.push(() => s.close());
  return s;
}

const verify = (record, secret = INGEST) => new Webhook(secret).verify(record.body, /** @type {any} */ (record.headers));

describe('envelope and signature', () => {
  it('POSTs the envelope, signed with the ingest secret, webhook-id = envelope id', async () => {
    const relay = await fakeRelay();
    const s = sender({ url: relay.eventsUrl, session: 'shop-1' });
    const before = Date.now();
    const result = await s.send('status', { connected: true });
    assert.equal(result.ok, true);
    assert.equal(result.status, 202);
    assert.equal(relay.requests.length, 1);
    const [req] = relay.requests;
    assert.equal(req.method, 'POST');
    assert.equal(req.url, '/events');
    assert.equal(req.headers['content-type'], 'application/json');
    const envelope = JSON.parse(req.body);
    assert.deepEqual(Object.keys(envelope), ['event', 'data', 'timestamp', 'id', 'session']);
    assert.equal(envelope.event, 'status');
    assert.deepEqual(envelope.data, { connected: true });
    assert.equal(envelope.session, 'shop-1');
    assert.match(envelope.id, /^status-[0-9a-f-]{36}$/);
    assert.equal(result.id, envelope.id);
    assert.equal(req.headers['webhook-id'], envelope.id);
    assert.ok(Date.parse(envelope.timestamp) >= before - 1);
    assert.deepEqual(verify(req), envelope); // throws when the signature is wrong
  });

  it('raw U+FFFE / U+FFFF go out as \\uFFFE / \\uFFFF escapes: accepted, the same string arrives, signed as sent', async () => {
    // Like ingest: a body with a raw U+FFFE or U+FFFF is a final 422 ("send it escaped").
    const relay = await fakeRelay((record) => (/[\uFFFE\uFFFF]/.test(record.body)
      ? { status: 422, body: JSON.stringify({ error: 'schema_violation', message: 'body: the character U+FFFF cannot be stored by SQS', path: 'body', expected: 'the character U+FFFF cannot be stored by SQS; send it escaped as \\uFFFF' }) }
      : accepted(record)));
    const s = sender({ url: relay.eventsUrl });
    const client = new EventEmitter();
    s.wire(client);
    const content = 'oi\uFFFF tudo\uFFFE bem? \uFFFF\uFFFF "quoted" \\ é 😀';
    client.emit('message', { id: { _serialized: 'false_5511888880000@c.us_FFFF' }, from: '5511888880000@c.us', to: 'bot', body: content, type: 'chat', fromMe: false, timestamp: 1766340172 });
    const other = await s.send('status', { connected: true, ['k\uFFFE']: 'v\uFFFF' });
    assert.equal(other.ok, true);
    assert.equal(other.status, 202);
    await waitFor(() => relay.requests.length >= 2, { message: 'the message event' });
    assert.equal(await s.flush(5000), true);
    assert.equal(relay.requests.length, 2, 'each event sent once: none refused');
    const message = relay.requests.find((r) => JSON.parse(r.body).event === 'message');
    const status = relay.requests.find((r) => JSON.parse(r.body).event === 'status');
    assert.ok(message && status);
    for (const req of relay.requests) {
      assert.doesNotMatch(req.body, /[\uFFFE\uFFFF]/, 'no raw U+FFFE / U+FFFF in the body');
      verify(req); // signed over the exact (escaped) body sent
    }
    assert.match(message.body, /oi\\uFFFF tudo\\uFFFE bem\? \\uFFFF\\uFFFF/);
    assert.equal(JSON.parse(message.body).data.message.content, content, 'the same string parses back');
    assert.deepEqual(verify(status).data, { connected: true, ['k\uFFFE']: 'v\uFFFF' });
  });

  it('session defaults to WHATSAPP_SESSION, else "default"', async () => {
    const relay = await fakeRelay();
    const saved = process.env.WHATSAPP_SESSION;
    try {
      delete process.env.WHATSAPP_SESSION;
      await sender({ url: relay.eventsUrl }).send('status', { connected: false });
      process.env.WHATSAPP_SESSION = 'atimo';
      await sender({ url: relay.eventsUrl }).send('status', { connected: false });
    } finally {
      if (saved === undefined) delete process.env.WHATSAPP_SESSION;
      else process.env.WHATSAPP_SESSION = saved;
    }
    assert.deepEqual(relay.requests.map((r) => JSON.parse(r.body).session), ['default', 'atimo']);
  });

  it('no secret: sent unsigned (as the seed did) with a warning at start', async () => {
    const relay = await fakeRelay(() => ({ status: 401, body: '{"error":"unauthorized","message":"missing webhook-signature"}' }));
    const saved = process.env.WEBHOOK_SECRET;
    delete process.env.WEBHOOK_SECRET;
    const log = captureLogger();
    try {
      const s = createSender({ url: relay.eventsUrl, logger: log.logger });
      cleanups.push(() => s.close());
      assert.equal((await s.send('status', { connected: true })).status, 401);
    } finally {
      if (saved !== undefined) process.env.WEBHOOK_SECRET = saved;
    }
    assert.equal(relay.requests[0].headers['webhook-signature'], undefined);
    assert.equal(relay.requests.length, 1, 'unsigned: a 401 is final (waiting cannot fix it)');
    assert.match(log.text(), /WEBHOOK_SECRET is not set/);
  });

  it('no WEBHOOK_URL → a no-op that resolves at once, fetch never called', async () => {
    const saved = process.env.WEBHOOK_URL;
    delete process.env.WEBHOOK_URL;
    let calls = 0;
    try {
      const s = createSender({ secret: INGEST, fetch: async () => { calls += 1; return new Response(null, { status: 202 }); } });
      assert.deepEqual(await s.send('status', { connected: true }), { ok: false, reason: 'not_configured' });
      assert.equal(s.enabled, false);
      const viaModule = await sendWebhook('status', { connected: true }, { fetch: async () => { calls += 1; return new Response(); } });
      assert.equal(viaModule.ok, false);
    } finally {
      if (saved !== undefined) process.env.WEBHOOK_URL = saved;
    }
    assert.equal(calls, 0);
  });
});

describe('retries', () => {
  it('retries 500, 408, 429 and 503 with the same id and body, then succeeds', async () => {
    const statuses = [500, 408, 429, 503];
    const relay = await fakeRelay((record, n) => (n <= statuses.length ? { status: statuses[n - 1] } : accepted(record)));
    const log = captureLogger();
    const result = await sender({ url: relay.eventsUrl, logger: log.logger }).send('qr', { qr: 'data:image/png;base64,AAAA', available: true });
    assert.equal(result.ok, true);
    assert.equal(relay.requests.length, 5);
    const ids = new Set(relay.requests.map((r) => r.headers['webhook-id']));
    const bodies = new Set(relay.requests.map((r) => r.body));
    assert.equal(ids.size, 1);
    assert.equal(bodies.size, 1);
    for (const r of relay.requests) verify(r); // each attempt signed
    assert.match(log.text(), /attempt 1 failed \(HTTP 500\)/);
  });

  it('honours Retry-After in seconds', async () => {
    const relay = await fakeRelay((record, n) => (n === 1 ? { status: 503, headers: { 'retry-after': '1' } } : accepted(record)));
    const result = await sender({ url: relay.eventsUrl, retryBaseDelayMs: 10 }).send('status', { connected: true });
    assert.equal(result.ok, true);
    const gap = relay.requests[1].at - relay.requests[0].at;
    assert.ok(gap >= 950, `waited ${gap} ms, expected about 1000`);
  });

  it('honours Retry-After as an HTTP date', async () => {
    const relay = await fakeRelay((record, n) =>
      n === 1 ? { status: 429, headers: { 'retry-after': new Date(Date.now() + 2000).toUTCString() } } : accepted(record));
    const result = await sender({ url: relay.eventsUrl, retryBaseDelayMs: 10 }).send('status', { connected: true });
    assert.equal(result.ok, true);
    const gap = relay.requests[1].at - relay.requests[0].at;
    // HTTP dates have 1 s resolution: anything from ~1 s on shows the header was used.
    assert.ok(gap >= 900, `waited ${gap} ms`);
  });

  it('Retry-After is a floor, never a shortcut: "0" and a past date still wait the backoff', async () => {
    const base = 40;
    const headers = [{ 'retry-after': '0' }, { 'retry-after': 'Thu, 01 Jan 1970 00:00:00 GMT' }, { 'retry-after': '0' }, { 'retry-after': '0' }];
    const relay = await fakeRelay((record, n) => (n <= headers.length ? { status: 503, headers: headers[n - 1] } : accepted(record)));
    const log = captureLogger();
    const result = await sender({ url: relay.eventsUrl, retryBaseDelayMs: base, retryMaxDelayMs: 1000, logger: log.logger }).send('status', { connected: true });
    assert.equal(result.ok, true);
    assert.equal(relay.requests.length, headers.length + 1);
    // The backoff for attempt n waits between half and all of base·2^(n-1): its floor is half.
    const floors = [20, 40, 80, 160];
    const delays = log.lines.map((l) => /retrying in (\d+) ms/.exec(l.text)?.[1]).filter(Boolean).map(Number);
    assert.equal(delays.length, floors.length, log.text());
    delays.forEach((delay, i) => assert.ok(delay >= floors[i], `retry ${i + 1} planned in ${delay} ms, floor ${floors[i]}`));
    // And the relay saw the waits (lower bounds only; timers never fire early by more than ~1 ms).
    const gaps = relay.requests.slice(1).map((r, i) => r.at - relay.requests[i].at);
    gaps.forEach((gap, i) => assert.ok(gap >= floors[i] - 2, `gap ${i + 1}: ${gap} ms, floor ${floors[i]}`));
  });

  it('a Retry-After above maxRetryAfterMs is cut to it', async () => {
    const relay = await fakeRelay((record, n) => (n === 1 ? { status: 429, headers: { 'retry-after': '3600' } } : accepted(record)));
    const log = captureLogger();
    const result = await sender({ url: relay.eventsUrl, retryBaseDelayMs: 10, maxRetryAfterMs: 150, logger: log.logger }).send('status', { connected: true });
    assert.equal(result.ok, true);
    assert.match(log.text(), /attempt 1 failed \(HTTP 429\); retrying in 150 ms/);
  });

  it('parses Retry-After forms: delay-seconds or an HTTP-date, nothing else', () => {
    const now = Date.parse('2025-12-21T18:00:00Z');
    assert.equal(parseRetryAfter('5', now), 5000);
    assert.equal(parseRetryAfter(' 0 ', now), 0);
    assert.equal(parseRetryAfter('Sun, 21 Dec 2025 18:00:30 GMT', now), 30_000);
    assert.equal(parseRetryAfter('Sun, 21 Dec 2025 17:00:00 GMT', now), 0);
    assert.equal(parseRetryAfter('Sunday, 21-Dec-25 18:00:30 GMT', now), 30_000, 'RFC 850');
    assert.equal(parseRetryAfter('Sun Dec 21 18:00:30 2025', now), 30_000, 'asctime');
    assert.equal(parseRetryAfter('Sun Dec  1 18:00:30 2025', now), 0, 'asctime, one-digit day');
    for (const bad of ['soon', '', '1.5', '-1', '+5', '5 s', '0x10', '2025-12-21T18:00:30Z', 'Sun, 21 Dec 2025 18:00:30 +0000',
      'Sun, 21 Dec 2025 18:00:30', 'sun, 21 dec 2025 18:00:30 GMT', 'Sun, 31 Feb 2025 18:00:30 GMT', 'Sun, 21 Dec 2025 25:00:30 GMT', 'Dec 21 2025']) {
      assert.equal(parseRetryAfter(bad, now), undefined, JSON.stringify(bad));
    }
    assert.equal(parseRetryAfter(null, now), undefined);
  });

  it('times out a hanging attempt (timeoutMs) and retries it', async () => {
    const relay = await fakeRelay((record, n) => (n === 1 ? { hang: true } : accepted(record)));
    const log = captureLogger();
    const started = Date.now();
    const result = await sender({ url: relay.eventsUrl, timeoutMs: 200, logger: log.logger }).send('status', { connected: true });
    assert.equal(result.ok, true);
    assert.equal(relay.requests.length, 2);
    assert.ok(Date.now() - started >= 200);
    assert.match(log.text(), /timed out after 200 ms/);
  });

  it('never retries other 4xx: one request, a warning with the relay\'s message, then the next event goes', async () => {
    const refusal = {
      error: 'schema_violation',
      message: 'data.message.content: required field is missing',
      path: 'data.message.content',
      expected: 'required field is missing',
    };
    const relay = await fakeRelay((record) =>
      JSON.parse(record.body).event === 'message' ? { status: 422, body: JSON.stringify(refusal) } : accepted(record));
    const log = captureLogger();
    const s = sender({ url: relay.eventsUrl, logger: log.logger });
    const refused = s.send('message', { message: { id: 'x' } });
    const next = s.send('status', { connected: true });
    assert.deepEqual(await refused, { ok: false, id: (await refused).id, status: 422, reason: 'rejected' });
    assert.equal((await next).ok, true);
    await sleep(150); // several retry delays: nothing more comes
    assert.equal(relay.requests.filter((r) => JSON.parse(r.body).event === 'message').length, 1);
    assert.match(log.text(), /HTTP 422: schema_violation: required field is missing \(at data\.message\.content\); dropped/);
  });

  it('the relay\'s free-text message is never logged: only its error code, path and expected (before "found"), cleaned', async () => {
    const refusal = {
      error: 'schema_violation',
      message: 'data.message.from: expected a string, found the number 5511999990000\nFAKE error: forged line',
      path: 'data.message.from\r\n[relay-sender] INJECTED\u2028',
      expected: `expected a string${'!'.repeat(5000)}, found the number 5511999990000`,
    };
    const relay = await fakeRelay(() => ({ status: 422, body: JSON.stringify(refusal) }));
    const log = captureLogger();
    const result = await sender({ url: relay.eventsUrl, logger: log.logger }).send('status', { connected: true });
    assert.equal(result.reason, 'rejected');
    const text = log.text();
    assert.equal(log.lines.length, 1, text);
    assert.match(text, /HTTP 422: schema_violation: expected a string!+ \(at data\.message\.from\[relay-sender\] INJECTED\); dropped/);
    assert.ok(!text.includes('5511999990000'), 'no value quoted by the relay');
    assert.ok(!text.includes('FAKE'), 'no message text');
    assert.ok(!/[\r\n\u2028]/.test(text), 'no line breaks from the relay');
    assert.ok(text.length < 500, `capped: ${text.length} characters`);

    // A short `expected`, under the cap: only the cut before ", found" keeps the value out.
    const short = { error: 'schema_violation', path: 'data.message.from', expected: 'expected a string, found the number 5511999990000' };
    const relay2 = await fakeRelay(() => ({ status: 422, body: JSON.stringify(short) }));
    const log2 = captureLogger();
    await sender({ url: relay2.eventsUrl, logger: log2.logger }).send('status', { connected: true });
    assert.match(log2.text(), /schema_violation: expected a string \(at data\.message\.from\)/);
    assert.ok(!log2.text().includes('5511999990000'), log2.text());
  });

  it('400, 413 and 415 are final too', async () => {
    for (const status of [400, 413, 415]) {
      const relay = await fakeRelay(() => ({ status, body: JSON.stringify({ error: 'x', message: `m${status}` }) }));
      const result = await sender({ url: relay.eventsUrl, logger: captureLogger().logger }).send('status', { connected: true });
      assert.equal(result.status, status);
      assert.equal(result.reason, 'rejected');
      assert.equal(relay.requests.length, 1, `${status} retried`);
    }
  });

  it('422 queue_refused_event is final; 500 queue_misconfigured is retried with the relay\'s error code', async () => {
    const refusedBody = { error: 'queue_refused_event', message: 'the queue refused this event: it will not be stored' };
    const misconfigured = { error: 'queue_misconfigured', message: 'the queue is misconfigured: an operator must fix it' };
    const relay = await fakeRelay((record) => {
      const { data } = JSON.parse(record.body);
      if (data.seq === 0) return { status: 422, body: JSON.stringify(refusedBody) };
      const tries = relay.requests.filter((r) => r.headers['webhook-id'] === record.headers['webhook-id']).length;
      return tries <= 2 ? { status: 500, body: JSON.stringify(misconfigured) } : accepted(record);
    });
    const log = captureLogger();
    const s = sender({ url: relay.eventsUrl, logger: log.logger });
    const refused = s.send('status', { connected: false, seq: 0 });
    const retried = s.send('status', { connected: false, seq: 1 });
    assert.deepEqual(await refused, { ok: false, id: (await refused).id, status: 422, reason: 'rejected' });
    assert.deepEqual(await retried, { ok: true, id: (await retried).id, status: 202 });
    const count = (seq) => relay.requests.filter((r) => JSON.parse(r.body).data.seq === seq).length;
    assert.equal(count(0), 1, 'queue_refused_event is not retried');
    assert.equal(count(1), 3, 'queue_misconfigured is retried like any 5xx');
    assert.match(log.text(), /HTTP 422: queue_refused_event; dropped \(not retried\)/);
    assert.match(log.text(), /attempt 1 failed \(HTTP 500: queue_misconfigured\)/);
    assert.doesNotMatch(log.text(), /the queue (refused|is misconfigured)/, 'the relay\'s free-text message is not logged');
  });

  it('401 is retried, re-signed with a fresh timestamp each attempt, with an error log each time', async () => {
    const unauthorizedBody = { error: 'unauthorized', message: 'no signature matches any current secret' };
    const relay = await fakeRelay((record, n) => (n <= 2 ? { status: 401, body: JSON.stringify(unauthorizedBody) } : accepted(record)));
    const log = captureLogger();
    // Retry waits of 1 to 2 s: each attempt falls in a later second, so its timestamp differs.
    const s = sender({ url: relay.eventsUrl, logger: log.logger, retryBaseDelayMs: 2000, retryMaxDelayMs: 2000 });
    const result = await s.send('message', {
      message: { id: 'm1', from: '5511999990000@c.us', to: 'bot', content: 'private words', type: 'text', direction: 'incoming', timestamp: '2025-12-21T18:02:52.836Z', status: 'received' },
    });
    assert.equal(result.ok, true);
    assert.equal(relay.requests.length, 3);
    const stamps = relay.requests.map((r) => Number(r.headers['webhook-timestamp']));
    assert.equal(new Set(stamps).size, 3, `a fresh timestamp per attempt: ${stamps}`);
    assert.equal(new Set(relay.requests.map((r) => r.headers['webhook-signature'])).size, 3);
    for (const r of relay.requests) {
      verify(r); // each attempt's signature is valid for its own timestamp
      assert.ok(Math.abs(Number(r.headers['webhook-timestamp']) * 1000 - r.at) < 1500, 'signed when sent');
    }
    assert.equal(new Set(relay.requests.map((r) => r.headers['webhook-id'])).size, 1, 'same id');
    const errors = log.lines.filter((l) => l.level === 'error');
    assert.equal(errors.length, 2, log.text());
    for (const e of errors) {
      assert.match(e.text, /refused with HTTP 401: unauthorized: the signature was not accepted; check that WEBHOOK_SECRET .* clock .*; retrying for up to \d+ s more/);
      assert.doesNotMatch(e.text, /no signature matches/, 'the relay\'s free-text message is not logged');
    }
    assert.doesNotMatch(log.text(), /private words|5511999990000/);
  });

  it('401 stops being retried after unauthorizedRetryMs: dropped with an error; a success starts a new window', async () => {
    let refuse = true;
    const relay = await fakeRelay((record) => (refuse ? { status: 401, body: '{"error":"unauthorized","message":"webhook-timestamp is too old"}' } : accepted(record)));
    const log = captureLogger();
    const s = sender({ url: relay.eventsUrl, logger: log.logger, unauthorizedRetryMs: 300 });
    const first = await s.send('status', { connected: false, seq: 0 });
    assert.deepEqual(first, { ok: false, id: first.id, status: 401, reason: 'rejected' });
    const firstAttempts = relay.requests.length;
    assert.ok(firstAttempts >= 2, `retried: ${firstAttempts} attempts`);
    assert.match(log.lines.filter((l) => l.level === 'error').at(-1)?.text ?? '', /refused with HTTP 401: unauthorized: the signature was not accepted for \d+ s; .*; dropped/);
    // The run of 401s is already older than the bound: the next event gets one attempt.
    const second = await s.send('status', { connected: false, seq: 1 });
    assert.equal(second.reason, 'rejected');
    assert.equal(relay.requests.length, firstAttempts + 1);
    // Fixed (e.g. the secret put back): accepted, and a later 401 is retried again.
    refuse = false;
    assert.equal((await s.send('status', { connected: false, seq: 2 })).ok, true);
    refuse = true;
    const pending = s.send('status', { connected: false, seq: 3 });
    await waitFor(() => relay.requests.filter((r) => JSON.parse(r.body).data.seq === 3).length >= 2, { message: 'a new window of 401 retries' });
    refuse = false;
    assert.equal((await pending).ok, true);
  });

  it('unauthorizedRetryMs: 0 makes 401 final at once', async () => {
    const relay = await fakeRelay(() => ({ status: 401, body: '{"error":"unauthorized","message":"m401"}' }));
    const result = await sender({ url: relay.eventsUrl, unauthorizedRetryMs: 0 }).send('status', { connected: true });
    assert.equal(result.status, 401);
    assert.equal(result.reason, 'rejected');
    assert.equal(relay.requests.length, 1);
  });

  it('network errors are retried until the relay comes up', async () => {
    const port = await freePort();
    const log = captureLogger();
    const s = sender({ url: `http://127.0.0.1:${port}/events`, logger: log.logger });
    const result = s.send('status', { connected: true });
    await waitFor(() => log.lines.filter((l) => /network error/.test(l.text)).length >= 2, { message: 'two failed attempts' });
    const relay = await startServer(accepted, port);
    cleanups.push(relay.close);
    assert.equal((await result).ok, true);
    assert.equal(relay.requests.length, 1);
  });

  it('maxAttempts gives up (when set) and reports it', async () => {
    const relay = await fakeRelay(() => ({ status: 500 }));
    const result = await sender({ url: relay.eventsUrl, maxAttempts: 3, logger: captureLogger().logger }).send('status', { connected: true });
    assert.equal(result.reason, 'max_attempts');
    assert.equal(relay.requests.length, 3);
  });

  it('backoff grows exponentially, capped, with jitter', async () => {
    const relay = await fakeRelay((record, n) => (n <= 5 ? { status: 503 } : accepted(record)));
    await sender({ url: relay.eventsUrl, retryBaseDelayMs: 40, retryMaxDelayMs: 160 }).send('status', { connected: true });
    const gaps = relay.requests.slice(1).map((r, i) => r.at - relay.requests[i].at);
    // Waits are in [ceiling/2, ceiling] for ceilings 40, 80, 160, 160, 160 (plus scheduling slack).
    const ceilings = [40, 80, 160, 160, 160];
    gaps.forEach((gap, i) => assert.ok(gap >= ceilings[i] / 2 - 5 && gap <= ceilings[i] + 150, `gap ${i}: ${gap} ms`));
  });
});

describe('answers: bounded reads, only 202 counts', () => {
  /**
   * A relay whose answer never ends: headers with `status`, then body bytes until the sender
   * hangs up, either as fast as the socket takes them or one byte every 20 ms. `hungUp` counts
   * the answers whose connection the sender closed.
   * @param {number} status
   * @param {{fast: boolean}} mode
   */
  async function endlessRelay(status, { fast }) {
    let requests = 0;
    let hungUp = 0;
    const server = http.createServer((req, res) => {
      requests += 1;
      req.resume();
      req.on('end', () => {
        res.writeHead(status, { 'content-type': 'application/json', 'retry-after': '0' });
        res.write('{"error":"queue_unavailable","message":"');
        res.on('error', () => {});
        const chunk = Buffer.alloc(4096, 0x61);
        const more = () => {
          while (!res.destroyed && res.write(chunk)) { /* until the socket's buffer is full */ }
        };
        /** @type {ReturnType<typeof setInterval> | undefined} */
        let trickle;
        if (fast) {
          res.on('drain', more);
          more();
        } else {
          trickle = setInterval(() => res.write('a'), 20);
        }
        res.on('close', () => {
          clearInterval(trickle);
          hungUp += 1;
        });
      });
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
    cleanups.push(() => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve(undefined));
    }));
    const { port } = /** @type {import('node:net').AddressInfo} */ (server.address());
    return {
      eventsUrl: `http://127.0.0.1:${port}/events`,
      get requests() { return requests; },
      get hungUp() { return hungUp; },
    };
  }

  for (const fast of [true, false]) {
    const mode = fast ? 'a fast endless body (cut at 16 KiB)' : 'a trickling endless body (cut at the timeout)';
    it(`202 with ${mode}: delivered, and the sender hangs up`, { timeout: 20_000 }, async () => {
      const relay = await endlessRelay(202, { fast });
      // The fast body must be cut by size: with a 60 s timeout, only the 16 KiB bound ends it
      // within the test's 20 s.
      const result = await sender({ url: relay.eventsUrl, timeoutMs: fast ? 60_000 : 300 }).send('status', { connected: true });
      assert.deepEqual(result, { ok: true, id: result.id, status: 202 });
      assert.equal(relay.requests, 1);
      await waitFor(() => relay.hungUp === 1, { message: 'the sender closed the endless answer' });
    });

    it(`503 with ${mode}: one failed attempt with the right status, and the sender hangs up`, { timeout: 20_000 }, async () => {
      const relay = await endlessRelay(503, { fast });
      const log = captureLogger();
      const result = await sender({ url: relay.eventsUrl, timeoutMs: fast ? 60_000 : 300, maxAttempts: 1, logger: log.logger }).send('status', { connected: true });
      assert.deepEqual(result, { ok: false, id: result.id, status: 503, reason: 'max_attempts' });
      assert.equal(relay.requests, 1);
      assert.match(log.text(), /gave up after 1 attempts/);
      await waitFor(() => relay.hungUp === 1, { message: 'the sender closed the endless answer' });
    });
  }

  /**
   * A fetch whose answer body is an endless stream that ignores the abort signal; `stats`
   * counts the bytes the sender pulled and whether it cancelled the stream. `stallAfter`: stop
   * producing (without ending) after that many bytes.
   */
  function endlessFetch(status, stallAfter = Infinity) {
    const stats = { bytes: 0, cancelled: false };
    /** @type {typeof fetch} */
    const doFetch = async () => new Response(new ReadableStream({
      async pull(controller) {
        if (stats.bytes >= stallAfter) return new Promise(() => {}); // never another byte
        await new Promise((resolve) => setImmediate(resolve));
        stats.bytes += 1024;
        controller.enqueue(new Uint8Array(1024).fill(0x61));
      },
      cancel() {
        stats.cancelled = true;
      },
    }), { status, headers: { 'content-type': 'application/json' } });
    return { stats, fetch: doFetch };
  }

  it('reads at most 16 KiB of an answer, then cancels the rest', async () => {
    for (const status of [202, 503]) {
      const endless = endlessFetch(status);
      const result = await sender({ url: 'http://relay.invalid/events', fetch: endless.fetch, maxAttempts: 1, timeoutMs: 60_000 }).send('status', { connected: true });
      assert.equal(result.status, status);
      assert.equal(result.ok, status === 202);
      assert.equal(endless.stats.cancelled, true, `${status}: cancelled`);
      // 16 KiB read, at most a chunk or two buffered ahead; a cancelled stream is not pulled again.
      assert.ok(endless.stats.bytes >= 16 * 1024 && endless.stats.bytes <= 16 * 1024 + 4096, `${status}: pulled ${endless.stats.bytes} bytes`);
    }
  });

  it('an answer body that stalls is cancelled at the attempt\'s timeout, even when fetch ignores the signal', async () => {
    for (const status of [202, 503]) {
      const endless = endlessFetch(status, 2048);
      const result = await sender({ url: 'http://relay.invalid/events', fetch: endless.fetch, maxAttempts: 1, timeoutMs: 200 }).send('status', { connected: true });
      assert.equal(result.status, status);
      assert.equal(result.ok, status === 202);
      assert.equal(result.reason, status === 202 ? undefined : 'max_attempts');
      assert.equal(endless.stats.cancelled, true, `${status}: cancelled`);
    }
  });

  it('a 2xx other than 202 (e.g. the app\'s old route answering 200) is not delivered: an error, no body logged, not resent', async () => {
    for (const status of [200, 201, 204]) {
      const relay = await fakeRelay(() => ({ status, body: status === 204 ? undefined : '{"received":true,"echo":"my private words"}' }));
      const log = captureLogger();
      const s = sender({ url: relay.eventsUrl, logger: log.logger });
      const result = await s.send('message', { message: { id: 'm', content: 'my private words' } });
      assert.deepEqual(result, { ok: false, id: result.id, status, reason: 'not_relay' });
      const next = await s.send('status', { connected: true });
      assert.equal(next.reason, 'not_relay', 'each event gets one attempt');
      assert.equal(relay.requests.length, 2, `${status}: not retried`);
      const errors = log.lines.filter((l) => l.level === 'error');
      assert.equal(errors.length, 2, log.text());
      assert.match(errors[0].text, new RegExp(`WEBHOOK_URL answered HTTP ${status}, not the relay's 202: .*fix WEBHOOK_URL; dropped`));
      assert.doesNotMatch(log.text(), /my private words|received/);
    }
  });

  it('warns once at start when WEBHOOK_URL does not end in /events; an invalid URL turns sending off', async () => {
    const warnings = (url) => {
      const log = captureLogger();
      const s = createSender({ url, secret: INGEST, logger: log.logger });
      cleanups.push(() => s.close());
      return { s, log };
    };
    assert.equal(warnings('https://relay.example/events').log.lines.length, 0);
    assert.equal(warnings('https://relay.example/prod/events?x=1').log.lines.length, 0);
    const oldRoute = warnings('https://chatbot.example/api/webhook/chat-whatsapp?token=hunter2');
    assert.equal(oldRoute.log.lines.length, 1);
    assert.match(oldRoute.log.text(), /warn: .*WEBHOOK_URL does not end in \/events/);
    assert.doesNotMatch(oldRoute.log.text(), /chatbot\.example|hunter2/, 'the URL is not logged');
    assert.equal(oldRoute.s.enabled, true);
    const batch = warnings('https://relay.example/events/batch');
    assert.match(batch.log.text(), /warn: .*ends in \/events\/batch, but this sender posts one event per request/);
    for (const bad of ['relay.example/events', 'ftp://relay.example/events']) {
      const { s, log } = warnings(bad);
      assert.equal(s.enabled, false, bad);
      assert.match(log.text(), /error: .*WEBHOOK_URL is not (a valid|an http\(s\)) URL: events are not sent/);
      assert.equal((await s.send('status', { connected: true })).reason, 'not_configured');
    }
  });
});

describe('order and backlog', () => {
  it('delivers one at a time, in order, through failures', async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    const relay = await fakeRelay(async (record, n) => {
      inFlight += 1;
      maxInFlight = Math.max(maxInFlight, inFlight);
      await sleep(5);
      inFlight -= 1;
      return n % 3 === 1 ? { status: 503 } : accepted(record);
    });
    const s = sender({ url: relay.eventsUrl });
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => s.send('status', { connected: false, seq: i })));
    assert.ok(results.every((r) => r.ok));
    assert.equal(maxInFlight, 1);
    const delivered = relay.requests.filter((r, i) => (i + 1) % 3 !== 1).map((r) => JSON.parse(r.body).data.seq);
    assert.deepEqual(delivered, [0, 1, 2, 3, 4, 5, 6, 7]);
  });

  it('bounds the backlog: the oldest waiting events are dropped with a warning', async () => {
    const port = await freePort();
    const log = captureLogger();
    const s = sender({ url: `http://127.0.0.1:${port}/events`, maxBacklog: 3, logger: log.logger });
    const results = Array.from({ length: 6 }, (_, i) => s.send('status', { connected: false, seq: i }));
    assert.ok(s.pending <= 3);
    const drops = log.lines.filter((l) => l.level === 'warn' && /backlog full \(3 events\): dropped the oldest/.test(l.text));
    assert.equal(drops.length, 3);
    const relay = await startServer(accepted, port);
    cleanups.push(relay.close);
    const outcomes = await Promise.all(results);
    assert.equal(outcomes.filter((o) => o.reason === 'backlog_full').length, 3);
    const delivered = relay.requests.map((r) => JSON.parse(r.body).data.seq);
    assert.equal(delivered.length, 3);
    assert.deepEqual([...delivered].sort(), delivered, 'in order');
    assert.equal(delivered.at(-1), 5, 'the newest is kept');
  });

  it('flush() waits for the backlog; close() resolves what is left as closed', async () => {
    const relay = await fakeRelay();
    const s = sender({ url: relay.eventsUrl });
    for (let i = 0; i < 5; i++) s.send('status', { connected: true, seq: i });
    assert.equal(await s.flush(5000), true);
    assert.equal(relay.requests.length, 5);

    const port = await freePort();
    const down = sender({ url: `http://127.0.0.1:${port}/events`, logger: captureLogger().logger });
    const pending = down.send('status', { connected: true });
    assert.equal(await down.flush(100), false);
    down.close();
    assert.equal((await pending).reason, 'closed');
    assert.equal((await down.send('status', { connected: true })).reason, 'closed');
  });
});

describe('never throws, never leaks', () => {
  it('unserialisable data, throwing fetch and throwing logger all resolve', async () => {
    const circular = {};
    circular.self = circular;
    const log = captureLogger();
    const s = sender({ url: 'http://127.0.0.1:9/events', logger: log.logger, maxAttempts: 2 });
    assert.equal((await s.send('status', circular)).reason, 'invalid_event');
    assert.equal((await s.send('status', { n: 1n })).reason, 'invalid_event');

    const throwing = sender({
      url: 'http://relay.invalid/events',
      maxAttempts: 2,
      fetch: () => { throw new TypeError('boom'); },
      logger: { warn() { throw new Error('logger broken'); }, error() { throw new Error('logger broken'); } },
    });
    assert.equal((await throwing.send('status', { connected: true })).reason, 'max_attempts');
  });

  it('an invalid secret disables sending with an error (and the secret is not printed)', async () => {
    const log = captureLogger();
    const s = createSender({ url: 'http://127.0.0.1:9/events', secret: 'whsec_***not base64***', logger: log.logger });
    assert.equal(s.enabled, false);
    assert.equal((await s.send('status', { connected: true })).reason, 'not_configured');
    assert.match(log.text(), /not a valid whsec_<base64> secret/);
    assert.doesNotMatch(log.text(), /not base64\*\*\*/);
  });

  it('logs carry no QR data, message content or secret', async () => {
    const relay = await fakeRelay((record, n) => (n <= 2 ? { status: 503 } : { status: 422, body: '{"error":"schema_violation","message":"data.message.from: found \\"5511999990000@c.us\\"\\nFAKE"}' }));
    const log = captureLogger();
    const s = sender({ url: relay.eventsUrl, logger: log.logger });
    const client = new EventEmitter();
    s.wire(client);
    client.emit('qr', 'SECRET-QR-PAYLOAD-2@abc');
    client.emit('message', { id: { _serialized: 'false_5511999990000@c.us_AAA' }, from: '5511999990000@c.us', to: 'bot', body: 'my private words', type: 'chat', fromMe: false, timestamp: 1766340172 });
    await waitFor(() => relay.requests.length >= 4, { message: 'both events attempted' });
    await s.flush(2000);
    const text = log.text();
    assert.ok(text.length > 0);
    for (const leak of ['my private words', 'SECRET-QR-PAYLOAD', 'data:image', INGEST, INGEST.slice(6), '5511999990000', 'FAKE']) {
      assert.ok(!text.includes(leak), `log contains ${leak}`);
    }
  });
});

describe('wireClient (whatsapp-web.js events)', () => {
  function fakeClient() {
    const client = new EventEmitter();
    client.info = { wid: { _serialized: '5511999990000@c.us' }, pushname: 'Atimo Bot', platform: 'android' };
    return client;
  }

  it('maps each client event to the envelope, in emission order', async () => {
    const relay = await fakeRelay();
    const s = sender({ url: relay.eventsUrl });
    const client = fakeClient();
    const unsubscribe = s.wire(client);
    const incoming = { id: { _serialized: 'false_5511888880000@c.us_3EB0C767D097B7C7C030' }, from: '5511888880000@c.us', to: '5511999990000@c.us', body: 'Oi', type: 'chat', fromMe: false, timestamp: 1766340172 };
    const outgoing = { id: { _serialized: 'true_5511888880000@c.us_3EB0AAAA' }, from: '5511999990000@c.us', to: '5511888880000@c.us', body: 'Olá!', type: 'image', fromMe: true, timestamp: 1766340180 };

    client.emit('qr', '2@qr-code-payload');
    client.emit('authenticated');
    client.emit('ready');
    client.emit('message', incoming);
    client.emit('message_create', incoming); // whatsapp-web.js emits both for an incoming message
    client.emit('message', outgoing); // own messages come through message_create only
    client.emit('message_create', outgoing);
    client.emit('auth_failure', 'bad session');
    client.emit('disconnected', 'NAVIGATION');
    await waitFor(() => relay.requests.length >= 7, { message: '7 events' });
    await s.flush(2000);
    assert.equal(relay.requests.length, 7);

    const envs = relay.requests.map((r) => JSON.parse(r.body));
    assert.deepEqual(envs.map((e) => e.event), ['qr', 'status', 'status', 'message', 'message', 'status', 'status']);
    assert.match(envs[0].data.qr, /^data:image\/png;base64,[A-Za-z0-9+/=]+$/);
    assert.equal(envs[0].data.available, true);
    assert.deepEqual(envs[1].data, { connected: false, authenticated: true });
    assert.deepEqual(envs[2].data, { connected: true, clientInfo: { wid: '5511999990000@c.us', pushname: 'Atimo Bot', platform: 'android' } });
    assert.deepEqual(envs[3].data, {
      message: {
        id: 'false_5511888880000@c.us_3EB0C767D097B7C7C030',
        from: '5511888880000@c.us',
        to: '5511999990000@c.us',
        content: 'Oi',
        type: 'text',
        direction: 'incoming',
        timestamp: new Date(1766340172 * 1000).toISOString(),
        status: 'received',
      },
    });
    assert.equal(envs[3].id, messageEventId('false_5511888880000@c.us_3EB0C767D097B7C7C030'));
    assert.deepEqual(envs[4].data.message, {
      id: 'true_5511888880000@c.us_3EB0AAAA',
      from: '5511999990000@c.us',
      to: '5511888880000@c.us',
      content: 'Olá!',
      type: 'image',
      direction: 'outgoing',
      timestamp: new Date(1766340180 * 1000).toISOString(),
      status: 'sent',
    });
    assert.deepEqual(envs[5].data, { connected: false, error: 'bad session' });
    assert.deepEqual(envs[6].data, { connected: false, reason: 'NAVIGATION' });
    for (const r of relay.requests) verify(r);

    unsubscribe();
    client.emit('ready');
    await sleep(50);
    assert.equal(relay.requests.length, 7);
    assert.equal(client.listenerCount('ready'), 0);
  });

  it('message ids are stable (the same WhatsApp message → the same event id) and relay-safe', () => {
    const a = messageEventId('false_5511888880000@c.us_3EB0C767D097B7C7C030');
    assert.equal(a, messageEventId('false_5511888880000@c.us_3EB0C767D097B7C7C030'));
    assert.notEqual(a, messageEventId('false_5511888880000@c.us_3EB0C767D097B7C7C031'));
    assert.match(a, /^message-[0-9a-f]{32}$/);
    assert.equal(toChatMessage({ id: { _serialized: 'x' }, body: undefined, fromMe: false }).content, '');
  });

  it('module-level sendWebhook / wireClient share one ordered queue per relay URL', async () => {
    const relay = await fakeRelay();
    const opts = { url: relay.eventsUrl, secret: INGEST, retryBaseDelayMs: 20 };
    const client = fakeClient();
    const unsubscribe = wireClient(client, opts);
    client.emit('authenticated');
    client.emit('ready');
    await waitFor(() => relay.requests.length >= 2, { message: 'wired events' });
    const result = await sendWebhook('status', { connected: true, qrAvailable: false }, { ...opts, id: 'status-custom-id' });
    assert.equal(result.ok, true);
    assert.equal(result.id, 'status-custom-id');
    assert.equal(relay.requests.length, 3);
    unsubscribe();
  });
});
