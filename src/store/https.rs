//! The HTTPS client every AWS call of drctl goes through (S3, KMS, RDS, Route 53, CloudWatch,
//! and the credential providers: SSO, STS web identity, IMDS): hyper 1 and rustls on *ring*, the
//! TLS library drctl's PostgreSQL connections already use. The SDKs' default client is the same
//! stack on aws-lc, a second TLS library, built from C in every build for nothing drctl needs.

use aws_sdk_s3::config::SharedHttpClient;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Builder, ConnectorBuilder};

/// Like the SDKs' default client: the connector settings (connect and read timeouts) and sleep of
/// the client using it, trusted roots from the system, and a proxy from `HTTPS_PROXY`,
/// `HTTP_PROXY` and `NO_PROXY`. Built the way aws-smithy-runtime builds that client (with
/// `build_with_connector_fn`, left out of the crate's docs): the documented `build_https` has no
/// proxy setting.
pub fn client() -> SharedHttpClient {
    Builder::new().build_with_connector_fn(|settings, runtime_components| {
        let mut connector = ConnectorBuilder::default().tls_provider(Provider::Rustls(CryptoMode::Ring));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = runtime_components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
}
