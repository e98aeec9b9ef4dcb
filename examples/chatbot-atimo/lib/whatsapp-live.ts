// The page's live view of one WhatsApp session, framework-agnostic (React wraps it in
// `useWhatsAppLive`): fetches a token from the app's `/api/live-token`, subscribes to the
// session's channel with the `aws-amplify` `events` client, and keeps a snapshot of what to
// show: the connection status, the QR while it is valid, the messages that arrived.
//
// The same code runs against AppSync Events on AWS and `relay local`: only the endpoint the
// token route returns differs (https://…/event; locally a TLS front, see the README).
//
// No replay: the relay pushes each event once, as it is accepted, and keeps nothing for a page
// that was not listening. So a page first loads the current state from the app (its database,
// fed by the webhook route), then listens here for what changes after that; after a reconnect
// it should load again, since events published while it was away are not sent later.

import { Amplify } from "aws-amplify";
import { CONNECTION_STATE_CHANGE, ConnectionState, events } from "aws-amplify/data";
import { Hub } from "aws-amplify/utils";
import type { ChatMessage, RelayEvent, StatusData } from "../app/api/webhook/chat-whatsapp/types";

/** What the token route answers (see app/api/live-token/token.ts). */
export interface LiveTokenInfo {
  token: string;
  endpoint: string;
  channel: string;
  /** Unix seconds. */
  expiresAt: number;
}

/** What the relay publishes for each accepted event. */
export interface LivePayload {
  /** The relay's event id (also the webhook delivery's `webhook-id`). */
  id: string;
  type: string;
  session: string;
  /** RFC 3339: when the relay accepted the event. */
  receivedAt: string;
  /** The event as the sender sent it; absent when it was too large to push live. */
  envelope?: RelayEvent;
  /** Set when the event was over the live size limit: fetch it from the app. */
  tooLarge?: boolean;
  notice?: string;
}

export type LiveStatus =
  | "connecting" // fetching a token, connecting, subscribing
  | "live" // subscribed: events arrive as they are accepted
  | "reconnecting" // the connection dropped; the client is reconnecting (events meanwhile are missed)
  | "refused" // the app or the relay refused the token, or an attempt timed out; retrying with a new one
  | "unauthenticated" // the app said 401/403: sign in (no retry)
  | "closed";

export interface LiveQr {
  /** A `data:image/png;base64,…` URL: a login credential. Show it; never log it. */
  image: string;
  /** Unix milliseconds after which it is dropped. */
  expiresAt: number;
}

export interface WhatsAppLiveState {
  status: LiveStatus;
  /** Why the last attempt failed (no secrets in it). */
  error: string | null;
  /** The QR to scan, while it is valid. */
  qr: LiveQr | null;
  /** The newest `status` event's data by the sender's timestamp (connected, authenticated, …); an older one arriving late is ignored. */
  whatsapp: StatusData | null;
  /** Messages that arrived while listening, oldest first (at most `maxMessages`); one entry per WhatsApp message id, a later event about it replacing it in place. */
  messages: ChatMessage[];
  /** Events too large to push live: fetch them from the app by id. */
  fetchFromApp: { id: string; type: string }[];
}

export interface WhatsAppLiveOptions {
  /**
   * Fetches a token for the session. Default: GET /api/live-token?session=… (same origin).
   * `signal` aborts after `tokenTimeoutMs`, or when the attempt's `connectTimeoutMs` ends.
   */
  fetchToken?: (session: string, init?: { signal?: AbortSignal }) => Promise<LiveTokenInfo>;
  /** The token request is aborted after this long. Default 10 s. */
  tokenTimeoutMs?: number;
  /**
   * One attempt (token, connect, subscribe until ready) is given up after this long: status
   * "refused" and a retry, or, for a renewal, a retry while the current subscription goes on.
   * Default 30 s.
   */
  connectTimeoutMs?: number;
  /** A QR is shown at most this long after the earliest of: the sender's timestamp, its arrival at the relay, its arrival at the page. Default 60 s (the relay's QR_TTL_SECONDS). */
  qrTtlMs?: number;
  /** Messages kept. Default 200. */
  maxMessages?: number;
  /** A new token is fetched this long before the current one expires. Default 60 s. */
  refreshBeforeMs?: number;
  /** Delay before retrying after a failure (doubling up to 60 s). Default 2 s. */
  retryDelayMs?: number;
  /** Called when the page is live again after a dropped connection or a refused token: reload the state from the app (what was published meanwhile is not sent again). */
  onResume?: () => void;
  /** Called with every event, after the snapshot is updated. */
  onEvent?: (payload: LivePayload) => void;
  /** The clock, unix milliseconds (tests). */
  now?: () => number;
}

export interface WhatsAppLive {
  getSnapshot(): WhatsAppLiveState;
  /** Calls `listener` on every change; returns the unsubscribe function. */
  subscribe(listener: () => void): () => void;
  /** Connects (again, after `close`). */
  start(): void;
  close(): void;
}

/** An HTTP failure from the token route, with its status. */
export class LiveTokenError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** The token route's answer is awaited this long by default. */
export const DEFAULT_TOKEN_TIMEOUT_MS = 10_000;
/** One token → connect → subscribe attempt is given this long by default. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 30_000;

/**
 * GET /api/live-token?session=… with the page's cookies. Aborted by `init.signal`, or after
 * {@link DEFAULT_TOKEN_TIMEOUT_MS} without one.
 */
export async function fetchLiveToken(session: string, init: { signal?: AbortSignal } = {}): Promise<LiveTokenInfo> {
  const response = await fetch(`/api/live-token?session=${encodeURIComponent(session)}`, {
    credentials: "same-origin",
    cache: "no-store",
    signal: init.signal ?? AbortSignal.timeout(DEFAULT_TOKEN_TIMEOUT_MS),
  });
  if (!response.ok) {
    const body = (await response.json().catch(() => ({}))) as { message?: string };
    throw new LiveTokenError(response.status, body.message ?? `the token route answered ${response.status}`);
  }
  return (await response.json()) as LiveTokenInfo;
}

const MAX_RETRY_DELAY_MS = 60_000;
const MAX_SEEN_IDS = 1000;
const MAX_FETCH_FROM_APP = 50;

type EventsChannel = Awaited<ReturnType<typeof events.connect>>;
type EventsSubscription = ReturnType<EventsChannel["subscribe"]>;

/**
 * Points Amplify's Events client at `endpoint`, keeping whatever else the app configured
 * (configure Amplify's other categories, if any, before the panel mounts). In a page that
 * does not use Amplify otherwise, Amplify warns once that it was not configured yet.
 */
function configureEvents(endpoint: string): void {
  const config = Amplify.getConfig();
  if (config.API?.Events?.endpoint === endpoint) return;
  Amplify.configure({
    ...config,
    API: { ...config.API, Events: { endpoint, defaultAuthMode: "lambda" } },
  });
}

/** A readable reason from what Amplify rejects or errors with (never the token). */
function reason(error: unknown): string {
  if (error instanceof Error && error.message) return error.message;
  const errors = (error as { errors?: { message?: string }[] } | null)?.errors;
  if (Array.isArray(errors) && errors[0]?.message) return errors[0].message;
  return String(error);
}

function isDataImage(value: unknown): value is string {
  return typeof value === "string" && /^data:image\/(png|jpeg|gif|webp);base64,/.test(value);
}

export function createWhatsAppLive(session: string, options: WhatsAppLiveOptions = {}): WhatsAppLive {
  const fetchToken = options.fetchToken ?? fetchLiveToken;
  const qrTtlMs = options.qrTtlMs ?? 60_000;
  const maxMessages = options.maxMessages ?? 200;
  const refreshBeforeMs = options.refreshBeforeMs ?? 60_000;
  const baseRetryMs = options.retryDelayMs ?? 2_000;
  const tokenTimeoutMs = options.tokenTimeoutMs ?? DEFAULT_TOKEN_TIMEOUT_MS;
  const connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const now = options.now ?? Date.now;

  let state: WhatsAppLiveState = {
    status: "closed",
    error: null,
    qr: null,
    whatsapp: null,
    messages: [],
    fetchFromApp: [],
  };
  const listeners = new Set<() => void>();
  // Each start/close begins a new generation; work from an older one is dropped when it lands.
  let generation = 0;
  let current: { channel: EventsChannel; subscription: EventsSubscription } | null = null;
  // Whether this start has been live before: going live again means events were missed.
  let beenLive = false;
  // The sender's timestamp of the newest status or QR applied. AppSync delivering a batch's
  // events in their order is the relay's reading, not AppSync's promise: an older one arriving
  // late must not bring back a QR a newer `connected` has cleared.
  let sessionStateAt = Number.NEGATIVE_INFINITY;

  /** Whether a status/QR stamped `timestamp` is not older than what the page shows. */
  function newest(timestamp: string): boolean {
    const at = Date.parse(timestamp);
    if (Number.isNaN(at)) return true;
    if (at < sessionStateAt) return false;
    sessionStateAt = at;
    return true;
  }
  let refreshTimer: ReturnType<typeof setTimeout> | undefined;
  let retryTimer: ReturnType<typeof setTimeout> | undefined;
  let qrTimer: ReturnType<typeof setTimeout> | undefined;
  let retryMs = baseRetryMs;
  let stopHub: (() => void) | undefined;
  // During a token refresh two subscriptions overlap: the same event may come twice.
  const seen = new Set<string>();

  function set(patch: Partial<WhatsAppLiveState>): void {
    state = { ...state, ...patch };
    for (const listener of listeners) listener();
  }

  function release(entry: { channel: EventsChannel; subscription: EventsSubscription } | null): void {
    if (!entry) return;
    try {
      entry.subscription.unsubscribe();
      entry.channel.close();
    } catch {
      // already closed
    }
  }

  function onPayload(payload: LivePayload): void {
    if (!payload || typeof payload.id !== "string" || seen.has(payload.id)) return;
    seen.add(payload.id);
    if (seen.size > MAX_SEEN_IDS) seen.delete(seen.values().next().value as string);
    const envelope = payload.envelope;
    if (payload.tooLarge || !envelope) {
      set({ fetchFromApp: [...state.fetchFromApp, { id: payload.id, type: payload.type }].slice(-MAX_FETCH_FROM_APP) });
    } else if ((envelope.event === "qr" || envelope.event === "status") && !newest(envelope.timestamp)) {
      // stale: a newer status or QR is already shown
    } else if (envelope.event === "qr") {
      // Shown until qrTtlMs after the earliest of: the sender made it, it reached the relay,
      // it reached the page. The relay accepts a code up to its TTL after the sender's
      // timestamp, so counting from arrival alone could show a dead code for twice the TTL;
      // and a skewed clock cannot stretch it either.
      const arrived = now();
      const starts = [Date.parse(envelope.timestamp), Date.parse(payload.receivedAt), arrived];
      const expiresAt = Math.min(...starts.filter((t) => !Number.isNaN(t))) + qrTtlMs;
      if (envelope.data.available && isDataImage(envelope.data.qr) && expiresAt > arrived) {
        clearTimeout(qrTimer);
        qrTimer = setTimeout(() => set({ qr: null }), expiresAt - arrived);
        set({ qr: { image: envelope.data.qr, expiresAt } });
      } else {
        clearTimeout(qrTimer);
        set({ qr: null });
      }
    } else if (envelope.event === "status") {
      // Connected: the QR has been used (or is moot).
      set({ whatsapp: envelope.data, ...(envelope.data.connected ? { qr: null } : {}) });
    } else if (envelope.event === "message") {
      // One entry per WhatsApp message: a later event about the same message (a re-send
      // under a new event id, a status change) replaces it rather than adding a twin.
      const message = envelope.data.message;
      const known = state.messages.some((m) => m.id === message.id);
      const messages = known
        ? state.messages.map((m) => (m.id === message.id ? message : m))
        : [...state.messages, message].slice(-maxMessages);
      set({ messages });
    }
    options.onEvent?.(payload);
  }

  type Subscribed = { channel: EventsChannel; subscription: EventsSubscription; info: LiveTokenInfo };
  type Attempt = {
    expired: boolean;
    abort: AbortController;
    /** What the attempt opened, closed again if its time runs out first. */
    opened?: { channel: EventsChannel; subscription: EventsSubscription };
  };
  /** Attempts under way, aborted when the store stops. */
  const attempts = new Set<Attempt>();

  /**
   * Token → connect → subscribe → ready, within `connectTimeoutMs`: resolves with the live
   * subscription (null if a newer start/close made it moot), or rejects when a step fails or
   * the time is up. What a step still opens after the time is up is closed again.
   */
  async function subscribeWithFreshToken(gen: number): Promise<Subscribed | null> {
    const attempt: Attempt = { expired: false, abort: new AbortController() };
    attempts.add(attempt);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const error = new Error(`no live subscription within ${connectTimeoutMs} ms (token, connect, subscribe)`);
        attempt.expired = true;
        attempt.abort.abort(error);
        // `ready` has no timeout of its own: a subscription still waiting on it is closed
        // here, or every such attempt would leave one open for the life of the page.
        release(attempt.opened ?? null);
        reject(error);
      }, connectTimeoutMs);
    });
    const steps = subscribeSteps(gen, attempt);
    // After the deadline nobody waits for the steps: a late failure is dropped.
    steps.catch(() => {});
    try {
      return await Promise.race([steps, deadline]);
    } finally {
      clearTimeout(timer);
      attempts.delete(attempt);
    }
  }

  async function subscribeSteps(gen: number, attempt: Attempt): Promise<Subscribed | null> {
    const moot = () => gen !== generation || attempt.expired;
    const tokenTimer = setTimeout(
      () => attempt.abort.abort(new Error(`the token route did not answer within ${tokenTimeoutMs} ms`)),
      tokenTimeoutMs,
    );
    let info: LiveTokenInfo;
    try {
      info = await fetchToken(session, { signal: attempt.abort.signal });
    } finally {
      clearTimeout(tokenTimer);
    }
    if (moot()) return null;
    configureEvents(info.endpoint);
    const channel = await events.connect(info.channel, { authMode: "lambda", authToken: info.token });
    if (moot()) {
      try {
        channel.close();
      } catch {
        // already closed
      }
      return null;
    }
    const subscription = channel.subscribe(
      {
        next: (message: { event: LivePayload }) => {
          if (gen === generation && !attempt.expired) onPayload(message.event);
        },
        // A refused or failed subscription (e.g. its token expired before a reconnect):
        // start over with a new token.
        error: (error: unknown) => {
          if (gen === generation && current?.subscription === subscription) fail(gen, error);
        },
      },
      { authMode: "lambda", authToken: info.token },
    );
    attempt.opened = { channel, subscription };
    try {
      await subscription.ready;
    } catch (error) {
      release({ channel, subscription });
      throw error;
    }
    if (moot()) {
      release({ channel, subscription });
      return null;
    }
    return { channel, subscription, info };
  }

  function scheduleRefresh(gen: number, info: LiveTokenInfo): void {
    clearTimeout(refreshTimer);
    const wait = Math.max(1_000, info.expiresAt * 1000 - refreshBeforeMs - now());
    refreshTimer = setTimeout(() => void refresh(gen), wait);
  }

  /**
   * A new token before the current one expires: a second subscription with it, then the old
   * one closes, so no event falls between them (duplicates are dropped by id). The
   * connection itself stays open; Amplify reconnects with the newest subscription's token.
   */
  async function refresh(gen: number): Promise<void> {
    try {
      const next = await subscribeWithFreshToken(gen);
      if (!next) return;
      const previous = current;
      current = { channel: next.channel, subscription: next.subscription };
      release(previous);
      retryMs = baseRetryMs;
      scheduleRefresh(gen, next.info);
    } catch (error) {
      if (gen !== generation) return;
      if (error instanceof LiveTokenError && (error.status === 401 || error.status === 403)) {
        fail(gen, error); // signed out: stop listening
        return;
      }
      // The current subscription keeps working (a token is checked at connect and
      // subscribe only); try again shortly.
      set({ error: reason(error) });
      clearTimeout(refreshTimer);
      refreshTimer = setTimeout(() => void refresh(gen), retryMs);
      retryMs = Math.min(retryMs * 2, MAX_RETRY_DELAY_MS);
    }
  }

  function fail(gen: number, error: unknown): void {
    const status = error instanceof LiveTokenError ? error.status : 0;
    release(current);
    current = null;
    clearTimeout(refreshTimer);
    if (status === 401 || status === 403) {
      set({ status: "unauthenticated", error: reason(error) });
      return;
    }
    set({ status: "refused", error: reason(error) });
    clearTimeout(retryTimer);
    retryTimer = setTimeout(() => void connect(gen), retryMs);
    retryMs = Math.min(retryMs * 2, MAX_RETRY_DELAY_MS);
  }

  async function connect(gen: number): Promise<void> {
    if (gen !== generation) return;
    set({ status: "connecting" });
    try {
      const next = await subscribeWithFreshToken(gen);
      if (!next) return;
      current = { channel: next.channel, subscription: next.subscription };
      retryMs = baseRetryMs;
      const resumed = beenLive;
      beenLive = true;
      set({ status: "live", error: null });
      scheduleRefresh(gen, next.info);
      // Live again after a refusal (say its token expired while the network was down): what
      // was published in between is not sent again, as after a dropped connection.
      if (resumed) options.onResume?.();
    } catch (error) {
      if (gen === generation) fail(gen, error);
    }
  }

  function teardown(): void {
    generation += 1;
    for (const attempt of attempts) attempt.abort.abort(new Error("the live store stopped"));
    attempts.clear();
    clearTimeout(refreshTimer);
    clearTimeout(retryTimer);
    clearTimeout(qrTimer);
    stopHub?.();
    stopHub = undefined;
    release(current);
    current = null;
  }

  return {
    getSnapshot: () => state,
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    start() {
      teardown();
      beenLive = false;
      sessionStateAt = Number.NEGATIVE_INFINITY;
      const gen = generation;
      // The connection is shared by every channel of the page; its drops and recoveries are
      // announced on Amplify's Hub.
      stopHub = Hub.listen("api", ({ payload }) => {
        if (payload.event !== CONNECTION_STATE_CHANGE || gen !== generation || !current) return;
        const connection = (payload.data as { connectionState?: ConnectionState } | undefined)?.connectionState;
        if (connection === ConnectionState.Connected) {
          const resumed = state.status === "reconnecting";
          set({ status: "live", error: null });
          // Events published while the connection was down are not sent again.
          if (resumed) options.onResume?.();
        } else if (
          connection === ConnectionState.ConnectionDisrupted ||
          connection === ConnectionState.ConnectionDisruptedPendingNetwork ||
          connection === ConnectionState.Connecting
        ) {
          set({ status: "reconnecting" });
        }
      });
      retryMs = baseRetryMs;
      void connect(gen);
    },
    close() {
      teardown();
      set({ status: "closed", qr: null });
    },
  };
}
