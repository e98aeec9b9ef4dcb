//! Live channels: one per session, `/<namespace>/<segment>`.
//!
//! Session names (1–64 ASCII letters, digits or punctuation, the envelope's rule) are looser
//! than AppSync's channel segments, so a session maps to a segment stably: kept as it is when
//! it is already a legal segment that does not start with `h-` (or `H-`), else `h-` + the
//! first 128 bits of SHA-256 of the name, in hex (34 characters, always legal). Hashing every
//! `h-` name keeps the mapping one-to-one: a session named after another's hashed segment
//! would otherwise share its channel, and a token for one would read the other. The mapping is
//! public and unkeyed on purpose: the app's server computes the same channel for its page (a
//! session name is not personal data), and the tokens, not the channel names, decide who may
//! listen.

use crate::envelope::DEFAULT_SESSION;
use aws_lc_rs::digest;

/// The namespace used when none is configured (the template's `ChannelNamespace`).
pub const DEFAULT_NAMESPACE: &str = "relay";
/// The longest session name (the envelope's rule).
pub const MAX_SESSION_LEN: usize = 64;
/// The longest channel segment.
///
/// AWS AppSync API reference, `ChannelNamespace.name`: "Length Constraints: Minimum length
/// of 1. Maximum length of 50. Pattern: `([A-Za-z0-9](?:[A-Za-z0-9\-]{0,48}[A-Za-z0-9])?)`".
/// Channel segments are held to the same rule here: the stricter reading of "alphanumerics
/// and dashes", so a mapped channel is legal whatever the exact segment rule.
pub const MAX_SEGMENT_LEN: usize = 50;
/// AppSync Events, "Understanding channel namespaces": "A channel namespace is made up of a
/// maximum of five segments." Ours use two.
pub const MAX_SEGMENTS: usize = 5;

/// Is `segment` a legal channel segment (alphanumerics and inner dashes, 1–50 characters)?
pub fn is_valid_segment(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_SEGMENT_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// What a session name is, in the words of [`check_session`]'s refusal.
pub const SESSION_RULE: &str = "1 to 64 ASCII letters, digits or punctuation (no spaces)";

/// A session name as the envelope allows it (`SESSION_RULE`, the envelope's own check), so a token never names a
/// session no event can have.
pub fn check_session(session: &str) -> Result<(), String> {
    if !crate::queue::is_sqs_id(session, MAX_SESSION_LEN) {
        return Err(format!("a session name is {SESSION_RULE}"));
    }
    Ok(())
}

/// The channel segment for a session: the name itself when it is a legal segment not starting
/// with `h-`/`H-`, else `h-` + 32 hex characters of its SHA-256.
pub fn session_segment(session: &str) -> String {
    let hashed_form = session
        .get(..2)
        .is_some_and(|p| p.eq_ignore_ascii_case("h-"));
    if is_valid_segment(session) && !hashed_form {
        return session.to_owned();
    }
    let hash = digest::digest(&digest::SHA256, session.as_bytes());
    format!("h-{}", crate::envelope::hex_prefix(hash.as_ref(), 16))
}

/// The session's channel path: `/<namespace>/<segment>`.
pub fn session_channel(namespace: &str, session: &str) -> String {
    format!("/{namespace}/{}", session_segment(session))
}

/// The session an envelope belongs to (`session`, or the default one).
pub fn session_of(envelope: &serde_json::Value) -> &str {
    envelope
        .get("session")
        .and_then(|s| s.as_str())
        .unwrap_or(DEFAULT_SESSION)
}

/// A channel path as a client may write it (`default/x` or `/default/x`), made canonical
/// (`/default/x`), if every segment is legal and there are 1 to 5 of them.
pub fn normalize_channel(channel: &str) -> Option<String> {
    let trimmed = channel.strip_prefix('/').unwrap_or(channel);
    let segments: Vec<&str> = trimmed.split('/').collect();
    if segments.is_empty()
        || segments.len() > MAX_SEGMENTS
        || !segments.iter().all(|s| is_valid_segment(s))
    {
        return None;
    }
    Some(format!("/{trimmed}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legal_session_names_are_kept() {
        for name in ["default", "sales", "Sales-2", "a", &"x".repeat(50)] {
            assert_eq!(session_segment(name), name);
        }
        assert_eq!(session_channel("relay", "sales"), "/relay/sales");
    }

    #[test]
    fn other_names_become_a_stable_legal_hash() {
        for name in [
            "sales.team",
            "a_b",
            "-lead",
            "trail-",
            "ç",
            &"x".repeat(51),
            "a/b",
        ] {
            let segment = session_segment(name);
            assert!(segment.starts_with("h-"), "{name}");
            assert_eq!(segment.len(), 34);
            assert!(is_valid_segment(&segment), "{segment}");
            assert_eq!(segment, session_segment(name), "stable");
        }
        assert_ne!(session_segment("a_b"), session_segment("a.b"));
        // A fixed vector, so the app's server can check its own implementation against it:
        // the first 16 bytes of SHA-256("sales.team") in hex.
        assert_eq!(
            session_segment("sales.team"),
            "h-20edde6c7a20d4b4b8f72b7d26264224"
        );
    }

    #[test]
    fn a_name_shaped_like_a_hashed_segment_gets_a_channel_of_its_own() {
        let taken = session_segment("sales.team");
        assert_eq!(taken, "h-20edde6c7a20d4b4b8f72b7d26264224");
        // The same characters as a session name: hashed in turn, not kept.
        assert_eq!(
            session_segment(&taken),
            "h-4130ce668144fac4d95eb5d57fb09bdf"
        );
        for name in ["h-x", "H-x", "h-1", &taken.to_uppercase()] {
            let segment = session_segment(name);
            assert_ne!(segment, name);
            assert!(segment.starts_with("h-") && segment.len() == 34, "{name}");
        }
        // Names merely containing `h-` are kept.
        assert_eq!(session_segment("ah-1"), "ah-1");
        assert_eq!(session_segment("h"), "h");
    }

    #[test]
    fn segments_follow_the_appsync_pattern() {
        assert!(is_valid_segment("a-b-c"));
        assert!(!is_valid_segment(""));
        assert!(!is_valid_segment("-a"));
        assert!(!is_valid_segment("a-"));
        assert!(!is_valid_segment("a_b"));
        assert!(!is_valid_segment("a*"));
        assert!(!is_valid_segment(&"a".repeat(51)));
    }

    #[test]
    fn channels_are_normalized_or_refused() {
        assert_eq!(
            normalize_channel("relay/sales").as_deref(),
            Some("/relay/sales")
        );
        assert_eq!(
            normalize_channel("/relay/sales").as_deref(),
            Some("/relay/sales")
        );
        for bad in [
            "",
            "/",
            "/relay//x",
            "/relay/*",
            "/a/b/c/d/e/f",
            "/relay/a b",
        ] {
            assert_eq!(normalize_channel(bad), None, "{bad}");
        }
    }

    #[test]
    fn session_names_are_checked() {
        assert!(check_session("default").is_ok());
        assert!(check_session("").is_err());
        assert!(check_session(&"s".repeat(65)).is_err());
        assert!(check_session("tab\there").is_err());
        // The envelope's rule: no spaces, so no token names a session no event can have.
        assert!(check_session("sales team").is_err());
        assert!(check_session("sales.team").is_ok());
    }
}
