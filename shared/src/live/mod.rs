//! Live updates: every accepted event also reaches its session's browser pages in
//! milliseconds, over AppSync Events on AWS and the same protocol in `relay local`.
//!
//! | module | role |
//! |---|---|
//! | [`token`] | the short-lived HS256 tokens that say which sessions a page may watch |
//! | [`authorize`] | who may watch which channel: the hub's and the AppSync Lambda authorizer's decision |
//! | [`channel`] | session name → channel path (`/<namespace>/<segment>`) |
//! | [`publish`] | the publisher port: accepted event → its session's channel, at most once |
//! | [`appsync`] | the AWS adapter of the publisher port: AppSync Events' HTTP publish, signed with SigV4 |
//! | `hub` | the local hub (feature `hub`): AppSync Events' protocol for `relay local` |

pub mod appsync;
pub mod authorize;
pub mod channel;
#[cfg(feature = "hub")]
pub mod hub;
pub mod publish;
pub mod token;
