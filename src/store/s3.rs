//! The S3 backend (`s3://bucket/prefix[?region=R]`), on the AWS SDK: credentials and region from
//! the default chain (environment, profile, web identity / IRSA), an optional endpoint and
//! path-style addressing for S3-compatible services.
//!
//! - Large objects (packs) go up as multipart uploads while they are written, a few parts in
//!   flight at once, so a pack never sits in memory whole; an upload dropped before `commit` is
//!   aborted, leaving nothing visible.
//! - The SDK retries throttling, 5xx, timeouts and resets with backoff and jitter; every upload
//!   carries a CRC32C the service checks, and ranged reads are length-checked.
//! - Writes can carry a storage class, SSE-KMS, and Object Lock retention (WORM buckets). With
//!   Object Lock, a delete removes the object's version (not a delete marker that would only
//!   hide it), so a retained object refuses and drctl says until when.
//! - Service errors become one sentence naming the cause (expired or missing credentials, access
//!   denied, wrong region, missing bucket).

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ObjectLockMode, ServerSideEncryption, StorageClass,
};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::{Error, ObjectInfo, ObjectWriter, Result, Retention, Store};

/// Size of each part of a multipart upload (S3 wants at least 5 MiB but the last).
const PART_SIZE: usize = 16 << 20;
/// Parts of one upload in flight at once: enough to keep a link busy while the next part fills,
/// few enough that memory stays bounded (this many × 16 MiB per open pack).
const PARTS_IN_FLIGHT: usize = 3;
/// Locks are written and deleted by every command; they never carry retention.
const UNRETAINED_PREFIX: &str = "locks/";

/// How to reach an S3-compatible service and what every write carries.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// A custom endpoint (`--s3-endpoint` / `DRCTL_S3_ENDPOINT`), e.g. a local S3-compatible server.
    pub endpoint: Option<String>,
    /// Path-style addressing (`bucket` in the path, not the host name).
    pub path_style: bool,
    /// Storage class of stored objects (`--s3-storage-class`).
    pub storage_class: Option<String>,
    /// Server-side encryption with this KMS key (`--s3-sse-kms-key-id`), on top of drctl's own.
    pub sse_kms_key_id: Option<String>,
    /// Object Lock retention for every object but locks (`--s3-object-lock MODE:DAYS`).
    pub object_lock: Option<ObjectLock>,
    /// Retries and timeouts, given by the caller so every AWS client of the program shares them
    /// (the store knows nothing of who tunes them); `None`: the SDK's own.
    pub retry: Option<aws_config::retry::RetryConfig>,
    pub timeout: Option<aws_config::timeout::TimeoutConfig>,
}

/// S3 Object Lock retention applied to each object as it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectLock {
    /// GOVERNANCE (privileged users may lift it) or COMPLIANCE (nobody may).
    pub mode: String,
    pub days: u32,
}

impl std::str::FromStr for ObjectLock {
    type Err = String;
    fn from_str(text: &str) -> std::result::Result<ObjectLock, String> {
        let usage = || format!("{text:?} is not MODE:DAYS (e.g. governance:30 or compliance:365)");
        let (mode, days) = text.split_once(':').ok_or_else(usage)?;
        let mode = mode.to_ascii_uppercase();
        if mode != "GOVERNANCE" && mode != "COMPLIANCE" {
            return Err(format!("Object Lock mode {mode:?} is neither governance nor compliance"));
        }
        let days: u32 = days.parse().map_err(|_| usage())?;
        if days == 0 {
            return Err("Object Lock retention needs at least 1 day".into());
        }
        Ok(ObjectLock { mode, days })
    }
}

/// Storage classes whose objects read back at once: a restore must never wait hours for a thaw.
const READABLE_CLASSES: [&str; 6] =
    ["STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR", "REDUCED_REDUNDANCY"];

/// Counts the HTTP requests sent (retries included) by method, for the cost figure the
/// benchmark reports (S3 bills per request); logged at debug level when the store closes.
#[derive(Debug, Default, Clone)]
struct RequestCounter(Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>);

impl aws_sdk_s3::config::Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_sdk_s3::config::RuntimeComponents,
        _: &mut aws_sdk_s3::config::ConfigBag,
    ) -> std::result::Result<(), aws_sdk_s3::error::BoxError> {
        let method = context.request().method().to_string();
        *self.0.lock().expect("poisoned").entry(method).or_default() += 1;
        Ok(())
    }
}

/// What every request needs: shared by the store and its upload writers.
struct Bucket {
    requests: RequestCounter,
    client: Client,
    name: String,
    /// Key prefix inside the bucket, empty or ending in `/`.
    prefix: String,
    location: String,
    region: String,
    options: S3Options,
    runtime: tokio::runtime::Runtime,
}

pub struct S3Store {
    bucket: Arc<Bucket>,
}

impl S3Store {
    /// Opens `s3://bucket[/prefix][?region=R]`; the region parameter overrides the default
    /// chain's, for a repository in another region than the others (a cross-region copy).
    pub fn open(location: &str, options: &S3Options) -> std::result::Result<S3Store, String> {
        let rest = location.strip_prefix("s3://").ok_or("an S3 location starts with s3://")?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut region = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("region", r)) if !r.is_empty() => region = Some(r.to_string()),
                _ => return Err(format!("unknown location parameter {pair:?} (only region=NAME is known)")),
            }
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err("the location names no bucket (write s3://bucket/prefix)".into());
        }
        if let Some(class) = &options.storage_class
            && !READABLE_CLASSES.contains(&class.as_str())
        {
            return Err(format!(
                "storage class {class} is not one drctl writes: restores need objects readable at once ({})",
                READABLE_CLASSES.join(", ")
            ));
        }
        let prefix = match prefix.trim_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the I/O runtime: {e}"))?;
        let mut loader =
            aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(super::https::client());
        if let Some(retry) = &options.retry {
            loader = loader.retry_config(retry.clone());
        }
        if let Some(timeout) = &options.timeout {
            loader = loader.timeout_config(timeout.clone());
        }
        if let Some(region) = region {
            loader = loader.region(aws_config::Region::new(region));
        }
        let shared = runtime.block_on(loader.load());
        let region = shared.region().map(|r| r.to_string()).unwrap_or_default();
        let requests = RequestCounter::default();
        let mut config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(options.path_style)
            .interceptor(requests.clone());
        if let Some(endpoint) = &options.endpoint {
            config = config.endpoint_url(endpoint);
        }
        Ok(S3Store {
            bucket: Arc::new(Bucket {
                requests,
                client: Client::from_conf(config.build()),
                name: bucket.to_string(),
                prefix,
                location: location.trim_end_matches('/').to_string(),
                region,
                options: options.clone(),
                runtime,
            }),
        })
    }
}

impl Drop for Bucket {
    fn drop(&mut self) {
        let counts = self.requests.0.lock().expect("poisoned");
        let total: u64 = counts.values().sum();
        tracing::debug!(location = %self.location, total, by_method = ?*counts, "S3 requests sent");
    }
}

impl Bucket {
    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn remote(&self, op: &'static str, key: &str, detail: String) -> Error {
        Error::Remote { location: self.location.clone(), op, key: key.to_string(), detail }
    }

    fn out_of_range(&self, key: &str, offset: u64, len: u64) -> Error {
        Error::OutOfRange { location: self.location.clone(), key: key.to_string(), offset, len }
    }

    /// A failed request as a store error: a missing object is `NotFound`, anything else one
    /// sentence naming the cause.
    fn error<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
        &self,
        op: &'static str,
        key: &str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> Error {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().map(str::to_string);
        if matches!(code.as_deref(), Some("NoSuchKey" | "NotFound")) || (code.is_none() && status == Some(404)) {
            return Error::NotFound { location: self.location.clone(), key: key.to_string() };
        }
        let moved_to = err.raw_response().and_then(|r| r.headers().get("x-amz-bucket-region")).map(str::to_string);
        let wrong_region = status == Some(301)
            || matches!(
                code.as_deref(),
                Some("PermanentRedirect" | "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException")
            );
        let detail = match code.as_deref() {
            Some("NoSuchBucket") => {
                format!("bucket {} does not exist (create it, or check its name and the region)", self.name)
            }
            _ if wrong_region => format!(
                "bucket {} is in {}, not {}: set AWS_REGION, or add ?region=NAME to the location",
                self.name,
                moved_to.map(|r| format!("region {r}")).unwrap_or_else(|| "another region".into()),
                self.region
            ),
            Some(c @ ("ExpiredToken" | "ExpiredTokenException" | "RequestExpired" | "TokenRefreshRequired")) => {
                format!(
                    "the AWS credentials have expired ({c}): refresh the session (or check that the web identity \
                     token / IRSA is mounted and the role can be assumed)"
                )
            }
            Some(c @ ("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "InvalidToken")) => {
                format!("the AWS credentials are not valid ({c}): check the access key, secret key and session token")
            }
            Some("AccessDenied") => format!(
                "AccessDenied: the credentials may not {op} in bucket {}; their IAM policy must allow s3:GetObject, \
                 s3:PutObject, s3:DeleteObject and s3:ListBucket on it (and kms:GenerateDataKey / kms:Decrypt for an \
                 SSE-KMS key)",
                self.name
            ),
            // HEAD answers carry no error document: the status is all there is to go on.
            None => match status {
                Some(403) => format!(
                    "access denied (HTTP 403): the credentials may not {op} in bucket {}, or they have expired; \
                     check their IAM policy and refresh them",
                    self.name
                ),
                Some(400) => "the service refused the request (HTTP 400): often expired or malformed credentials; \
                              refresh them and check AWS_REGION"
                    .to_string(),
                Some(s @ 500..=599) => format!("the service kept failing (HTTP {s}) through every retry"),
                _ => describe(&err),
            },
            _ => describe(&err),
        };
        self.remote(op, key, detail)
    }
}

/// The service's error code and message when it sent one, else the transport failure
/// (connection refused, timeout, no credentials) with its causes.
fn describe<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> String {
    match (err.code(), err.message()) {
        (Some(code), Some(message)) if !message.is_empty() => format!("{code}: {message}"),
        (Some(code), _) => code.to_string(),
        _ => {
            let text = format!("{}", DisplayErrorContext(err));
            if text.contains("credentials") && (text.contains("provider") || text.contains("no credentials")) {
                return "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or \
                        a web identity token (IRSA), or run where an instance role is available"
                    .into();
            }
            if text.contains("region must be set") {
                return "no AWS region is set: set AWS_REGION (or a profile's region), or add ?region=NAME to the \
                        location"
                    .into();
            }
            if let Some(at) = text.find("invalid peer certificate") {
                let cause = text[at..].split(" (").next().unwrap_or_default();
                return format!(
                    "the endpoint's TLS certificate is not trusted ({cause}): if a private CA signed it, name that \
                     CA's certificate in SSL_CERT_FILE (or a folder of them in SSL_CERT_DIR)"
                );
            }
            // Unparsed responses carry the whole raw response; the first clause says enough.
            text.split(" (").next().unwrap_or(&text).to_string()
        }
    }
}

/// Storage class, server-side encryption and retention of a new object.
struct WriteSettings {
    class: Option<StorageClass>,
    sse: Option<ServerSideEncryption>,
    sse_key: Option<String>,
    retention: Option<(ObjectLockMode, aws_sdk_s3::primitives::DateTime)>,
}

impl WriteSettings {
    fn for_key(b: &Bucket, key: &str) -> WriteSettings {
        let retention = b.options.object_lock.as_ref().filter(|_| !key.starts_with(UNRETAINED_PREFIX)).map(|lock| {
            let until = chrono::Utc::now() + chrono::Duration::days(lock.days.into());
            (ObjectLockMode::from(lock.mode.as_str()), aws_sdk_s3::primitives::DateTime::from_secs(until.timestamp()))
        });
        WriteSettings {
            class: b.options.storage_class.as_deref().map(StorageClass::from),
            sse: b.options.sse_kms_key_id.as_ref().map(|_| ServerSideEncryption::AwsKms),
            sse_key: b.options.sse_kms_key_id.clone(),
            retention,
        }
    }
}

/// Applies [`WriteSettings`] to a PutObject or CreateMultipartUpload request (same setters,
/// different builder types).
macro_rules! with_settings {
    ($request:expr, $settings:expr) => {{
        let settings = $settings;
        let (mode, until) = settings.retention.unzip();
        $request
            .set_storage_class(settings.class)
            .set_server_side_encryption(settings.sse)
            .set_ssekms_key_id(settings.sse_key)
            .set_object_lock_mode(mode)
            .set_object_lock_retain_until_date(until)
    }};
}

impl Bucket {
    /// A PutObject of `data` with its CRC32C and this store's write settings.
    fn put_request(
        &self,
        key: &str,
        body: ByteStream,
    ) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        let request = self
            .client
            .put_object()
            .bucket(&self.name)
            .key(self.full_key(key))
            .body(body)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C);
        with_settings!(request, WriteSettings::for_key(self, key))
    }
}

impl Store for S3Store {
    fn location(&self) -> &str {
        &self.bucket.location
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let b = &self.bucket;
        b.runtime
            .block_on(b.put_request(key, ByteStream::from(data.to_vec())).send())
            .map_err(|e| b.error("put", key, e))?;
        Ok(())
    }

    /// Sends the CRC32C of `data`, computed here, with the upload: S3 refuses a body that does
    /// not match it, and returns it for an object it stored. Proven when it comes back.
    fn put_proven(&self, key: &str, data: Vec<u8>) -> Result<bool> {
        use base64::Engine;
        let b = &self.bucket;
        let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, &data) as u32;
        let sent = base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes());
        let request = b.put_request(key, ByteStream::from(data)).checksum_crc32_c(&sent);
        let out = b.runtime.block_on(request.send()).map_err(|e| b.error("put", key, e))?;
        let proven = out.checksum_crc32_c() == Some(sent.as_str());
        if !proven {
            tracing::debug!(key, sent, returned = ?out.checksum_crc32_c(), "the upload's checksum did not come back: read back");
        }
        Ok(proven)
    }

    fn put_new(&self, key: &str, data: &[u8]) -> Result<bool> {
        let b = &self.bucket;
        let request = || b.put_request(key, ByteStream::from(data.to_vec())).if_none_match("*");
        // S3's conditional write answers 412 when the key is taken, 409 while another write of it
        // is in flight: then wait for that one to land and ask again.
        for attempt in 0..5u32 {
            match b.runtime.block_on(request().send()) {
                Ok(_) => return Ok(true),
                Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => return Ok(false),
                Err(e) if attempt < 4 && e.raw_response().is_some_and(|r| r.status().as_u16() == 409) => {
                    std::thread::sleep(Duration::from_millis(200 << attempt));
                }
                Err(e) => return Err(b.error("put", key, e)),
            }
        }
        unreachable!("the last attempt returns")
    }

    fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        Ok(Box::new(S3Writer {
            bucket: self.bucket.clone(),
            key: key.to_string(),
            buffer: Vec::new(),
            upload: None,
            in_flight: VecDeque::new(),
            parts: Vec::new(),
            written: 0,
        }))
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.read(key, None)
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let data = self.read(key, Some((offset, len)))?;
        if data.len() as u64 != len {
            return Err(self.bucket.out_of_range(key, offset, len));
        }
        Ok(data)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let b = &self.bucket;
        let full = b.full_key(prefix);
        let mut pages = b.client.list_objects_v2().bucket(&b.name).prefix(&full).into_paginator().send();
        b.runtime.block_on(async {
            let mut found = Vec::new();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| b.error("list", prefix, e))?;
                for object in page.contents() {
                    let Some(key) = object.key().and_then(|k| k.strip_prefix(&b.prefix)) else { continue };
                    let modified = object
                        .last_modified()
                        .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()));
                    found.push(ObjectInfo { key: key.to_string(), size: object.size().unwrap_or(0) as u64, modified });
                }
            }
            Ok(found)
        })
    }

    fn delete(&self, key: &str) -> Result<()> {
        let b = &self.bucket;
        let mut request = b.client.delete_object().bucket(&b.name).key(b.full_key(key));
        let retained = b.options.object_lock.is_some() && !key.starts_with(UNRETAINED_PREFIX);
        // The retention date if it lies in the future (then S3 refuses the delete).
        let mut retained_until = None;
        if retained {
            // In a versioned (WORM) bucket a plain delete only hides the object behind a marker;
            // deleting its version really removes it, or is refused while it is retained.
            let head = b.client.head_object().bucket(&b.name).key(b.full_key(key));
            let head = b.runtime.block_on(head.send()).map_err(|e| b.error("delete", key, e))?;
            let now = aws_sdk_s3::primitives::DateTime::from(std::time::SystemTime::now());
            retained_until =
                head.object_lock_retain_until_date().filter(|d| d.secs() > now.secs()).map(|d| d.to_string());
            request = request.set_version_id(head.version_id().map(str::to_string));
        }
        match b.runtime.block_on(request.send()) {
            Ok(_) => Ok(()),
            // Refused while retained: Object Lock. Refused otherwise: permissions (e.g. no
            // s3:DeleteObjectVersion), reported as such.
            Err(e) if retained_until.is_some() && e.code() == Some("AccessDenied") => Err(Error::Retained {
                location: b.location.clone(),
                key: key.to_string(),
                until: retained_until.expect("checked"),
            }),
            Err(e) => Err(b.error("delete", key, e)),
        }
    }

    fn is_remote(&self) -> bool {
        true
    }

    /// Aborts the multipart uploads below the prefix started before `before` (the
    /// AbortIncompleteMultipartUpload lifecycle rule does the same on AWS): a killed process
    /// never completes nor aborts its upload, whose parts are billed until then.
    fn remove_abandoned(&self, before: std::time::SystemTime) -> Result<usize> {
        let b = &self.bucket;
        let cutoff = aws_sdk_s3::primitives::DateTime::from(before).secs();
        b.runtime.block_on(async {
            let (mut key_marker, mut upload_marker) = (None, None);
            let mut removed = 0;
            loop {
                let request = b.client.list_multipart_uploads().bucket(&b.name).prefix(&b.prefix);
                let page = request
                    .set_key_marker(key_marker)
                    .set_upload_id_marker(upload_marker)
                    .send()
                    .await
                    .map_err(|e| b.error("list uploads", "", e))?;
                for upload in page.uploads() {
                    let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else { continue };
                    if upload.initiated().is_none_or(|t| t.secs() >= cutoff) {
                        continue;
                    }
                    let abort = b.client.abort_multipart_upload().bucket(&b.name).key(key).upload_id(id);
                    match abort.send().await {
                        Ok(_) => removed += 1,
                        Err(e) if e.code() == Some("NoSuchUpload") => {}
                        Err(e) => return Err(b.error("abort upload", key.strip_prefix(&b.prefix).unwrap_or(key), e)),
                    }
                }
                (key_marker, upload_marker) =
                    (page.next_key_marker().map(str::to_string), page.next_upload_id_marker().map(str::to_string));
                if !page.is_truncated().unwrap_or(false) || (key_marker.is_none() && upload_marker.is_none()) {
                    return Ok(removed);
                }
            }
        })
    }

    fn retention(&self, key: &str) -> Result<Option<Retention>> {
        let b = &self.bucket;
        let request = b.client.head_object().bucket(&b.name).key(b.full_key(key));
        let head = b.runtime.block_on(request.send()).map_err(|e| b.error("head", key, e))?;
        let until = head.object_lock_retain_until_date().and_then(|t| chrono::DateTime::from_timestamp(t.secs(), 0));
        Ok(match (head.object_lock_mode(), until) {
            (Some(mode), Some(until)) => Some(Retention { mode: mode.as_str().to_string(), until }),
            _ => None,
        })
    }

    fn exists(&self, key: &str) -> Result<bool> {
        let b = &self.bucket;
        let request = b.client.head_object().bucket(&b.name).key(b.full_key(key));
        match b.runtime.block_on(request.send()) {
            Ok(_) => Ok(true),
            Err(e) => match b.error("head", key, e) {
                Error::NotFound { .. } => Ok(false),
                other => Err(other),
            },
        }
    }
}

impl S3Store {
    /// GetObject, whole or a byte range, body read to the end. The SDK retries the request; a
    /// body cut off mid-way (a reset, a stall) is retried here, a few times with backoff.
    /// The object, or `len` bytes of it from `offset`. A range that starts past the end is
    /// `OutOfRange`, as on every store (S3 refuses it with 416 InvalidRange).
    fn read(&self, key: &str, range: Option<(u64, u64)>) -> Result<Vec<u8>> {
        /// A length the server announces is trusted this far before any byte arrives.
        const MAX_PREALLOCATION: u64 = 256 << 20;
        const BODY_ATTEMPTS: u32 = 4;
        let b = &self.bucket;
        let (client, bucket, full_key, log_key) = (b.client.clone(), b.name.clone(), b.full_key(key), key.to_string());
        // The read runs on the runtime's workers, which drive the connection. Awaited from this
        // thread instead, every piece of the body woke it up: a futex wake-up per piece, 7% of
        // an S3 restore's CPU.
        let task = b.runtime.spawn(async move {
            let mut attempt = 1;
            loop {
                // Whole objects come back with the checksum stored at upload, which the SDK
                // verifies (ranges have none; every chunk is authenticated anyway).
                let checksum = range.is_none().then_some(aws_sdk_s3::types::ChecksumMode::Enabled);
                let request = client
                    .get_object()
                    .bucket(&bucket)
                    .key(&full_key)
                    .set_range(range.map(|(offset, len)| format!("bytes={}-{}", offset, offset + len - 1)))
                    .set_checksum_mode(checksum);
                let out = request.send().await.map_err(|e| ReadFailure::Request(Box::new(e)))?;
                // Into one buffer of the announced size, piece by piece as it arrives: collecting
                // the pieces and joining them would hold the object two or three times over.
                let expected = range.map_or(out.content_length.unwrap_or(0).max(0) as u64, |r| r.1);
                let mut data = Vec::with_capacity(expected.min(MAX_PREALLOCATION) as usize);
                let mut body = out.body;
                let received = loop {
                    match body.try_next().await {
                        Ok(Some(piece)) => data.extend_from_slice(&piece),
                        Ok(None) => break Ok(data),
                        Err(e) => break Err(e),
                    }
                };
                match received {
                    Ok(data) => return Ok(data),
                    Err(e) if attempt < BODY_ATTEMPTS => {
                        tracing::warn!(key = log_key, error = %e, attempt, "reading an object was cut off; trying again");
                        tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                        attempt += 1;
                    }
                    Err(e) => return Err(ReadFailure::Body(e.to_string())),
                }
            }
        });
        let outcome = b.runtime.block_on(task).map_err(|e| b.remote("get", key, format!("the read stopped: {e}")))?;
        outcome.map_err(|failure| match failure {
            ReadFailure::Request(e) => match range {
                Some((offset, len)) if e.code() == Some("InvalidRange") => b.out_of_range(key, offset, len),
                _ => b.error("get", key, *e),
            },
            ReadFailure::Body(e) => b.remote("get", key, format!("the body was cut off {BODY_ATTEMPTS} times: {e}")),
        })
    }
}

/// Why a GET failed, as the read task hands it back to be turned into a store error.
enum ReadFailure {
    Request(Box<aws_sdk_s3::error::SdkError<aws_sdk_s3::operation::get_object::GetObjectError>>),
    Body(String),
}

type PartResult = std::result::Result<
    CompletedPart,
    SdkError<aws_sdk_s3::operation::upload_part::UploadPartError, aws_sdk_s3::config::http::HttpResponse>,
>;

/// A pack being uploaded: parts go up as they fill, a few at once; the object appears only on
/// completion.
struct S3Writer {
    bucket: Arc<Bucket>,
    key: String,
    buffer: Vec<u8>,
    upload: Option<String>,
    in_flight: VecDeque<tokio::task::JoinHandle<PartResult>>,
    parts: Vec<CompletedPart>,
    /// Bytes written so far.
    written: u64,
}

impl S3Writer {
    fn upload_id(&mut self) -> Result<String> {
        if let Some(id) = &self.upload {
            return Ok(id.clone());
        }
        let b = &self.bucket;
        let request = b
            .client
            .create_multipart_upload()
            .bucket(&b.name)
            .key(b.full_key(&self.key))
            .checksum_algorithm(ChecksumAlgorithm::Crc32C);
        let request = with_settings!(request, WriteSettings::for_key(b, &self.key));
        let out = b.runtime.block_on(request.send()).map_err(|e| b.error("start upload", &self.key, e))?;
        let id = out.upload_id().ok_or_else(|| b.remote("start upload", &self.key, "no upload id".into()))?;
        self.upload = Some(id.to_string());
        Ok(id.to_string())
    }

    /// Sends the buffer as the next part, waiting first for the oldest part if enough are in flight.
    fn send_part(&mut self) -> Result<()> {
        let upload = self.upload_id()?;
        if self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.wait_oldest()?;
        }
        let number = (self.parts.len() + self.in_flight.len()) as i32 + 1;
        let b = &self.bucket;
        let body = std::mem::take(&mut self.buffer);
        let request = b
            .client
            .upload_part()
            .bucket(&b.name)
            .key(b.full_key(&self.key))
            .upload_id(&upload)
            .part_number(number)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .body(ByteStream::from(body));
        let task = b.runtime.spawn(async move {
            let out = request.send().await?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_string))
                .set_checksum_crc32_c(out.checksum_crc32_c().map(str::to_string))
                .build())
        });
        self.in_flight.push_back(task);
        Ok(())
    }

    fn wait_oldest(&mut self) -> Result<()> {
        let task = self.in_flight.pop_front().expect("a part in flight");
        let b = &self.bucket;
        let sent = b
            .runtime
            .block_on(task)
            .map_err(|e| b.remote("upload part", &self.key, format!("the upload task failed: {e}")))?;
        self.parts.push(sent.map_err(|e| b.error("upload part", &self.key, e))?);
        Ok(())
    }
}

impl ObjectWriter for S3Writer {
    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.buffer.extend_from_slice(data);
        self.written += data.len() as u64;
        if self.buffer.len() >= PART_SIZE {
            self.send_part()?;
        }
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> Result<()> {
        if self.upload.is_none() {
            // Small enough for one request.
            let data = std::mem::take(&mut self.buffer);
            return S3Store { bucket: self.bucket.clone() }.put(&self.key, &data);
        }
        if !self.buffer.is_empty() {
            self.send_part()?;
        }
        while !self.in_flight.is_empty() {
            self.wait_oldest()?;
        }
        let b = &self.bucket;
        let parts = CompletedMultipartUpload::builder().set_parts(Some(std::mem::take(&mut self.parts))).build();
        let request = b
            .client
            .complete_multipart_upload()
            .bucket(&b.name)
            .key(b.full_key(&self.key))
            .upload_id(self.upload.clone().expect("started"))
            .multipart_upload(parts);
        match b.runtime.block_on(request.send()) {
            Ok(_) => {}
            // Some S3-compatible servers (moto 5) answer 200 with a body the SDK does not parse:
            // the upload is complete if the object is there with every byte written.
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 200) => {
                let head = b.client.head_object().bucket(&b.name).key(b.full_key(&self.key));
                let size = b.runtime.block_on(head.send()).ok().and_then(|h| h.content_length());
                if size != Some(self.written as i64) {
                    return Err(b.error("complete upload", &self.key, e));
                }
            }
            Err(e) => return Err(b.error("complete upload", &self.key, e)),
        }
        self.upload = None;
        Ok(())
    }
}

impl Drop for S3Writer {
    /// An upload never completed is aborted, so its parts do not linger (and cost) in the bucket.
    fn drop(&mut self) {
        for task in self.in_flight.drain(..) {
            task.abort();
        }
        if let Some(upload) = self.upload.take() {
            let b = &self.bucket;
            let request =
                b.client.abort_multipart_upload().bucket(&b.name).key(b.full_key(&self.key)).upload_id(upload);
            if let Err(e) = b.runtime.block_on(request.send()) {
                tracing::warn!(key = %self.key, error = %describe(&e), "cannot abort an unfinished upload");
            }
        }
    }
}
