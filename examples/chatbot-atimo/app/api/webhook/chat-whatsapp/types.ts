// The events chat-whatsapp sends through the relay (the relay's docs/contract.md), as a
// discriminated union on `event`. Shapes follow the relay's validation at ingest: a delivery
// signed by the relay has these fields with these types. Unknown extra fields are allowed
// everywhere (the relay forwards the sender's body byte for byte), hence the index signatures.

export type EventType = "status" | "qr" | "message";

export interface ClientInfo {
  /** The connected account, e.g. "5511999990000@c.us". */
  wid: string;
  pushname: string;
  platform: string;
  [extra: string]: unknown;
}

export interface StatusData {
  connected: boolean;
  authenticated?: boolean;
  /** Set on `auth_failure`. */
  error?: string;
  /** Set on `disconnected`. */
  reason?: string;
  /** Set on `ready`. */
  clientInfo?: ClientInfo;
  qrAvailable?: boolean;
  [extra: string]: unknown;
}

export interface QrData {
  /** "data:image/png;base64,…": a login credential. Show it; never log it. */
  qr: string;
  available: boolean;
  [extra: string]: unknown;
}

export interface ChatMessage {
  /** The WhatsApp message id (`msg.id._serialized`). */
  id: string;
  from: string;
  to: string;
  /** Message text: personal data, never log it. */
  content: string;
  /** "text", or whatsapp-web.js's type for media ("image", "ptt", …). */
  type: "text" | (string & {});
  direction: "incoming" | "outgoing";
  /** RFC 3339. */
  timestamp: string;
  status: "received" | "sent" | (string & {});
  [extra: string]: unknown;
}

export interface MessageData {
  message: ChatMessage;
  [extra: string]: unknown;
}

interface EnvelopeBase {
  /** RFC 3339 time the sender created the event. */
  timestamp: string;
  /** Sender-chosen idempotency key; the relay's event id (and `webhook-id`) when present. */
  id?: string;
  /** WhatsApp session name; absent means "default". */
  session?: string;
  [extra: string]: unknown;
}

export interface StatusEvent extends EnvelopeBase {
  event: "status";
  data: StatusData;
}

export interface QrEvent extends EnvelopeBase {
  event: "qr";
  data: QrData;
}

export interface MessageEvent extends EnvelopeBase {
  event: "message";
  data: MessageData;
}

/** Every event the relay delivers. Narrow on `event`. */
export type RelayEvent = StatusEvent | QrEvent | MessageEvent;

/** What a handler knows about the delivery besides the event. */
export interface DeliveryContext {
  /** The `webhook-id` header: the relay's event id, the same on every retry. */
  webhookId: string;
  /** The `webhook-timestamp` header (this attempt's signing time). */
  webhookTimestamp: Date;
  /** The raw body as received (already verified). */
  rawBody: string;
  request: Request;
}

type Handler<E> = (event: E, context: DeliveryContext) => void | Promise<void>;

/**
 * One function per event type. A handler that throws (or rejects) makes the route answer 500,
 * so the relay retries the delivery later; a missing handler acknowledges the event unhandled.
 * Keep handlers short: the relay waits 5 s per attempt.
 */
export interface EventHandlers {
  status?: Handler<StatusEvent>;
  qr?: Handler<QrEvent>;
  message?: Handler<MessageEvent>;
}

/** What {@link IdempotencyStore.claim} found. */
export type ClaimResult =
  /**
   * The id was free: this caller now holds it and handles the event. `token` names this claim:
   * `complete` and `release` act only while the stored claim is still this one.
   */
  | { status: "claimed"; token: string }
  /** Another delivery of this id holds a claim and is being handled right now. */
  | { status: "in_progress" }
  /** This id was handled successfully before. */
  | { status: "done" };

/**
 * Makes sure each `webhook-id` is handled once, even when the relay's copies of it arrive at
 * the same time. In memory by default (per server instance); back it with Redis / Vercel KV
 * in production (`createRedisStore`, see README.md).
 *
 * A claim is owned: a handler that outlives its lease must not, when it finally ends, delete
 * or overwrite the claim a later copy took meanwhile. So `complete` and `release` compare the
 * stored value with the claim's token and change it in the same atomic step.
 */
export interface IdempotencyStore {
  /**
   * Atomically: if `id` is unknown, record it as in progress for `leaseSeconds` under a new
   * unguessable token and answer `{status: "claimed", token}`; otherwise answer what it is.
   * Check and record must be one step (a set-if-absent, e.g. Redis `SET key token NX EX
   * leaseSeconds`), or two concurrent copies both get "claimed".
   */
  claim(id: string, leaseSeconds: number): ClaimResult | Promise<ClaimResult>;
  /**
   * The handler succeeded: remember `id` as done for at least `ttlSeconds`, if the stored claim
   * is still `token`'s or there is none any more (its lease ended and no other copy claimed
   * it). Another copy's claim in progress is left alone. One atomic step.
   */
  complete(id: string, ttlSeconds: number, token: string): void | Promise<void>;
  /**
   * The handler failed: forget the claim, so the relay's retry is handled, only if the stored
   * claim is still `token`'s (never another copy's claim, never a done id). One atomic step.
   */
  release(id: string, token: string): void | Promise<void>;
}
