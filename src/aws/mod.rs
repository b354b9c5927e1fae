//! Amazon Web Services beyond storage: one shared SDK configuration, KMS key slots, RDS snapshots
//! of `kind: rds` policies. Takes plain values, never policy or repository types.

pub mod kms;
pub mod rds;
pub mod sdk;

/// For an AWS SDK error that got no answer from the service (its `DisplayErrorContext` text):
/// the message when the cause is that no credentials were found anywhere in the default chain.
pub(crate) fn missing_credentials(text: &str) -> Option<String> {
    text.contains("credentials").then(|| {
        "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or a web identity \
         token (IRSA)"
            .to_string()
    })
}
