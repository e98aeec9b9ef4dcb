// relay-sender.mjs: chat-whatsapp → chat webhook relay (ingest), drop-in for the seed's
// axios `sendWebhook`.
//
// What it does, per event:
//   - builds the envelope (the relay's docs/contract.md): {event, data, timestamp, id, session};
//     `id` is made once per event (so every retry carries the same id and the relay
//     deduplicates it);
//   - signs each attempt with Standard Webhooks (`standardwebhooks` on npm) using the relay's
//     INGEST secret, and POSTs it with the global `fetch`, 5 s timeout per attempt;
//   - escapes raw U+FFFE / U+FFFF as `\uFFFE` / `\uFFFF` (the same JSON value): the relay
//     refuses them raw (SQS cannot store them), so a contact could otherwise make a message vanish;
//   - retries network errors, timeouts, 5xx, 408 and 429 with exponential backoff and jitter;
//     a `Retry-After` (delay-seconds or an HTTP date, capped) can lengthen a wait, never shorten it;
//   - counts only a 202 (the relay's "stored") as delivered: another 2xx means WEBHOOK_URL is not
//     the relay's ingest (e.g. the app's old route): an error is logged and the event dropped;
//   - reads at most 16 KiB of any answer, within the attempt's timeout, then cancels the rest;
//   - retries a 401 too, but only for a bounded time (default 10 minutes from the first 401 of
//     a run of them), logging an error each time: a 401 can be a clock that is off or a secret
//     rotation done in the wrong order, which someone can fix while the event waits;
//   - any other 4xx is final: a warning with the relay's error code (and `path`, `expected`) is
//     logged and the event dropped (retrying cannot fix it);
//   - keeps undelivered events in a bounded in-memory FIFO backlog (default 1000; when full the
//     oldest is dropped with a warning) and delivers them one at a time, in order;
//   - never throws into the caller: `sendWebhook` returns a promise that always resolves, with
//     the outcome ({ok, status?, reason?, id}).
//
// Without WEBHOOK_URL every call is a no-op, as in the seed.
// Logs carry event type, event id, attempt, status and delays: never QR data, message content
// or secrets. Of the relay's error bodies only `error`, `path` and `expected` (without its
// "found …" part) are logged, control characters removed and length capped: never `message`.
//
// Node 18+ (global fetch, AbortSignal.timeout). No axios.

import { createHash, randomUUID } from 'node:crypto';
import { Webhook } from 'standardwebhooks';

/**
 * @typedef {'status' | 'qr' | 'message'} EventType
 *
 * @typedef {object} Logger
 * @property {(...args: unknown[]) => void} [debug]
 * @property {(...args: unknown[]) => void} [info]
 * @property {(...args: unknown[]) => void} [warn]
 * @property {(...args: unknown[]) => void} [error]
 *
 * @typedef {object} SenderOptions
 * @property {string} [url] Relay ingest URL (`https://…/events`). Default: env WEBHOOK_URL. A URL
 *   that is not http(s) turns sending off (with an error); a path not ending in `/events` gets a
 *   warning at start.
 * @property {string} [secret] Relay INGEST secret (`whsec_…`). Default: env WEBHOOK_SECRET.
 * @property {string} [session] WhatsApp session name. Default: env WHATSAPP_SESSION, else "default".
 * @property {number} [timeoutMs] Per-attempt timeout. Default 5000.
 * @property {number} [maxBacklog] Undelivered events kept in memory. Default 1000.
 * @property {number} [retryBaseDelayMs] First retry delay (doubles each attempt). Default 1000.
 * @property {number} [retryMaxDelayMs] Cap of the backoff delay. Default 60000.
 * @property {number} [maxRetryAfterMs] Cap applied to a relay's Retry-After. Default 300000.
 *   A retry waits max(backoff, min(Retry-After, maxRetryAfterMs)).
 * @property {number} [unauthorizedRetryMs] How long 401 answers are retried, from the first
 *   401 of an unbroken run of them. Default 600000 (10 minutes). Past it, an event answered 401
 *   is dropped with an error after one attempt, until the relay answers something else.
 * @property {number} [maxAttempts] Attempts per event before it is dropped. Default Infinity
 *   (an unreachable relay is waited for; the backlog bound is the safety valve).
 * @property {Logger} [logger] Default: console.
 * @property {typeof fetch} [fetch] Default: globalThis.fetch.
 *
 * @typedef {object} EventOptions
 * @property {string} [id] Idempotency key for this event (default: `${event}-${randomUUID()}`).
 * @property {string} [session] Session name for this event (default: the sender's).
 * @property {string} [timestamp] RFC 3339 time of the event (default: now).
 *
 * @typedef {object} SendResult
 * @property {boolean} ok true once the relay answered 202 (it stored the event).
 * @property {string} [id] The envelope id.
 * @property {number} [status] The relay's final HTTP status, when there was one.
 * @property {'not_configured' | 'invalid_event' | 'rejected' | 'not_relay' | 'backlog_full' | 'max_attempts' | 'closed'} [reason]
 *   Why the event was not delivered. `not_relay`: WEBHOOK_URL answered a 2xx other than 202, so
 *   it is not the relay's ingest and nothing says the event was stored.
 *
 * @typedef {object} WhatsAppClient A whatsapp-web.js `Client` (only what is used here).
 * @property {(event: string, listener: (...args: any[]) => void) => unknown} on
 * @property {(event: string, listener: (...args: any[]) => void) => unknown} [off]
 * @property {(event: string, listener: (...args: any[]) => void) => unknown} [removeListener]
 * @property {any} [info]
 */

const DEFAULTS = Object.freeze({
  timeoutMs: 5000,
  maxBacklog: 1000,
  retryBaseDelayMs: 1000,
  retryMaxDelayMs: 60_000,
  maxRetryAfterMs: 300_000,
  unauthorizedRetryMs: 600_000,
  maxAttempts: Infinity,
});

/** Status codes worth another attempt (besides 5xx); every other answer but 202 is final. */
const RETRYABLE_STATUS = new Set([408, 429]);

/** The most of an answer's body that is read (for the error code); the rest is cancelled. */
const MAX_RESPONSE_BYTES = 16 * 1024;

/** The relay's ids and sessions: ASCII letters, digits, punctuation (SQS id rules). */
const SQS_ID = /^[\x21-\x7e]+$/;

/**
 * One queue to one relay: ordered, bounded, retried. Most apps use the module-level
 * `sendWebhook` / `wireClient`; create your own sender for a second relay or in tests.
 *
 * @param {SenderOptions} [options]
 */
export function createSender(options = {}) {
  const env = typeof process !== 'undefined' && process.env ? process.env : {};
  const url = options.url ?? env.WEBHOOK_URL ?? '';
  const secret = options.secret ?? env.WEBHOOK_SECRET ?? '';
  const session = options.session ?? (env.WHATSAPP_SESSION || 'default');
  const timeoutMs = positive(options.timeoutMs, DEFAULTS.timeoutMs);
  const maxBacklog = Math.max(1, Math.floor(positive(options.maxBacklog, DEFAULTS.maxBacklog)));
  const baseDelay = positive(options.retryBaseDelayMs, DEFAULTS.retryBaseDelayMs);
  const maxDelay = Math.max(baseDelay, positive(options.retryMaxDelayMs, DEFAULTS.retryMaxDelayMs));
  const maxRetryAfter = positive(options.maxRetryAfterMs, DEFAULTS.maxRetryAfterMs);
  const maxAttempts = positive(options.maxAttempts, DEFAULTS.maxAttempts);
  const unauthorizedRetryMs = nonNegative(options.unauthorizedRetryMs, DEFAULTS.unauthorizedRetryMs);
  const doFetch = options.fetch ?? globalThis.fetch;
  const log = safeLogger(options.logger ?? console);

  /** @type {Webhook | null} */
  let signer = null;
  let enabled = Boolean(url);
  if (enabled) enabled = checkUrl(url, log);
  if (enabled && secret) {
    try {
      signer = new Webhook(secret);
    } catch {
      log.error('[relay-sender] WEBHOOK_SECRET is not a valid whsec_<base64> secret: events are not sent');
      enabled = false;
    }
  } else if (enabled) {
    log.warn('[relay-sender] WEBHOOK_SECRET is not set: events are sent unsigned and the relay will refuse them (401)');
  }
  if (enabled && typeof doFetch !== 'function') {
    log.error('[relay-sender] no global fetch (Node 18+ required): events are not sent');
    enabled = false;
  }
  if (enabled && !validSqsId(session, 64)) {
    log.warn('[relay-sender] WHATSAPP_SESSION must be 1 to 64 ASCII letters, digits or punctuation: the relay will refuse these events (422)');
  }

  /**
   * @typedef {object} Item
   * @property {string} id
   * @property {string} event
   * @property {string} body
   * @property {number} attempts
   * @property {boolean} active true while an HTTP attempt is in flight
   * @property {(result: SendResult) => void} resolve
   */
  /** @type {Item[]} */
  const backlog = [];
  let pumping = false;
  let closed = false;
  /** @type {{ timer: ReturnType<typeof setTimeout>, wake: () => void } | null} */
  let sleeping = null;
  /** @type {Set<() => void>} */
  const idleWaiters = new Set();
  /**
   * When the current run of 401 answers began (null: the last answer was not a 401). One
   * clock for the whole sender, so a secret that stays wrong costs 10 minutes once, not once
   * per event.
   * @type {number | null}
   */
  let unauthorizedSince = null;

  /**
   * Queue one event for delivery. Resolves once it is delivered or given up; never rejects.
   * @param {EventType | string} event
   * @param {unknown} data
   * @param {EventOptions} [eventOptions]
   * @returns {Promise<SendResult>}
   */
  function send(event, data, eventOptions = {}) {
    try {
      if (!enabled) return Promise.resolve({ ok: false, reason: 'not_configured' });
      if (closed) return Promise.resolve({ ok: false, reason: 'closed' });
      const id = eventOptions.id ?? `${event}-${randomUUID()}`;
      const envelope = {
        event,
        data,
        timestamp: eventOptions.timestamp ?? new Date().toISOString(),
        id,
        session: eventOptions.session ?? session,
      };
      let body;
      try {
        // Raw U+FFFE / U+FFFF can only be inside JSON strings: their \u escapes are the same
        // value, and the relay (SQS) stores only the escaped form. Signed as sent (attempt()).
        body = JSON.stringify(envelope).replace(/[\uFFFE\uFFFF]/g, (c) => (c === '\uFFFE' ? '\\uFFFE' : '\\uFFFF'));
      } catch (err) {
        log.warn(`[relay-sender] ${event} ${id}: data is not serialisable as JSON (${errorName(err)}): dropped`);
        return Promise.resolve({ ok: false, id, reason: 'invalid_event' });
      }
      return new Promise((resolve) => {
        backlog.push({ id, event: String(event), body, attempts: 0, active: false, resolve });
        enforceBound();
        pump();
      });
    } catch (err) {
      log.error(`[relay-sender] unexpected error while queueing an event: ${errorName(err)}`);
      return Promise.resolve({ ok: false, reason: 'invalid_event' });
    }
  }

  /** Drop the oldest waiting events until the backlog fits its bound. */
  function enforceBound() {
    while (backlog.length > maxBacklog) {
      // The oldest event not in the middle of an HTTP attempt (that one may already be stored).
      const index = backlog.findIndex((item) => !item.active);
      if (index < 0) return;
      const [dropped] = backlog.splice(index, 1);
      log.warn(`[relay-sender] backlog full (${maxBacklog} events): dropped the oldest, ${dropped.event} ${dropped.id}`);
      dropped.resolve({ ok: false, id: dropped.id, reason: 'backlog_full' });
      if (index === 0 && sleeping) sleeping.wake(); // the head was waiting to retry: move on
    }
  }

  async function pump() {
    if (pumping) return;
    pumping = true;
    try {
      while (backlog.length > 0 && !closed) {
        const item = backlog[0];
        const outcome = await attempt(item);
        if (backlog[0] !== item) continue; // dropped (backlog bound) while waiting
        if (outcome.done) {
          backlog.shift();
          item.resolve(outcome.result);
          continue;
        }
        if (item.attempts >= maxAttempts) {
          backlog.shift();
          log.warn(`[relay-sender] ${item.event} ${item.id}: gave up after ${item.attempts} attempts`);
          item.resolve({ ok: false, id: item.id, status: outcome.status, reason: 'max_attempts' });
          continue;
        }
        // Retry-After can only lengthen the wait: a `0` or a past date from a broken relay
        // must not turn the backoff into a busy loop.
        const floor = backoff(item.attempts);
        const delay = outcome.retryAfterMs === undefined ? floor : Math.max(floor, Math.min(outcome.retryAfterMs, maxRetryAfter));
        log.warn(`[relay-sender] ${item.event} ${item.id}: attempt ${item.attempts} failed (${outcome.why}); retrying in ${Math.round(delay)} ms, ${backlog.length} event(s) pending`);
        await sleep(delay);
      }
    } catch (err) {
      log.error(`[relay-sender] delivery loop error: ${errorName(err)}`);
    } finally {
      pumping = false;
      if (backlog.length > 0 && !closed) {
        setTimeout(pump, baseDelay);
      } else {
        for (const done of idleWaiters) done();
        idleWaiters.clear();
      }
    }
  }

  /**
   * One signed POST.
   * @param {Item} item
   * @returns {Promise<{done: true, result: SendResult} | {done: false, why: string, status?: number, retryAfterMs?: number}>}
   */
  async function attempt(item) {
    item.attempts += 1;
    item.active = true;
    try {
      /** @type {Record<string, string>} */
      const headers = { 'content-type': 'application/json', 'webhook-id': item.id };
      const now = new Date();
      const deadline = now.getTime() + timeoutMs; // the whole attempt, answer body included
      headers['webhook-timestamp'] = String(Math.floor(now.getTime() / 1000));
      if (signer) headers['webhook-signature'] = signer.sign(item.id, now, item.body);
      let response;
      try {
        response = await doFetch(url, {
          method: 'POST',
          headers,
          body: item.body,
          redirect: 'manual',
          signal: AbortSignal.timeout(timeoutMs),
        });
      } catch (err) {
        return { done: false, why: networkError(err, timeoutMs) };
      }
      const status = response.status;
      const text = await readText(response, deadline);
      if (status === 401) return unauthorized(item, text);
      unauthorizedSince = null;
      if (status === 202) {
        if (item.attempts > 1) log.info(`[relay-sender] ${item.event} ${item.id}: delivered after ${item.attempts} attempts`);
        return { done: true, result: { ok: true, id: item.id, status } };
      }
      if (status >= 200 && status < 300) {
        // Only the relay's 202 means "stored". Another 2xx is some other server (typically the
        // app's old route, WEBHOOK_URL still pointing at it): nothing says the event was
        // stored, and resending would repeat it there. The body is not logged.
        log.error(`[relay-sender] ${item.event} ${item.id}: WEBHOOK_URL answered HTTP ${status}, not the relay's 202: it is not the relay's ingest URL (https://…/events); fix WEBHOOK_URL; dropped`);
        return { done: true, result: { ok: false, id: item.id, status, reason: 'not_relay' } };
      }
      if (status >= 500 || RETRYABLE_STATUS.has(status)) {
        return {
          done: false,
          status,
          why: `HTTP ${status}${describeRefusal(text)}`,
          retryAfterMs: parseRetryAfter(response.headers.get('retry-after')),
        };
      }
      // 3xx and the other 4xx: the request itself is wrong; retrying sends the same thing again.
      log.warn(`[relay-sender] ${item.event} ${item.id}: refused by the relay with HTTP ${status}${describeRefusal(text)}; dropped (not retried)`);
      return { done: true, result: { ok: false, id: item.id, status, reason: 'rejected' } };
    } finally {
      item.active = false;
    }
  }

  /**
   * A 401: the relay did not accept the signature. Retried (each attempt is signed again, with
   * a fresh timestamp) while the run of 401s is younger than `unauthorizedRetryMs`; logged as
   * an error every time, because only a person can fix it.
   * @param {Item} item
   * @param {string} text the relay's answer (its JSON error body; never the event)
   * @returns {{done: true, result: SendResult} | {done: false, why: string, status: number}}
   */
  function unauthorized(item, text) {
    if (!signer) {
      // Unsigned (no WEBHOOK_SECRET): waiting cannot fix it, the secret is read once at start.
      log.error(`[relay-sender] ${item.event} ${item.id}: refused with HTTP 401${describeRefusal(text)}: the request is unsigned, WEBHOOK_SECRET is not set; dropped`);
      return { done: true, result: { ok: false, id: item.id, status: 401, reason: 'rejected' } };
    }
    const now = Date.now();
    unauthorizedSince ??= now;
    const left = unauthorizedSince + unauthorizedRetryMs - now;
    const cause = 'check that WEBHOOK_SECRET is one of the relay\'s INGEST_SECRETS and that this machine\'s clock is right';
    if (left > 0) {
      log.error(`[relay-sender] ${item.event} ${item.id}: attempt ${item.attempts} refused with HTTP 401${describeRefusal(text)}: the signature was not accepted; ${cause}; retrying for up to ${Math.ceil(left / 1000)} s more`);
      return { done: false, status: 401, why: 'HTTP 401' };
    }
    log.error(`[relay-sender] ${item.event} ${item.id}: refused with HTTP 401${describeRefusal(text)}: the signature was not accepted for ${Math.round((now - unauthorizedSince) / 1000)} s; ${cause}; dropped`);
    return { done: true, result: { ok: false, id: item.id, status: 401, reason: 'rejected' } };
  }

  /**
   * Exponential backoff with jitter: a random wait between half and all of base·2^(n-1).
   * @param {number} attempts
   */
  function backoff(attempts) {
    const ceiling = Math.min(maxDelay, baseDelay * 2 ** Math.min(attempts - 1, 30));
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  /** @param {number} ms */
  function sleep(ms) {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        sleeping = null;
        resolve(undefined);
      };
      const timer = setTimeout(wake, ms);
      sleeping = { timer, wake };
    });
  }

  /**
   * Resolves when every queued event is delivered or dropped, or after `timeoutMs`.
   * @param {number} [waitMs]
   * @returns {Promise<boolean>} true when the backlog is empty
   */
  function flush(waitMs = Infinity) {
    if (backlog.length === 0 && !pumping) return Promise.resolve(true);
    return new Promise((resolve) => {
      /** @type {ReturnType<typeof setTimeout> | undefined} */
      let timer;
      const done = () => {
        if (timer) clearTimeout(timer);
        idleWaiters.delete(done);
        resolve(backlog.length === 0);
      };
      idleWaiters.add(done);
      if (Number.isFinite(waitMs)) timer = setTimeout(done, waitMs);
    });
  }

  /** Stop retrying: every queued event resolves with reason "closed". Idempotent. */
  function close() {
    closed = true;
    if (sleeping) sleeping.wake();
    for (const item of backlog.splice(0)) item.resolve({ ok: false, id: item.id, reason: 'closed' });
    for (const done of idleWaiters) done();
    idleWaiters.clear();
  }

  return {
    send,
    /** Subscribe a whatsapp-web.js Client; returns a function that unsubscribes. */
    wire: (/** @type {WhatsAppClient} */ client) => wireClientTo(send, client, log),
    flush,
    close,
    /** Events not yet delivered (including the one being attempted). */
    get pending() {
      return backlog.length;
    },
    get enabled() {
      return enabled;
    },
  };
}

/** @typedef {ReturnType<typeof createSender>} RelaySender */

// ---------------------------------------------------------------------------------------------
// Module-level API: one shared sender per relay URL, configured from the environment.

/** @type {Map<string, RelaySender>} */
const senders = new Map();

/**
 * @param {SenderOptions & {sender?: RelaySender}} [opts]
 * @returns {RelaySender}
 */
function senderFor(opts = {}) {
  if (opts.sender) return opts.sender;
  const url = opts.url ?? process.env.WEBHOOK_URL ?? '';
  const secret = opts.secret ?? process.env.WEBHOOK_SECRET ?? '';
  // One queue (one order) per destination; a hash keeps the secret out of the key.
  const key = `${url}\n${createHash('sha256').update(secret).digest('hex')}`;
  let sender = senders.get(key);
  if (!sender) {
    sender = createSender(opts);
    senders.set(key, sender);
  }
  return sender;
}

/**
 * Send one event to the relay. Drop-in for the seed's `sendWebhook(event, data)`.
 *
 * `opts` may carry per-event fields (`id`, `session`, `timestamp`) and sender settings
 * (`url`, `secret`, `timeoutMs`, `maxBacklog`, `retryBaseDelayMs`, `retryMaxDelayMs`, `logger`,
 * `fetch`, …). Sender settings are read when the queue for that URL is first created: all
 * events to one relay share one ordered queue. For differently tuned queues use createSender().
 *
 * @param {EventType | string} event
 * @param {unknown} data
 * @param {SenderOptions & EventOptions & {sender?: RelaySender}} [opts]
 * @returns {Promise<SendResult>} always resolves
 */
export function sendWebhook(event, data, opts = {}) {
  try {
    return senderFor(opts).send(event, data, { id: opts.id, session: opts.session, timestamp: opts.timestamp });
  } catch {
    return Promise.resolve({ ok: false, reason: 'invalid_event' });
  }
}

/**
 * Subscribe a whatsapp-web.js Client to the relay: `ready`, `authenticated`, `auth_failure`,
 * `disconnected` → `status`; `qr` → `qr` (PNG data URL); `message` (incoming) and
 * `message_create` (outgoing, fromMe) → `message`. Returns a function that unsubscribes.
 *
 * @param {WhatsAppClient} client
 * @param {SenderOptions & {sender?: RelaySender}} [opts]
 * @returns {() => void}
 */
export function wireClient(client, opts = {}) {
  const sender = senderFor(opts);
  return sender.wire(client);
}

/**
 * @typedef {{event: EventType, data: unknown, options?: EventOptions} | null} Built
 */

/**
 * @param {(event: string, data: unknown, eventOptions?: EventOptions) => Promise<SendResult>} send
 * @param {WhatsAppClient} client
 * @param {Required<Logger>} log
 */
function wireClientTo(send, client, log) {
  /** @type {Array<[string, (...args: any[]) => Built | Promise<Built>]>} */
  const builders = [
    // The seed's QR flow: the raw string becomes a PNG data URL. It is a login credential:
    // never logged.
    ['qr', async (qr) => ({ event: 'qr', data: { qr: await toPngDataUrl(String(qr)), available: true } })],
    ['ready', () => {
      /** @type {Record<string, unknown>} */
      const data = { connected: true };
      const info = client.info;
      if (info) {
        data.clientInfo = {
          wid: String(info.wid?._serialized ?? info.wid ?? ''),
          pushname: String(info.pushname ?? ''),
          platform: String(info.platform ?? ''),
        };
      }
      return { event: 'status', data };
    }],
    ['authenticated', () => ({ event: 'status', data: { connected: false, authenticated: true } })],
    ['auth_failure', (message) => ({
      event: 'status',
      data: { connected: false, error: String(message ?? 'authentication failed') },
    })],
    ['disconnected', (reason) => ({
      event: 'status',
      data: { connected: false, reason: String(reason ?? 'unknown') },
    })],
    // `message` fires for incoming messages; `message_create` for every message created,
    // including those received. Incoming ones are taken from `message` only, own ones from
    // `message_create` only, so each message is sent once.
    ['message', (msg) => (msg && !msg.fromMe ? messageEvent(msg) : null)],
    ['message_create', (msg) => (msg && msg.fromMe ? messageEvent(msg) : null)],
  ];

  // Events reach the queue in the order the client emitted them, even when one needs async
  // work first (the QR image): a `qr` followed at once by `ready` is not reordered.
  /** @type {Promise<unknown>} */
  let chain = Promise.resolve();

  /** @type {Array<[string, (...args: any[]) => void]>} */
  const attached = builders.map(([name, build]) => [name, (...args) => {
    /** @type {Promise<Built>} */
    let built;
    try {
      built = Promise.resolve(build(...args));
    } catch (err) {
      built = Promise.reject(err);
    }
    built.catch(() => {}); // handled below, in order; never an unhandled rejection meanwhile
    chain = chain
      .then(() => built)
      .then((out) => {
        if (out) send(out.event, out.data, out.options);
      })
      .catch((err) => log.error(`[relay-sender] ${name}: could not build the event: ${errorName(err)}`));
  }]);
  for (const [name, fn] of attached) client.on(name, fn);
  return () => {
    for (const [name, fn] of attached) {
      if (typeof client.off === 'function') client.off(name, fn);
      else if (typeof client.removeListener === 'function') client.removeListener(name, fn);
    }
  };
}

/**
 * @param {any} msg a whatsapp-web.js Message
 * @returns {Built}
 */
function messageEvent(msg) {
  const message = toChatMessage(msg);
  return { event: 'message', data: { message }, options: { id: messageEventId(message.id) } };
}

/**
 * The `message` payload of the envelope (the relay's docs/contract.md) from a whatsapp-web.js
 * Message.
 * @param {any} msg
 */
export function toChatMessage(msg) {
  const fromMe = Boolean(msg.fromMe);
  const seconds = Number(msg.timestamp);
  const when = Number.isFinite(seconds) && seconds > 0 ? new Date(seconds * 1000) : new Date();
  return {
    id: String(msg.id?._serialized ?? msg.id?.id ?? msg.id ?? randomUUID()),
    from: String(msg.from ?? ''),
    to: String(msg.to ?? ''),
    content: String(msg.body ?? ''),
    // whatsapp-web.js calls a text message "chat"; the web app's contract calls it "text".
    type: msg.type === 'chat' || !msg.type ? 'text' : String(msg.type),
    direction: fromMe ? 'outgoing' : 'incoming',
    timestamp: when.toISOString(),
    status: fromMe ? 'sent' : 'received',
  };
}

/**
 * A stable event id for a WhatsApp message: the same message always gets the same id (the
 * relay and the web app drop a repeat), and no phone number appears in ids or logs.
 * @param {string} whatsappId
 */
export function messageEventId(whatsappId) {
  return `message-${createHash('sha256').update(whatsappId).digest('hex').slice(0, 32)}`;
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** @type {Promise<any> | null} */
let qrcodeModule = null;

/** @param {string} text */
async function toPngDataUrl(text) {
  // Loaded on first use, so the module works for senders that never see a QR code.
  qrcodeModule ??= import('qrcode');
  const mod = await qrcodeModule;
  const QRCode = mod.default ?? mod;
  return /** @type {Promise<string>} */ (QRCode.toDataURL(text));
}

/**
 * `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date (IMF-fixdate, or the
 * obsolete RFC 850 and asctime forms). Returns milliseconds from `now` (0 for a past date), or
 * undefined for anything else (`1.5`, `-1`, an ISO date, …).
 * @param {string | null} value
 * @param {number} [now]
 * @returns {number | undefined}
 */
export function parseRetryAfter(value, now = Date.now()) {
  if (typeof value !== 'string') return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = parseHttpDate(trimmed);
  return date === undefined ? undefined : Math.max(0, date - now);
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const MONTH = MONTHS.join('|');
const IMF_FIXDATE = new RegExp(`^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\\d{2}) (${MONTH}) (\\d{4}) (\\d{2}):(\\d{2}):(\\d{2}) GMT$`);
const RFC850_DATE = new RegExp(`^(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), (\\d{2})-(${MONTH})-(\\d{2}) (\\d{2}):(\\d{2}):(\\d{2}) GMT$`);
const ASCTIME_DATE = new RegExp(`^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (${MONTH}) ( \\d|\\d{2}) (\\d{2}):(\\d{2}):(\\d{2}) (\\d{4})$`);

/**
 * An HTTP-date in milliseconds since the epoch, or undefined.
 * @param {string} text
 * @returns {number | undefined}
 */
function parseHttpDate(text) {
  /** @type {[string, string, string, string, string, string] | undefined} day, month, year, h, m, s */
  let parts;
  let m = IMF_FIXDATE.exec(text);
  if (m) parts = [m[1], m[2], m[3], m[4], m[5], m[6]];
  else if ((m = RFC850_DATE.exec(text))) {
    // A two-digit year more than 50 years in the future is the most recent past such year.
    const thisYear = new Date().getUTCFullYear();
    let year = Math.floor(thisYear / 100) * 100 + Number(m[3]);
    if (year > thisYear + 50) year -= 100;
    parts = [m[1], m[2], String(year), m[4], m[5], m[6]];
  } else if ((m = ASCTIME_DATE.exec(text))) parts = [m[2].trim(), m[1], m[6], m[3], m[4], m[5]];
  if (!parts) return undefined;
  const [day, month, year, hour, minute, second] = parts.map((p, i) => (i === 1 ? MONTHS.indexOf(p) : Number(p)));
  if (hour > 23 || minute > 59 || second > 60 || day < 1) return undefined;
  const time = Date.UTC(year, month, day, hour, minute, second);
  if (new Date(time).getUTCDate() !== day) return undefined; // 31 Feb and the like
  return time;
}

/**
 * At most MAX_RESPONSE_BYTES of an answer's body, read before `deadline`; whatever is left is
 * cancelled (the connection is not kept busy by a body that never ends). Never throws.
 * @param {Response} response
 * @param {number} deadline epoch ms
 * @returns {Promise<string>}
 */
async function readText(response, deadline) {
  /** @type {ReadableStreamDefaultReader<Uint8Array> | undefined} */
  let reader;
  try {
    reader = response.body?.getReader();
  } catch {
    // locked or not a web stream
  }
  if (!reader) return '';
  const timedOut = Symbol('timed out');
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  const expiry = new Promise((resolve) => {
    timer = setTimeout(resolve, Math.max(0, deadline - Date.now()), timedOut);
  });
  /** @type {Uint8Array[]} */
  const chunks = [];
  let size = 0;
  try {
    while (size < MAX_RESPONSE_BYTES) {
      const next = await Promise.race([reader.read(), expiry]);
      if (next === timedOut || next.done) break;
      if (!(next.value instanceof Uint8Array)) break;
      const chunk = next.value.subarray(0, MAX_RESPONSE_BYTES - size);
      chunks.push(chunk);
      size += chunk.length;
    }
  } catch {
    // aborted (the attempt's timeout) or a broken connection: keep what was read
  } finally {
    clearTimeout(timer);
    try {
      // Not awaited: a stream that never settles its cancel must not hold the attempt.
      reader.cancel().catch(() => {});
    } catch {
      // already released
    }
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  return new TextDecoder().decode(bytes);
}

/**
 * The relay's JSON error body, for a log line: its `error` code, and the `path` and `expected`
 * of a 422. Never its free-text `message` (it may quote part of the event, e.g. a phone
 * number), and of `expected` only the part before ", found …" (which quotes the value). Control
 * and bidi characters are removed (no forged log lines) and each part is capped.
 * @param {string} text
 */
function describeRefusal(text) {
  /** @type {any} */
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    return ''; // not JSON
  }
  if (!body || typeof body !== 'object') return '';
  const code = typeof body.error === 'string' ? body.error.replace(/[^A-Za-z0-9_.-]/g, '').slice(0, 64) : '';
  const path = logSafe(body.path, 120);
  const expected = typeof body.expected === 'string' ? logSafe(body.expected.split(', found')[0], 160) : '';
  if (!code) return '';
  return `: ${code}${expected ? `: ${expected}` : ''}${path ? ` (at ${path})` : ''}`;
}

/**
 * A string from a peer, fit for one log line: control, line-separator and bidi characters
 * removed, at most `max` characters.
 * @param {unknown} value
 * @param {number} max
 */
function logSafe(value, max) {
  if (typeof value !== 'string') return '';
  return value
    .replace(/[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]/g, '')
    .slice(0, max);
}

/**
 * WEBHOOK_URL at start: not http(s) → sending off (an error); a path that is not the relay's
 * `/events` → a warning. The URL itself is never logged (it may carry a token).
 * @param {string} url
 * @param {Required<Logger>} log
 * @returns {boolean} whether sending can go on
 */
function checkUrl(url, log) {
  /** @type {URL} */
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    log.error('[relay-sender] WEBHOOK_URL is not a valid URL: events are not sent');
    return false;
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    log.error('[relay-sender] WEBHOOK_URL is not an http(s) URL: events are not sent');
    return false;
  }
  if (parsed.pathname.endsWith('/events/batch')) {
    log.warn('[relay-sender] WEBHOOK_URL ends in /events/batch, but this sender posts one event per request: use the relay\'s /events route (the batch route refuses a single event with 422)');
  } else if (!parsed.pathname.endsWith('/events')) {
    log.warn('[relay-sender] WEBHOOK_URL does not end in /events: is it the relay\'s ingest URL (https://…/events)? Another server (e.g. the app\'s old route) does not answer 202, and its answers are not counted as delivered');
  }
  return true;
}

/**
 * @param {unknown} err
 * @param {number} timeoutMs
 */
function networkError(err, timeoutMs) {
  const e = /** @type {any} */ (err);
  if (e && (e.name === 'TimeoutError' || e.name === 'AbortError')) return `timed out after ${timeoutMs} ms`;
  const code = e?.cause?.code ?? e?.code;
  return code ? `network error ${code}` : `network error (${errorName(err)})`;
}

/** Name and message of an error, for logs (never data). */
function errorName(/** @type {unknown} */ err) {
  if (err instanceof Error) return `${err.name}: ${err.message}`.slice(0, 300);
  return typeof err;
}

/**
 * @param {unknown} value
 * @param {number} fallback
 */
function positive(value, fallback) {
  return typeof value === 'number' && value > 0 ? value : fallback;
}

/**
 * @param {unknown} value
 * @param {number} fallback
 */
function nonNegative(value, fallback) {
  return typeof value === 'number' && value >= 0 ? value : fallback;
}

/**
 * @param {string} value
 * @param {number} maxLen
 */
function validSqsId(value, maxLen) {
  return typeof value === 'string' && value.length > 0 && value.length <= maxLen && SQS_ID.test(value);
}

/**
 * A logger that never throws and always has all four levels.
 * @param {Logger} logger
 * @returns {Required<Logger>}
 */
function safeLogger(logger) {
  /** @param {'debug' | 'info' | 'warn' | 'error'} level */
  const level = (level) => (/** @type {unknown[]} */ ...args) => {
    try {
      const fn = logger[level] ?? logger.warn ?? logger.error;
      if (typeof fn === 'function') fn.apply(logger, args);
    } catch {
      // a broken logger must not break delivery
    }
  };
  return { debug: level('debug'), info: level('info'), warn: level('warn'), error: level('error') };
}
