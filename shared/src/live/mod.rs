//! Live updates: every accepted event also reaches its session's browser pages in
//! milliseconds, over AppSync Events on AWS and the same protocol in `relay local`.
//!
//! | module | role |
//! |---|---|
//! | [`token`] | the short-lived HS256 tokens that say which sessions a page may watch |
//! | [`channel`] | session name → channel path (`/<namespace>/<segment>`) |
//! | [`publish`] | the publisher port: accepted event → its session's channel, at most once |
//! | `hub` | the local hub (feature `hub`): AppSync Events' protocol for `relay local` |

pub mod channel;
#[cfg(feature = "hub")]
pub mod hub;
pub mod publish;
pub mod token;
