//! AWS KMS for key slots: the master key is encrypted under a KMS key (`Encrypt`, at most 4 KiB,
//! which 64 bytes are far below), so whoever may call `kms:Decrypt` on that key opens the
//! repository with no passphrase to distribute. Every call carries the same encryption context,
//! which KMS binds to the ciphertext and writes to CloudTrail, so an audit shows each unwrap.
//!
//! The client reaches the key's own region (taken from its ARN), so a repository copy in another
//! region can be opened with a key that lives there. `AWS_ENDPOINT_URL_KMS` (the SDK's own
//! setting) points it at a KMS-compatible service.

use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;

/// Bound to every wrapped master key; a ciphertext made for anything else does not open here.
const CONTEXT: (&str, &str) = ("drctl", "repository master key v1");

/// Why KMS did not wrap or unwrap a key, in one sentence with the fix.
#[derive(Debug, thiserror::Error)]
#[error("KMS key {key_id}: {detail}")]
pub struct KmsError {
    pub key_id: String,
    pub detail: String,
}

/// Encrypts `plaintext` under `key_id` (an ARN, key id or alias); returns the ciphertext and the
/// key's ARN as KMS reports it.
pub fn encrypt(key_id: &str, plaintext: &[u8]) -> Result<(Vec<u8>, String), KmsError> {
    let (client, runtime) = client_for(key_id)?;
    let request =
        client.encrypt().key_id(key_id).plaintext(Blob::new(plaintext)).encryption_context(CONTEXT.0, CONTEXT.1);
    let out = runtime.block_on(request.send()).map_err(|e| explain(key_id, "encrypt", e))?;
    let blob = out.ciphertext_blob().ok_or_else(|| fail(key_id, "KMS returned no ciphertext".into()))?;
    Ok((blob.as_ref().to_vec(), out.key_id().unwrap_or(key_id).to_string()))
}

/// Decrypts a ciphertext made by [`encrypt`] under `key_id`.
pub fn decrypt(key_id: &str, ciphertext: &[u8]) -> Result<Vec<u8>, KmsError> {
    let (client, runtime) = client_for(key_id)?;
    let request =
        client.decrypt().key_id(key_id).ciphertext_blob(Blob::new(ciphertext)).encryption_context(CONTEXT.0, CONTEXT.1);
    let out = runtime.block_on(request.send()).map_err(|e| explain(key_id, "decrypt", e))?;
    let plaintext = out.plaintext().ok_or_else(|| fail(key_id, "KMS returned no plaintext".into()))?;
    Ok(plaintext.as_ref().to_vec())
}

fn fail(key_id: &str, detail: String) -> KmsError {
    KmsError { key_id: key_id.to_string(), detail }
}

/// The region named in a key ARN (`arn:aws:kms:REGION:ACCOUNT:key/ID`), if it is one.
fn region_of(key_id: &str) -> Option<&str> {
    let mut parts = key_id.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("arn"), Some(_), Some("kms"), Some(region)) if !region.is_empty() => Some(region),
        _ => None,
    }
}

fn client_for(key_id: &str) -> Result<(aws_sdk_kms::Client, tokio::runtime::Runtime), KmsError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(key_id, format!("cannot start the I/O runtime: {e}")))?;
    let shared = super::sdk::load(&runtime, region_of(key_id));
    Ok((aws_sdk_kms::Client::new(&shared), runtime))
}

fn explain<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static, R>(
    key_id: &str,
    op: &str,
    err: SdkError<E, R>,
) -> KmsError
where
    R: std::fmt::Debug,
{
    let detail = match err.code() {
        Some("NotFoundException") => {
            "no such key in its region: check the key id or ARN (an alias needs the alias/ prefix)".to_string()
        }
        Some("DisabledException") => {
            "the key is disabled: enable it (aws kms enable-key) or open the repository with another key slot"
                .to_string()
        }
        Some("KMSInvalidStateException") => {
            "the key is not usable (pending deletion or import): cancel its deletion (aws kms cancel-key-deletion) \
             or open the repository with another key slot"
                .to_string()
        }
        Some(c @ ("AccessDeniedException" | "AccessDenied")) => format!(
            "{c}: these credentials may not kms:{} with this key; allow it in the key policy or the role's IAM \
             policy",
            if op == "encrypt" { "Encrypt" } else { "Decrypt" }
        ),
        Some("InvalidCiphertextException" | "IncorrectKeyException") => {
            "the key slot was not made by this key (or its ciphertext is damaged)".to_string()
        }
        Some(c @ ("ExpiredTokenException" | "ExpiredToken" | "RequestExpired")) => {
            format!("the AWS credentials have expired ({c}): refresh the session or the web identity token")
        }
        Some(c @ ("UnrecognizedClientException" | "InvalidSignatureException")) => {
            format!("the AWS credentials are not valid ({c}): check the access key, secret key and session token")
        }
        Some(code) => format!("{code}: {}", err.message().unwrap_or("")),
        None => {
            let text = format!("{}", DisplayErrorContext(&err));
            super::missing_credentials(&text)
                .unwrap_or_else(|| format!("cannot reach KMS: {}", text.split(" (").next().unwrap_or(&text)))
        }
    };
    fail(key_id, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_comes_from_an_arn_only() {
        assert_eq!(region_of("arn:aws:kms:us-west-2:123456789012:key/abcd"), Some("us-west-2"));
        assert_eq!(region_of("alias/drctl"), None);
        assert_eq!(region_of("1234abcd-12ab-34cd-56ef-1234567890ab"), None);
    }
}
