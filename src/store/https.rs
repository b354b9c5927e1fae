//! The HTTPS client every AWS call of drctl goes through (S3, KMS, RDS, Route 53, CloudWatch,
//! and the credential providers: SSO, STS web identity, IMDS): hyper 1 and rustls on *ring*, the
//! TLS library drctl's PostgreSQL connections already use. The SDKs' default client is the same
//! stack on aws-lc, a second TLS library, built from C in every build for nothing drctl needs.

use aws_sdk_s3::config::SharedHttpClient;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Builder, ConnectorBuilder};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::{RuntimeComponents, RuntimeComponentsBuilder};
use aws_smithy_types::config_bag::ConfigBag;

/// Like the SDKs' default client: the connector settings (connect and read timeouts) and sleep of
/// the client using it, trusted roots from the system, and a proxy from `HTTPS_PROXY`,
/// `HTTP_PROXY` and `NO_PROXY`. Built the way aws-smithy-runtime builds that client (with
/// `build_with_connector_fn`, left out of the crate's docs): the documented `build_https` has no
/// proxy setting.
pub fn client() -> SharedHttpClient {
    let client = Builder::new().build_with_connector_fn(|settings, runtime_components| {
        let mut connector = ConnectorBuilder::default().tls_provider(Provider::Rustls(CryptoMode::Ring));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = runtime_components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    });
    SharedHttpClient::new(RefusedCertificatesNotRetried(client))
}

/// The client with one change to how its failures are retried: a server certificate that TLS
/// refuses (no trusted root vouches for it, expired, not yet valid, for another name, revoked)
/// fails the request at once. The SDKs count every failed connection as transient, so an
/// untrusted private CA cost every retry's backoff before its clear error; and a certificate's
/// dates are not wrong for seconds but until someone mends the clock or the certificate.
#[derive(Debug)]
struct RefusedCertificatesNotRetried(SharedHttpClient);

impl HttpClient for RefusedCertificatesNotRetried {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(RefusalIsFinal(self.0.http_connector(settings, components)))
    }

    fn validate_base_client_config(
        &self,
        components: &RuntimeComponentsBuilder,
        cfg: &ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.validate_base_client_config(components, cfg)
    }

    fn validate_final_config(&self, components: &RuntimeComponents, cfg: &ConfigBag) -> Result<(), BoxError> {
        self.0.validate_final_config(components, cfg)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.0.connector_metadata()
    }
}

#[derive(Debug)]
struct RefusalIsFinal(SharedHttpConnector);

impl HttpConnector for RefusalIsFinal {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let sent = self.0.call(request);
        HttpConnectorFuture::new(async move {
            sent.await.map_err(|e| {
                // An "other" connector error of no kind is one no retry classifier retries.
                if certificate_refused(&e) { ConnectorError::other(e.into(), None) } else { e }
            })
        })
    }
}

/// Whether rustls refused the server's certificate, anywhere in the error's causes.
fn certificate_refused(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(rustls::Error::InvalidCertificate(_)) = e.downcast_ref::<rustls::Error>() {
            return true;
        }
        // The TLS error arrives wrapped in I/O errors, whose `source` skips what they wrap.
        next = match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(wrapped) => Some(wrapped as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    false
}
