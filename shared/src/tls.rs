//! The process's one TLS client configuration, shared by every HTTPS client it builds: the AWS
//! SDK's (SQS, Secrets Manager, DynamoDB, through [`crate::aws_http`]), delivery to the
//! receiver and live publishing to AppSync.
//!
//! The trusted roots are Mozilla's, compiled in (`webpki-roots`) as ready-made trust anchors:
//! nothing is read or parsed at start, where loading the system's bundle was most of a cold
//! start. The trade-off (docs/decisions.md): the roots change only with a new build, through
//! the dependency updates, not with the image's CA package.

use rustls::ClientConfig;
use std::sync::{Arc, LazyLock};

/// Built on first use, then shared: cloning a `ClientConfig` shares its verifier (and so its
/// roots) and its session cache.
static CONFIG: LazyLock<ClientConfig> = LazyLock::new(build);

/// The TLS configuration every HTTPS client of the process uses (offering HTTP/2 and 1.1).
pub fn client_config() -> ClientConfig {
    CONFIG.clone()
}

fn build() -> ClientConfig {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_verifier_is_shared_and_offers_both_protocols() {
        let (a, b) = (client_config(), client_config());
        assert!(Arc::ptr_eq(
            &a.crypto_provider().clone(),
            b.crypto_provider()
        ));
        assert_eq!(a.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert!(webpki_roots::TLS_SERVER_ROOTS.len() > 100);
    }
}
