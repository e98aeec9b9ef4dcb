// Mints the page's live token: a short-lived HS256 JWT that lets the browser subscribe to the
// relay's live channel of one WhatsApp session (AppSync Events on AWS, `relay local` in
// development) and nothing else. The relay verifies it with its `LIVE_TOKEN_SECRETS`, one of
// which is this app's `LIVE_TOKEN_SECRET`.
//
// Claims: `sub` (the app's user), `sessions` (the sessions this token may watch), `iat`, `exp`
// (at most 15 minutes later: the relay refuses longer-lived tokens). It lives in its own file
// because a Next.js `route.ts` may only export HTTP methods and route config.

import { SignJWT } from "jose";
import { DEFAULT_NAMESPACE, isValidSegment, sessionChannel } from "../../../lib/live-channel";

/** The longest a token may live (the relay's limit). */
export const MAX_TTL_SECONDS = 15 * 60;
/** RFC 7518 §3.2: an HS256 key must be at least 256 bits; the relay refuses shorter ones. */
export const MIN_SECRET_BYTES = 32;
/** At most this many sessions in one token (the relay's limit). */
export const MAX_SESSIONS = 32;

/** Who is asking, as the app's own login knows them. */
export interface LiveViewer {
  /** The app's user id: the token's `sub`. Not a phone number. */
  user: string;
  /** The WhatsApp sessions this user may watch. */
  sessions: string[];
}

export interface LiveTokenOptions {
  /** The signing secret (`LIVE_TOKEN_SECRET`), 32+ bytes. */
  secret: string | undefined;
  /** The Event API's HTTP endpoint (`LIVE_EVENT_ENDPOINT`), e.g. https://<id>.appsync-api.<region>.amazonaws.com/event. */
  endpoint: string | undefined;
  /** The channel namespace (`LIVE_NAMESPACE`), as the relay's. Default "relay". */
  namespace?: string;
  /** Seconds a token lives, 1 to 900. Default 600. */
  ttlSeconds?: number;
  /** The app's session check: the signed-in viewer, or null when nobody is signed in. */
  authenticate: (request: Request) => LiveViewer | null | Promise<LiveViewer | null>;
  /** The clock, in unix seconds (tests). */
  now?: () => number;
}

/** What the route answers: everything the page needs to connect. */
export interface LiveTokenResponse {
  token: string;
  /** The Event API's HTTP endpoint; the client derives the realtime one from it. */
  endpoint: string;
  /** The session's channel, `/<namespace>/<segment>`. */
  channel: string;
  session: string;
  /** Unix seconds: fetch a new token before then. */
  expiresAt: number;
}

/** A session name as the relay accepts it: 1 to 64 ASCII letters, digits or punctuation. */
export function isSessionName(session: string): boolean {
  return /^[\x21-\x7e]{1,64}$/.test(session);
}

/** Signs a live token for `sessions`, valid from `now` for `ttlSeconds`. */
export async function mintLiveToken(
  secret: string,
  sub: string,
  sessions: string[],
  ttlSeconds: number,
  now: number,
): Promise<string> {
  return new SignJWT({ sessions })
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(sub)
    .setIssuedAt(now)
    .setExpirationTime(now + ttlSeconds)
    .sign(new TextEncoder().encode(secret));
}

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    // A token is a credential: never cached by the browser or a CDN.
    headers: { "content-type": "application/json", "cache-control": "no-store" },
  });
}

/**
 * `GET /api/live-token?session=<name>` → `{token, endpoint, channel, session, expiresAt}`.
 * 401 when nobody is signed in, 403 when the viewer may not watch the session, 400 for a bad
 * session name, 500 when the route is not configured.
 */
export function createLiveTokenHandler(options: LiveTokenOptions): (request: Request) => Promise<Response> {
  const namespace = options.namespace || DEFAULT_NAMESPACE;
  const ttl = Math.floor(options.ttlSeconds ?? 600);
  const now = options.now ?? (() => Math.floor(Date.now() / 1000));
  return async (request) => {
    // Configuration first: a misconfigured route says so to whoever calls it, without secrets.
    const secret = options.secret ?? "";
    if (new TextEncoder().encode(secret).length < MIN_SECRET_BYTES) {
      console.error("[live-token] LIVE_TOKEN_SECRET is unset or shorter than 32 bytes: no live tokens are minted");
      return json(500, { error: "not_configured", message: "LIVE_TOKEN_SECRET is unset or shorter than 32 bytes" });
    }
    if (!options.endpoint || !/^https?:\/\//.test(options.endpoint)) {
      return json(500, { error: "not_configured", message: "LIVE_EVENT_ENDPOINT is unset (the Event API's HTTP endpoint, …/event)" });
    }
    if (!isValidSegment(namespace)) {
      return json(500, { error: "not_configured", message: "LIVE_NAMESPACE is not a channel namespace (alphanumerics and inner dashes)" });
    }
    if (!(ttl >= 1 && ttl <= MAX_TTL_SECONDS)) {
      return json(500, { error: "not_configured", message: `the token lifetime must be 1 to ${MAX_TTL_SECONDS} seconds` });
    }

    const viewer = await options.authenticate(request);
    if (!viewer) return json(401, { error: "unauthenticated", message: "sign in to the app first" });
    // The relay refuses a token whose `sub` is empty or over 256 bytes; the page would then
    // retry a refused token forever, so the app's wiring is named here instead.
    const userBytes = new TextEncoder().encode(viewer.user).length;
    if (!(userBytes >= 1 && userBytes <= 256)) {
      return json(500, { error: "not_configured", message: "the signed-in user's id must be 1 to 256 bytes (UTF-8)" });
    }

    const session = new URL(request.url).searchParams.get("session") ?? "default";
    if (!isSessionName(session)) {
      return json(400, { error: "invalid_session", message: "session must be 1 to 64 ASCII letters, digits or punctuation (no spaces)" });
    }
    if (!viewer.sessions.includes(session)) {
      return json(403, { error: "forbidden", message: "this account may not watch that WhatsApp session" });
    }
    // Only the session this page watches, not every session the user may see: a leaked token
    // then opens one channel.
    const issued = now();
    const token = await mintLiveToken(secret, viewer.user, [session], ttl, issued);
    const body: LiveTokenResponse = {
      token,
      endpoint: options.endpoint,
      channel: await sessionChannel(namespace, session),
      session,
      expiresAt: issued + ttl,
    };
    return json(200, body);
  };
}
