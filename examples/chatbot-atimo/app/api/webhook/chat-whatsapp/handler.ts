// The webhook logic behind route.ts: verify (Standard Webhooks), claim the webhook-id (drop
// duplicates), parse, dispatch, then keep the claim (success) or release it (failure).
//
// It lives beside route.ts rather than in it because Next.js only allows HTTP methods and
// route config as exports of a route file; this module exports `createHandler` for tests and
// for apps that wire their own store and handlers.
//
// Uses only web-standard Request/Response, so it runs on the Node.js and Edge runtimes and
// type-checks without the `next` package.

import { Webhook, WebhookVerificationError } from "standardwebhooks";
import type {
  ClaimResult,
  DeliveryContext,
  EventHandlers,
  IdempotencyStore,
  RelayEvent,
} from "./types";

export type { ClaimResult, DeliveryContext, EventHandlers, IdempotencyStore, RelayEvent } from "./types";

/** How long a processed `webhook-id` is remembered: longer than the relay's retry horizon. */
export const DEFAULT_DEDUPE_TTL_SECONDS = 2 * 24 * 60 * 60;
/**
 * How long a claim on a `webhook-id` holds while its handler runs. Longer than a handler may
 * take (the relay waits 5 s per attempt); short enough that a server that died mid-handler
 * does not hide the event from the relay's next retries for long.
 */
export const DEFAULT_CLAIM_LEASE_SECONDS = 60;

/** A handler still running after this long is answered 503 (see `handlerTimeoutMs`). */
export const DEFAULT_HANDLER_TIMEOUT_MS = 4_000;
/** Entries kept by the in-memory store before the oldest are forgotten. */
export const DEFAULT_MEMORY_STORE_MAX_ENTRIES = 10_000;
/**
 * The largest body read: the relay forwards an event's bytes as the sender sent them, at most
 * 1 MiB (docs/contract.md), plus a margin. Anything longer is refused with 413 unread.
 */
export const DEFAULT_MAX_BODY_BYTES = 1_048_576 + 64 * 1024;

export interface Logger {
  info(...args: unknown[]): void;
  warn(...args: unknown[]): void;
  error(...args: unknown[]): void;
}

export interface HandlerOptions {
  /**
   * The relay's WEBHOOK secret(s), `whsec_…`: a string (several may be space-separated during
   * a rotation) or a list. Default: `process.env.WEBHOOK_SECRET`, read at each request.
   */
  secret?: string | string[];
  /** Where processed ids are remembered. Default: a new in-memory store. */
  store?: IdempotencyStore;
  /** One function per event type. */
  handlers?: EventHandlers;
  /** Default {@link DEFAULT_DEDUPE_TTL_SECONDS}. */
  dedupeTtlSeconds?: number;
  /** Default {@link DEFAULT_CLAIM_LEASE_SECONDS}. */
  claimLeaseSeconds?: number;
  /**
   * How long a handler may run before the route answers 503 (the claim stays until its lease
   * ends, so no other copy runs meanwhile). Default 4 s, below the relay's per-attempt timeout
   * (`DELIVERY_TIMEOUT_MS`, at most 5 s), so the relay reads the 503 and its `Retry-After`
   * rather than timing out; keep it below that timeout if you set it. At most 9/10 of the lease.
   */
  handlerTimeoutMs?: number;
  /** Bodies longer than this are refused with 413 without being read further. Default {@link DEFAULT_MAX_BODY_BYTES}. */
  maxBodyBytes?: number;
  /** Default: console. Only event types and ids are logged, never QR data or message text. */
  logger?: Logger;
}

export interface MemoryStoreOptions {
  /** Upper bound of entries; the oldest are forgotten first. */
  maxEntries?: number;
  /** Clock, for tests. */
  now?: () => number;
}

/**
 * A bounded in-memory {@link IdempotencyStore}. `claim` checks and records in one synchronous
 * step, so two concurrent deliveries of one id cannot both get "claimed". Entries expire
 * (claims after their lease, processed ids after their TTL) and the oldest go first when
 * `maxEntries` is reached. It lives as long as the server instance does: on Vercel, each
 * instance has its own and a cold start begins empty. Use Redis / KV to share it.
 */
export function createMemoryStore(options: MemoryStoreOptions = {}): IdempotencyStore {
  const maxEntries = Math.max(1, options.maxEntries ?? DEFAULT_MEMORY_STORE_MAX_ENTRIES);
  const now = options.now ?? Date.now;
  // token: the claim's owner while in progress; null once done. Insertion order = age.
  const entries = new Map<string, { token: string | null; expiresAt: number }>();

  function prune(): void {
    const t = now();
    for (const [id, entry] of entries) {
      if (entries.size <= maxEntries && entry.expiresAt > t) break;
      entries.delete(id);
    }
  }

  function live(id: string): { token: string | null; expiresAt: number } | undefined {
    const entry = entries.get(id);
    if (entry && entry.expiresAt <= now()) {
      entries.delete(id);
      return undefined;
    }
    return entry;
  }

  function put(id: string, token: string | null, seconds: number): void {
    entries.delete(id); // re-insert at the young end
    entries.set(id, { token, expiresAt: now() + seconds * 1000 });
    prune();
  }

  return {
    claim(id: string, leaseSeconds: number): ClaimResult {
      const entry = live(id);
      if (entry) return entry.token === null ? { status: "done" } : { status: "in_progress" };
      const token = newClaimToken();
      put(id, token, leaseSeconds);
      return { status: "claimed", token };
    },
    complete(id: string, ttlSeconds: number, _token: string): void {
      // The event was handled: done, whoever holds the id now. A later copy's claim may be
      // overwritten (its own complete/release then find another token and do nothing); an id
      // already done keeps its TTL. The token matters for `release` only.
      if (live(id)?.token === null) return;
      put(id, null, ttlSeconds);
    },
    release(id: string, token: string): void {
      if (live(id)?.token === token) entries.delete(id);
    },
  };
}

/** An unguessable name for one claim. */
function newClaimToken(): string {
  return `claim:${globalThis.crypto.randomUUID()}`;
}

/**
 * The commands {@link createRedisStore} needs, as `@upstash/redis` and `@vercel/kv` name them:
 * `set(key, value, {nx: true, ex})` answers "OK" when it set the key and null when the key
 * already existed; `eval(script, keys, args)` runs a Lua script atomically. For `ioredis` /
 * `node-redis`, wrap `SET key value EX ttl NX`, `GET` and `EVAL script 1 key ...args`.
 */
export interface RedisLike {
  set(key: string, value: string, options: { ex: number; nx?: true }): Promise<unknown>;
  get(key: string): Promise<unknown>;
  eval(script: string, keys: string[], args: string[]): Promise<unknown>;
}

/** The value of a key whose handler succeeded (a claim in progress holds its token). */
const DONE = "done";

/**
 * `complete`: KEYS[1] becomes ARGV[3] ("done") for ARGV[2] seconds unless it is done already:
 * the event was handled, whoever holds the id now (a later copy's claim included: its own
 * complete/release then find another value and do nothing). ARGV[1], the claim's token, is
 * not needed here. 1 if set, else 0.
 */
export const REDIS_COMPLETE_SCRIPT = `local current = redis.call('GET', KEYS[1])
if current ~= ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[2])
  return 1
end
return 0`;

/** `release`: deletes KEYS[1] only if it still holds the claim ARGV[1]. 1 if deleted, else 0. */
export const REDIS_RELEASE_SCRIPT = `if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`;

/**
 * A shared {@link IdempotencyStore} on Redis / Vercel KV. `claim` is one `SET key <token> NX
 * EX lease`: Redis sets it for exactly one of any number of concurrent callers, on any number
 * of instances. `complete` (the key becomes `done` for the dedupe TTL) and `release` (the key
 * is deleted) are Lua scripts that first check the key still holds this claim's token, in the
 * same atomic step: a handler that outlived its lease cannot undo a later copy's claim.
 */
export function createRedisStore(redis: RedisLike, options: { prefix?: string } = {}): IdempotencyStore {
  const prefix = options.prefix ?? "webhook:chat-whatsapp:";
  return {
    async claim(id: string, leaseSeconds: number): Promise<ClaimResult> {
      const key = prefix + id;
      const token = newClaimToken();
      if ((await redis.set(key, token, { nx: true, ex: leaseSeconds })) === "OK") return { status: "claimed", token };
      // Someone holds it. Gone again by now (released or expired): still "in_progress", so the
      // relay retries later rather than the event being dropped as a duplicate.
      return (await redis.get(key)) === DONE ? { status: "done" } : { status: "in_progress" };
    },
    async complete(id: string, ttlSeconds: number, token: string): Promise<void> {
      await redis.eval(REDIS_COMPLETE_SCRIPT, [prefix + id], [token, String(ttlSeconds), DONE]);
    },
    async release(id: string, token: string): Promise<void> {
      await redis.eval(REDIS_RELEASE_SCRIPT, [prefix + id], [token]);
    },
  };
}

/** The result of checking a parsed body against the envelope contract. */
export type ParseResult =
  | { kind: "event"; event: RelayEvent }
  | { kind: "unknown"; eventName: string }
  | { kind: "invalid"; path: string; expected: string };

const KNOWN_EVENTS = new Set(["status", "qr", "message"]);

/**
 * Checks a parsed body against the envelope rules (the relay's docs/contract.md, the same rules
 * the relay applies at ingest) and types it. An `event` name this code does not know is
 * reported as `unknown`, not `invalid`.
 */
export function parseEnvelope(value: unknown): ParseResult {
  if (!isObject(value)) return invalid("body", "a JSON object (the event envelope)");
  if (typeof value.event !== "string") return invalid("event", "a string");
  if (!KNOWN_EVENTS.has(value.event)) return { kind: "unknown", eventName: value.event };
  if (typeof value.timestamp !== "string") return invalid("timestamp", "an RFC 3339 string");
  for (const field of ["id", "session"] as const) {
    if (value[field] != null && typeof value[field] !== "string") return invalid(field, "a string");
  }
  const data = value.data;
  if (!isObject(data)) return invalid("data", "an object");

  switch (value.event) {
    case "status": {
      if (typeof data.connected !== "boolean") return invalid("data.connected", "true or false");
      for (const field of ["authenticated", "qrAvailable"] as const) {
        if (data[field] != null && typeof data[field] !== "boolean") {
          return invalid(`data.${field}`, "true or false");
        }
      }
      for (const field of ["error", "reason"] as const) {
        if (data[field] != null && typeof data[field] !== "string") return invalid(`data.${field}`, "a string");
      }
      if (data.clientInfo != null) {
        if (!isObject(data.clientInfo)) return invalid("data.clientInfo", "an object");
        for (const field of ["wid", "pushname", "platform"] as const) {
          if (typeof data.clientInfo[field] !== "string") return invalid(`data.clientInfo.${field}`, "a string");
        }
      }
      break;
    }
    case "qr": {
      if (typeof data.qr !== "string") return invalid("data.qr", "a string");
      if (typeof data.available !== "boolean") return invalid("data.available", "true or false");
      break;
    }
    case "message": {
      const message = data.message;
      if (!isObject(message)) return invalid("data.message", "an object");
      for (const field of ["id", "from", "to", "content", "type", "timestamp", "status"] as const) {
        if (typeof message[field] !== "string") return invalid(`data.message.${field}`, "a string");
      }
      if (message.direction !== "incoming" && message.direction !== "outgoing") {
        return invalid("data.message.direction", '"incoming" or "outgoing"');
      }
      break;
    }
  }
  // Every field the union promises was checked above.
  return { kind: "event", event: value as unknown as RelayEvent };
}

/**
 * Builds the route's POST function.
 *
 * Answers (JSON bodies):
 * - 200 `{status:"ok"}`: verified, new, handled (or no handler for that type: a warning is
 *   logged);
 * - 200 `{status:"duplicate"}`: this `webhook-id` was already processed, handler not called;
 * - 409 `{error:"in_progress"}`: another delivery of this `webhook-id` is being handled right
 *   now; the relay retries later and then gets "ok"/"duplicate" (or, if that handler failed,
 *   the retry is handled);
 * - 200 `{status:"ignored"}`: an event type this code does not know (a newer sender): it is
 *   acknowledged so the relay does not retry it, and so it does not hold up later events of
 *   its FIFO group;
 * - 400: the signature is valid but the body is not JSON;
 * - 400 `{error:"unreadable_body"}`: the body could not be read (the connection broke);
 * - 401: missing, wrong or stale (over 5 min) signature: nothing is processed. Without the
 *   three webhook-* headers the body is not read at all;
 * - 413: a body over `maxBodyBytes` (the relay never sends one): refused, not read further;
 * - 422: a known event whose data breaks the contract (the relay validated it at ingest, so this
 *   means sender, relay and this code disagree). 422 is in the relay's default
 *   DEAD_LETTER_STATUSES (410 413 422): the event goes to its DLQ at this first answer, without
 *   retries, and can be redriven from there once the code is fixed;
 * - 500: the secret is not configured, or a handler threw: the relay retries later;
 * - 503 `{error:"handler_timeout"}` with `Retry-After`: the handler still runs after
 *   `handlerTimeoutMs`. Its claim stays until it ends (then kept as done, or released if it
 *   failed) or its lease does, so the relay's retry is a duplicate or handled anew.
 */
export function createHandler(options: HandlerOptions = {}): (request: Request) => Promise<Response> {
  const store = options.store ?? createMemoryStore();
  const handlers = options.handlers ?? {};
  const ttlSeconds = options.dedupeTtlSeconds ?? DEFAULT_DEDUPE_TTL_SECONDS;
  const leaseSeconds = options.claimLeaseSeconds ?? DEFAULT_CLAIM_LEASE_SECONDS;
  // Below the lease, so a handler that overruns is answered while its claim still holds.
  const handlerTimeoutMs = Math.min(options.handlerTimeoutMs ?? DEFAULT_HANDLER_TIMEOUT_MS, leaseSeconds * 900);
  const retryAfterSeconds = Math.max(1, Math.ceil(leaseSeconds - handlerTimeoutMs / 1000));
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const log: Logger = options.logger ?? console;
  const verifiers = new Map<string, Webhook[]>();

  function webhooksFor(secret: string | string[] | undefined): Webhook[] {
    const list = Array.isArray(secret) ? secret : (secret ?? "").split(/\s+/);
    const secrets = list.map((s) => s.trim()).filter(Boolean);
    const key = secrets.join(" ");
    let webhooks = verifiers.get(key);
    if (!webhooks) {
      webhooks = secrets.map((s) => new Webhook(s));
      verifiers.set(key, webhooks);
    }
    return webhooks;
  }

  return async function POST(request: Request): Promise<Response> {
    let webhooks: Webhook[];
    try {
      webhooks = webhooksFor(options.secret ?? readEnv("WEBHOOK_SECRET"));
    } catch {
      log.error("[webhook] WEBHOOK_SECRET is not a valid whsec_<base64> secret");
      return json(500, { error: "not_configured", message: "WEBHOOK_SECRET is not a valid whsec_ secret" });
    }
    if (webhooks.length === 0) {
      log.error("[webhook] WEBHOOK_SECRET is not set: refusing every delivery");
      return json(500, { error: "not_configured", message: "WEBHOOK_SECRET is not set" });
    }

    const headers = {
      "webhook-id": request.headers.get("webhook-id") ?? "",
      "webhook-timestamp": request.headers.get("webhook-timestamp") ?? "",
      "webhook-signature": request.headers.get("webhook-signature") ?? "",
    };
    const missing = Object.entries(headers)
      .filter(([, value]) => !value)
      .map(([name]) => name);
    if (missing.length > 0) {
      // Unsigned: not a byte of the body is read (the server discards what it does not read).
      return json(401, { error: "unauthorized", message: `missing header(s): ${missing.join(", ")}` });
    }
    const read = await readBody(request, maxBodyBytes);
    if (read.kind === "too_large") {
      log.warn(`[webhook] refused a delivery: body over ${maxBodyBytes} bytes`);
      return json(413, {
        error: "payload_too_large",
        limit: maxBodyBytes,
        message: `body is over the limit of ${maxBodyBytes} bytes`,
      });
    }
    if (read.kind === "unreadable") {
      log.warn(`[webhook] could not read a delivery's body: ${describe(read.error)}`);
      return json(400, { error: "unreadable_body", message: "the body could not be read" });
    }
    const body = read.text;
    const failure = verify(webhooks, body, headers);
    if (failure) {
      log.warn(`[webhook] refused a delivery: ${failure}`);
      return json(401, { error: "unauthorized", message: failure });
    }

    // The id is covered by the signature: only the relay can choose it. It is claimed before
    // anything is handled, in one atomic step, so concurrent copies cannot both run.
    const webhookId = headers["webhook-id"];
    const claim = await claimId(webhookId);
    if (claim.status === "done") {
      log.info(`[webhook] duplicate ${webhookId}: already processed`);
      return json(200, { status: "duplicate", id: webhookId });
    }
    if (claim.status === "in_progress") {
      log.info(`[webhook] ${webhookId} is being handled by another delivery: answering 409 so the relay retries`);
      return json(409, {
        error: "in_progress",
        id: webhookId,
        message: "another delivery of this webhook-id is being handled now; retry later",
      });
    }

    const token = claim.token;
    const outcome = handleClaimed(webhookId, body, headers["webhook-timestamp"], request).catch((err: unknown) => {
      log.error(`[webhook] unexpected error for ${webhookId}: ${describe(err)}`);
      return json(500, { error: "handler_failed", id: webhookId });
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), handlerTimeoutMs);
    });
    const response = await Promise.race([outcome, deadline]);
    clearTimeout(timer);
    if (!response) {
      // The handler still runs: its claim stays (no other copy may run alongside it) until it
      // ends or its lease does. The relay retries after Retry-After.
      log.warn(
        `[webhook] ${webhookId}: handler still running after ${handlerTimeoutMs} ms: answering 503; ` +
          "the claim holds until the handler ends or its lease does",
      );
      void outcome.then((late) => settle(webhookId, token, late.ok ? "complete" : "release"));
      return json(
        503,
        { error: "handler_timeout", id: webhookId, message: "the handler did not finish in time; retry later" },
        { "retry-after": String(retryAfterSeconds) },
      );
    }
    // Kept after success (the relay's redeliveries become duplicates); released otherwise, so
    // the relay's retry is handled for real.
    await settle(webhookId, token, response.ok ? "complete" : "release");
    return response;
  };

  /** Parse, check and dispatch an event whose id this request has claimed. */
  async function handleClaimed(webhookId: string, body: string, timestamp: string, request: Request): Promise<Response> {
    let value: unknown;
    try {
      value = JSON.parse(body);
    } catch (err) {
      return json(400, { error: "malformed_json", message: err instanceof Error ? err.message : "invalid JSON" });
    }
    const parsed = parseEnvelope(value);
    if (parsed.kind === "unknown") {
      log.warn(`[webhook] ignored ${webhookId}: unknown event type "${parsed.eventName.slice(0, 40)}"`);
      return json(200, { status: "ignored", id: webhookId, reason: "unknown event type" });
    }
    if (parsed.kind === "invalid") {
      log.error(`[webhook] ${webhookId} breaks the contract at ${parsed.path}: expected ${parsed.expected}`);
      return json(422, { error: "schema_violation", path: parsed.path, expected: parsed.expected });
    }

    const event = parsed.event;
    const context: DeliveryContext = {
      webhookId,
      webhookTimestamp: new Date(Number(timestamp) * 1000),
      rawBody: body,
      request,
    };
    try {
      const handled = await dispatch(handlers, event, context);
      if (!handled) {
        log.warn(`[webhook] no handler for "${event.event}" events: ${webhookId} acknowledged unhandled`);
      }
      return json(200, { status: "ok", id: webhookId, event: event.event, handled });
    } catch (err) {
      // Never the event's data in logs: the error's name and message only.
      log.error(`[webhook] ${event.event} handler failed for ${webhookId}: ${describe(err)}`);
      return json(500, { error: "handler_failed", id: webhookId });
    }
  }

  async function claimId(id: string): Promise<ClaimResult> {
    try {
      const result = await store.claim(id, leaseSeconds);
      if (result?.status === "claimed" && typeof result.token === "string") return result;
      if (result?.status === "done" || result?.status === "in_progress") return result;
      throw new TypeError("claim answered neither {status, token} nor done / in_progress");
    } catch (err) {
      // Better to process twice than to lose an event: handlers should tolerate a repeat. No
      // claim is held: `complete` may still record the id as done, `release` finds nothing.
      log.warn(`[webhook] idempotency store unavailable (${describe(err)}): processing ${id} anyway`);
      return { status: "claimed", token: "" };
    }
  }

  async function settle(id: string, token: string, how: "complete" | "release"): Promise<void> {
    try {
      if (how === "complete") await store.complete(id, ttlSeconds, token);
      else await store.release(id, token);
    } catch (err) {
      const outcome = how === "complete" ? "not remembered" : "claim not released (it expires with its lease)";
      log.warn(`[webhook] idempotency store unavailable (${describe(err)}): ${id} ${outcome}`);
    }
  }
}

/** Calls the handler for the event's type; false when there is none. */
async function dispatch(handlers: EventHandlers, event: RelayEvent, context: DeliveryContext): Promise<boolean> {
  switch (event.event) {
    case "status":
      if (!handlers.status) return false;
      await handlers.status(event, context);
      return true;
    case "qr":
      if (!handlers.qr) return false;
      await handlers.qr(event, context);
      return true;
    case "message":
      if (!handlers.message) return false;
      await handlers.message(event, context);
      return true;
  }
}

/** Null when one of the secrets verifies the body, else why not. */
function verify(webhooks: Webhook[], body: string, headers: Record<string, string>): string | null {
  let reason = "no matching signature";
  for (const webhook of webhooks) {
    try {
      webhook.verify(body, headers, { jsonParse: false });
      return null;
    } catch (err) {
      reason = err instanceof WebhookVerificationError || err instanceof Error ? err.message : reason;
    }
  }
  return reason;
}

type ReadResult = { kind: "ok"; text: string } | { kind: "too_large" } | { kind: "unreadable"; error: unknown };

/**
 * The body as UTF-8 text (as `request.text()` decodes it), read chunk by chunk and refused as
 * soon as it passes `limit` bytes: a declared Content-Length over the limit is refused unread,
 * and a longer stream is cancelled there, so no request holds more than `limit` in memory.
 */
async function readBody(request: Request, limit: number): Promise<ReadResult> {
  const declared = request.headers.get("content-length")?.trim();
  if (declared && /^\d+$/.test(declared) && Number(declared) > limit) return { kind: "too_large" };
  if (!request.body) return { kind: "ok", text: "" };
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > limit) {
        // Stop the stream here: nothing past the limit is read.
        reader.cancel().catch(() => {});
        return { kind: "too_large" };
      }
      chunks.push(value);
    }
  } catch (error) {
    reader.cancel().catch(() => {});
    return { kind: "unreadable", error };
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return { kind: "ok", text: new TextDecoder().decode(bytes) };
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

function invalid(path: string, expected: string): ParseResult {
  return { kind: "invalid", path, expected };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function readEnv(name: string): string | undefined {
  return typeof process !== "undefined" ? process.env[name] : undefined;
}

function describe(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}`.slice(0, 300) : typeof err;
}
