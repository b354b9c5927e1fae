//! Amazon Web Services beyond storage: one shared SDK configuration, KMS key slots, RDS snapshots
//! of `kind: rds` policies, RDS instances in recovery, Route 53 records. Takes plain values, never
//! policy or repository types.

pub mod kms;
pub mod rds;
pub mod rds_instance;
pub mod route53;
pub mod sdk;

use aws_sdk_rds::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// For an AWS SDK error that got no answer from the service (its `DisplayErrorContext` text):
/// the message when the cause is that no credentials were found anywhere in the default chain.
pub(crate) fn missing_credentials(text: &str) -> Option<String> {
    text.contains("credentials").then(|| {
        "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or a web identity \
         token (IRSA)"
            .to_string()
    })
}

/// The service's error code and message, as `Code: message`.
fn cause<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> String {
    match (err.code(), err.message()) {
        (Some(code), Some(message)) if !message.is_empty() => format!("{code}: {message}"),
        (Some(code), _) => code.to_string(),
        (None, _) => String::new(),
    }
}

/// An SDK error of `service` as its cause and the fix, for the causes every AWS API shares
/// (permissions, credentials, throttling, no answer at all); `specific(code, cause)` words the
/// codes of one API first. `None`: an error code neither knows (the caller names the call).
/// `permissions` finishes "these credentials may not use …"; `endpoint_var` is the SDK's
/// endpoint setting for the service.
fn explain<E, R>(
    err: &SdkError<E, R>,
    service: &str,
    endpoint_var: &str,
    permissions: &str,
    specific: impl Fn(&str, &str) -> Option<String>,
) -> Option<String>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let cause = cause(err);
    let Some(code) = err.code() else {
        let text = format!("{}", DisplayErrorContext(err));
        return Some(missing_credentials(&text).unwrap_or_else(|| {
            format!(
                "cannot reach {service} ({}): check the network, and {endpoint_var} when it is set",
                text.split(" (").next().unwrap_or(&text)
            )
        }));
    };
    if let Some(worded) = specific(code, &cause) {
        return Some(worded);
    }
    Some(match code {
        "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" | "NotAuthorized" => {
            format!("access denied ({cause}): these credentials may not use {permissions}")
        }
        "ExpiredToken" | "ExpiredTokenException" | "RequestExpired" => {
            format!("the AWS credentials have expired ({cause}): refresh the session or the web identity token")
        }
        "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "AuthFailure" => {
            format!("the AWS credentials are not valid ({cause}): check the access key, secret key and session token")
        }
        "Throttling" | "ThrottlingException" | "RequestLimitExceeded" => {
            format!("{service} kept throttling the calls, retries included ({cause}): run again later")
        }
        _ => return None,
    })
}
