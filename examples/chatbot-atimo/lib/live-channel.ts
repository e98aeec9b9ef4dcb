// The live channel of a WhatsApp session, computed exactly as the relay does (its
// `live::channel` module), so the token route can tell the page which channel to subscribe to.
//
// A session name is kept as the channel segment when it is already a legal AppSync segment
// (alphanumerics and inner dashes, 1 to 50 characters) that does not start with `h-` or `H-`;
// otherwise the segment is `h-` + the first 16 bytes of SHA-256(session) in hex. (Hashing every
// `h-` name keeps the mapping one-to-one: no session can be named into another's channel.) The mapping is public and unkeyed: tokens, not
// channel names, decide who may listen.
//
// Web Crypto (`crypto.subtle`) runs on the Node.js and Edge runtimes alike, hence async.

/** The namespace the relay uses when none is configured (`LIVE_NAMESPACE`). */
export const DEFAULT_NAMESPACE = "relay";

const SEGMENT = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,48}[A-Za-z0-9])?$/;

/** Is `segment` a legal channel segment (AppSync's namespace pattern, 1 to 50 characters)? */
export function isValidSegment(segment: string): boolean {
  return SEGMENT.test(segment);
}

/** The channel segment for `session`: itself when legal and not `h-…`, else `h-` + 32 hex of its SHA-256. */
export async function sessionSegment(session: string): Promise<string> {
  if (isValidSegment(session) && !/^h-/i.test(session)) return session;
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(session));
  const hex = Array.from(new Uint8Array(digest).subarray(0, 16), (b) => b.toString(16).padStart(2, "0")).join("");
  return `h-${hex}`;
}

/** The session's channel path: `/<namespace>/<segment>`. */
export async function sessionChannel(namespace: string, session: string): Promise<string> {
  return `/${namespace}/${await sessionSegment(session)}`;
}
