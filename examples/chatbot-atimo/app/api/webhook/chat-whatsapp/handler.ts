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
/** Entries kept by the in-memory store before the oldest are forgotten. */
export const DEFAULT_MEMORY_STORE_MAX_ENTRIES = 10_000;

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
  const entries = new Map<string, { done: boolean; expiresAt: number }>(); // insertion order = age

  function prune(): void {
    const t = now();
    for (const [id, entry] of entries) {
      if (entries.size <= maxEntries && entry.expiresAt > t) break;
      entries.delete(id);
    }
  }

  function live(id: string): { done: boolean; expiresAt: number } | undefined {
    const entry = entries.get(id);
    if (entry && entry.expiresAt <= now()) {
      entries.delete(id);
      return undefined;
    }
    return entry;
  }

  function put(id: string, done: boolean, seconds: number): void {
    entries.delete(id); // re-insert at the young end
    entries.set(id, { done, expiresAt: now() + seconds * 1000 });
    prune();
  }

  return {
    claim(id: string, leaseSeconds: number): ClaimResult {
      const entry = live(id);
      if (entry) return entry.done ? "done" : "in_progress";
      put(id, false, leaseSeconds);
      return "claimed";
    },
    complete(id: string, ttlSeconds: number): void {
      put(id, true, ttlSeconds);
    },
    release(id: string): void {
      if (entries.get(id)?.done === false) entries.delete(id);
    },
  };
}

/**
 * The commands {@link createRedisStore} needs, as `@upstash/redis` and `@vercel/kv` name them:
 * `set(key, value, {nx: true, ex})` answers "OK" when it set the key and null when the key
 * already existed. For `ioredis` / `node-redis`, wrap `SET key value EX ttl NX`, `GET`, `DEL`.
 */
export interface RedisLike {
  set(key: string, value: string, options: { ex: number; nx?: true }): Promise<unknown>;
  get(key: string): Promise<unknown>;
  del(key: string): Promise<unknown>;
}

/** The value of a key whose handler succeeded (a claim in progress holds "processing"). */
const DONE = "done";

/**
 * A shared {@link IdempotencyStore} on Redis / Vercel KV. `claim` is one `SET key processing
 * NX EX lease`: Redis sets it for exactly one of any number of concurrent callers, on any
 * number of instances. `complete` overwrites it with `done` for the dedupe TTL; `release`
 * deletes it.
 */
export function createRedisStore(redis: RedisLike, options: { prefix?: string } = {}): IdempotencyStore {
  const prefix = options.prefix ?? "webhook:chat-whatsapp:";
  return {
    async claim(id: string, leaseSeconds: number): Promise<ClaimResult> {
      const key = prefix + id;
      if ((await redis.set(key, "processing", { nx: true, ex: leaseSeconds })) === "OK") return "claimed";
      // Someone holds it. Gone again by now (released or expired): still "in_progress", so the
      // relay retries later rather than the event being dropped as a duplicate.
      return (await redis.get(key)) === DONE ? "done" : "in_progress";
    },
    async complete(id: string, ttlSeconds: number): Promise<void> {
      await redis.set(prefix + id, DONE, { ex: ttlSeconds });
    },
    async release(id: string): Promise<void> {
      await redis.del(prefix + id);
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
 * - 200 `{status:"ok"}`: verified, new, handled (or no handler for that type);
 * - 200 `{status:"duplicate"}`: this `webhook-id` was already processed, handler not called;
 * - 409 `{error:"in_progress"}`: another delivery of this `webhook-id` is being handled right
 *   now; the relay retries later and then gets "ok"/"duplicate" (or, if that handler failed,
 *   the retry is handled);
 * - 200 `{status:"ignored"}`: an event type this code does not know (a newer sender): it is
 *   acknowledged so the relay does not retry it, and so it does not hold up later events of
 *   its FIFO group;
 * - 400: the signature is valid but the body is not JSON;
 * - 401: missing, wrong or stale (over 5 min) signature: nothing is processed;
 * - 422: a known event whose data breaks the contract (the relay validated it at ingest, so this
 *   means sender, relay and this code disagree: the relay retries it, then parks it in its
 *   DLQ, from where it can be redriven once the code is fixed);
 * - 500: the secret is not configured, or a handler threw: the relay retries later.
 */
export function createHandler(options: HandlerOptions = {}): (request: Request) => Promise<Response> {
  const store = options.store ?? createMemoryStore();
  const handlers = options.handlers ?? {};
  const ttlSeconds = options.dedupeTtlSeconds ?? DEFAULT_DEDUPE_TTL_SECONDS;
  const leaseSeconds = options.claimLeaseSeconds ?? DEFAULT_CLAIM_LEASE_SECONDS;
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

    const body = await request.text();
    const headers = {
      "webhook-id": request.headers.get("webhook-id") ?? "",
      "webhook-timestamp": request.headers.get("webhook-timestamp") ?? "",
      "webhook-signature": request.headers.get("webhook-signature") ?? "",
    };
    const missing = Object.entries(headers)
      .filter(([, value]) => !value)
      .map(([name]) => name);
    if (missing.length > 0) {
      return json(401, { error: "unauthorized", message: `missing header(s): ${missing.join(", ")}` });
    }
    const failure = verify(webhooks, body, headers);
    if (failure) {
      log.warn(`[webhook] refused a delivery: ${failure}`);
      return json(401, { error: "unauthorized", message: failure });
    }

    // The id is covered by the signature: only the relay can choose it. It is claimed before
    // anything is handled, in one atomic step, so concurrent copies cannot both run.
    const webhookId = headers["webhook-id"];
    const claim = await claimId(webhookId);
    if (claim === "done") {
      log.info(`[webhook] duplicate ${webhookId}: already processed`);
      return json(200, { status: "duplicate", id: webhookId });
    }
    if (claim === "in_progress") {
      log.info(`[webhook] ${webhookId} is being handled by another delivery: answering 409 so the relay retries`);
      return json(409, {
        error: "in_progress",
        id: webhookId,
        message: "another delivery of this webhook-id is being handled now; retry later",
      });
    }

    let response: Response;
    try {
      response = await handleClaimed(webhookId, body, headers["webhook-timestamp"], request);
    } catch (err) {
      log.error(`[webhook] unexpected error for ${webhookId}: ${describe(err)}`);
      response = json(500, { error: "handler_failed", id: webhookId });
    }
    // Kept after success (the relay's redeliveries become duplicates); released otherwise, so
    // the relay's retry is handled for real.
    if (response.ok) await settle(webhookId, "complete");
    else await settle(webhookId, "release");
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
      return json(200, { status: "ok", id: webhookId, event: event.event, handled });
    } catch (err) {
      // Never the event's data in logs: the error's name and message only.
      log.error(`[webhook] ${event.event} handler failed for ${webhookId}: ${describe(err)}`);
      return json(500, { error: "handler_failed", id: webhookId });
    }
  }

  async function claimId(id: string): Promise<ClaimResult> {
    try {
      return await store.claim(id, leaseSeconds);
    } catch (err) {
      // Better to process twice than to lose an event: handlers should tolerate a repeat.
      log.warn(`[webhook] idempotency store unavailable (${describe(err)}): processing ${id} anyway`);
      return "claimed";
    }
  }

  async function settle(id: string, how: "complete" | "release"): Promise<void> {
    try {
      if (how === "complete") await store.complete(id, ttlSeconds);
      else await store.release(id);
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

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json" },
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
