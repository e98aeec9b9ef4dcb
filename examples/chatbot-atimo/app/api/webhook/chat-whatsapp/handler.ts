// The webhook logic behind route.ts: verify (Standard Webhooks), drop duplicates, parse, dispatch.
//
// It lives beside route.ts rather than in it because Next.js only allows HTTP methods and
// route config as exports of a route file; this module exports `createHandler` for tests and
// for apps that wire their own store and handlers.
//
// Uses only web-standard Request/Response, so it runs on the Node.js and Edge runtimes and
// type-checks without the `next` package.

import { Webhook, WebhookVerificationError } from "standardwebhooks";
import type {
  DeliveryContext,
  EventHandlers,
  IdempotencyStore,
  RelayEvent,
} from "./types";

export type { DeliveryContext, EventHandlers, IdempotencyStore, RelayEvent } from "./types";

/** How long a processed `webhook-id` is remembered: longer than the relay's retry horizon. */
export const DEFAULT_DEDUPE_TTL_SECONDS = 2 * 24 * 60 * 60;
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
 * A bounded in-memory {@link IdempotencyStore}: entries expire after their TTL and the oldest
 * go first when `maxEntries` is reached. It lives as long as the server instance does: on
 * Vercel, each instance has its own and a cold start begins empty. Use Redis / KV to share it.
 */
export function createMemoryStore(options: MemoryStoreOptions = {}): IdempotencyStore {
  const maxEntries = Math.max(1, options.maxEntries ?? DEFAULT_MEMORY_STORE_MAX_ENTRIES);
  const now = options.now ?? Date.now;
  const expiries = new Map<string, number>(); // insertion order = age

  function prune(): void {
    const t = now();
    for (const [id, expiresAt] of expiries) {
      if (expiries.size <= maxEntries && expiresAt > t) break;
      expiries.delete(id);
    }
  }

  return {
    has(id: string): boolean {
      const expiresAt = expiries.get(id);
      if (expiresAt === undefined) return false;
      if (expiresAt <= now()) {
        expiries.delete(id);
        return false;
      }
      return true;
    },
    add(id: string, ttlSeconds: number): void {
      expiries.delete(id); // re-insert at the young end
      expiries.set(id, now() + ttlSeconds * 1000);
      prune();
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
 * Checks a parsed body against SPEC §2 (the same rules the relay applies at ingest) and types
 * it. An `event` name this code does not know is reported as `unknown`, not `invalid`.
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

    // The id is covered by the signature: only the relay can choose it.
    const webhookId = headers["webhook-id"];
    if (await seen(webhookId)) {
      log.info(`[webhook] duplicate ${webhookId}: already processed`);
      return json(200, { status: "duplicate", id: webhookId });
    }

    let value: unknown;
    try {
      value = JSON.parse(body);
    } catch (err) {
      return json(400, { error: "malformed_json", message: err instanceof Error ? err.message : "invalid JSON" });
    }
    const parsed = parseEnvelope(value);
    if (parsed.kind === "unknown") {
      log.warn(`[webhook] ignored ${webhookId}: unknown event type "${parsed.eventName.slice(0, 40)}"`);
      await remember(webhookId);
      return json(200, { status: "ignored", id: webhookId, reason: "unknown event type" });
    }
    if (parsed.kind === "invalid") {
      log.error(`[webhook] ${webhookId} breaks the contract at ${parsed.path}: expected ${parsed.expected}`);
      return json(422, { error: "schema_violation", path: parsed.path, expected: parsed.expected });
    }

    const event = parsed.event;
    const context: DeliveryContext = {
      webhookId,
      webhookTimestamp: new Date(Number(headers["webhook-timestamp"]) * 1000),
      rawBody: body,
      request,
    };
    try {
      const handled = await dispatch(handlers, event, context);
      await remember(webhookId);
      return json(200, { status: "ok", id: webhookId, event: event.event, handled });
    } catch (err) {
      // Never the event's data in logs: the error's name and message only.
      log.error(`[webhook] ${event.event} handler failed for ${webhookId}: ${describe(err)}`);
      return json(500, { error: "handler_failed", id: webhookId });
    }
  };

  async function seen(id: string): Promise<boolean> {
    try {
      return await store.has(id);
    } catch (err) {
      // Better to process twice than to lose an event: handlers should tolerate a repeat.
      log.warn(`[webhook] idempotency store unavailable (${describe(err)}): processing ${id} anyway`);
      return false;
    }
  }

  async function remember(id: string): Promise<void> {
    try {
      await store.add(id, ttlSeconds);
    } catch (err) {
      log.warn(`[webhook] idempotency store unavailable (${describe(err)}): ${id} not remembered`);
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
