//! The S3 backend (`s3://bucket/prefix`), on the AWS SDK: credentials and region from the default
//! chain (environment, profile, web identity / IRSA), an optional endpoint and path-style
//! addressing for S3-compatible services. Large objects (packs) go up as multipart uploads, part
//! by part as they are written, so a pack never sits in memory whole; an upload that is dropped
//! before `commit` is aborted, leaving nothing visible. The SDK retries throttling, 5xx and
//! connection faults with exponential backoff and jitter, and checks the CRC it sends and gets.

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use std::sync::Arc;

use super::{Error, ObjectInfo, ObjectWriter, Result, Store};

/// Size of each part of a multipart upload (S3 wants at least 5 MiB but the last).
const PART_SIZE: usize = 16 << 20;

/// How to reach an S3-compatible service.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// A custom endpoint (`--s3-endpoint` / `DRCTL_S3_ENDPOINT`), e.g. a local S3-compatible server.
    pub endpoint: Option<String>,
    /// Path-style addressing (`bucket` in the path, not the host name).
    pub path_style: bool,
}

pub struct S3Store {
    client: Client,
    bucket: String,
    /// Key prefix inside the bucket, empty or ending in `/`.
    prefix: String,
    location: String,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl S3Store {
    /// Opens `s3://bucket[/prefix]`.
    pub fn open(location: &str, options: &S3Options) -> std::result::Result<S3Store, String> {
        let rest = location.strip_prefix("s3://").ok_or("an S3 location starts with s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err("the location names no bucket (write s3://bucket/prefix)".into());
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
        let shared = runtime.block_on(aws_config::load_defaults(aws_config::BehaviorVersion::latest()));
        let mut config = aws_sdk_s3::config::Builder::from(&shared).force_path_style(options.path_style);
        if let Some(endpoint) = &options.endpoint {
            config = config.endpoint_url(endpoint);
        }
        Ok(S3Store {
            client: Client::from_conf(config.build()),
            bucket: bucket.to_string(),
            prefix,
            location: location.trim_end_matches('/').to_string(),
            runtime: Arc::new(runtime),
        })
    }

    /// GetObject, whole or a byte range, body read to the end.
    fn read(&self, key: &str, range: Option<String>) -> Result<Vec<u8>> {
        let request = self.client.get_object().bucket(&self.bucket).key(self.full_key(key)).set_range(range);
        self.runtime.block_on(async {
            let out = request.send().await.map_err(|e| self.remote("get", key, e))?;
            let body = out.body.collect().await.map_err(|e| Error::Remote {
                location: self.location.clone(),
                op: "get",
                key: key.to_string(),
                detail: e.to_string(),
            })?;
            Ok(body.into_bytes().to_vec())
        })
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn remote<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
        &self,
        op: &'static str,
        key: &str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> Error {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().map(str::to_string);
        if code.as_deref() == Some("NoSuchBucket") {
            return Error::Remote {
                location: self.location.clone(),
                op,
                key: key.to_string(),
                detail: format!("bucket {} does not exist (create it, or check its name and the region)", self.bucket),
            };
        }
        if matches!(code.as_deref(), Some("NoSuchKey" | "NotFound")) || (code.is_none() && status == Some(404)) {
            return Error::NotFound { location: self.location.clone(), key: key.to_string() };
        }
        Error::Remote { location: self.location.clone(), op, key: key.to_string(), detail: describe(&err) }
    }
}

/// The service's error code and message when it sent one (AccessDenied, ExpiredToken, …), else
/// the transport failure (connection refused, timeout) with its causes.
fn describe<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> String {
    match (err.code(), err.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => {
            let text = format!("{}", DisplayErrorContext(err));
            // Unparsed responses carry the whole raw response; the first clause says enough.
            text.split(" (").next().unwrap_or(&text).to_string()
        }
    }
}

impl Store for S3Store {
    fn location(&self) -> &str {
        &self.location
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .body(ByteStream::from(data.to_vec()))
            .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32C);
        self.runtime.block_on(request.send()).map_err(|e| self.remote("put", key, e))?;
        Ok(())
    }

    fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        Ok(Box::new(S3Writer {
            store: S3Handle {
                client: self.client.clone(),
                bucket: self.bucket.clone(),
                key: self.full_key(key),
                runtime: self.runtime.clone(),
                location: self.location.clone(),
            },
            buffer: Vec::new(),
            upload: None,
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
        let data = self.read(key, Some(format!("bytes={}-{}", offset, offset + len - 1)))?;
        if data.len() as u64 != len {
            return Err(Error::OutOfRange { location: self.location.clone(), key: key.to_string(), offset, len });
        }
        Ok(data)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let full = self.full_key(prefix);
        let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(&full).into_paginator().send();
        self.runtime.block_on(async {
            let mut found = Vec::new();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| self.remote("list", prefix, e))?;
                for object in page.contents() {
                    let Some(key) = object.key().and_then(|k| k.strip_prefix(&self.prefix)) else { continue };
                    found.push(ObjectInfo { key: key.to_string(), size: object.size().unwrap_or(0) as u64 });
                }
            }
            Ok(found)
        })
    }

    fn delete(&self, key: &str) -> Result<()> {
        let request = self.client.delete_object().bucket(&self.bucket).key(self.full_key(key));
        self.runtime.block_on(request.send()).map_err(|e| self.remote("delete", key, e))?;
        Ok(())
    }

    fn exists(&self, key: &str) -> Result<bool> {
        let request = self.client.head_object().bucket(&self.bucket).key(self.full_key(key));
        match self.runtime.block_on(request.send()) {
            Ok(_) => Ok(true),
            Err(e) => match self.remote("head", key, e) {
                Error::NotFound { .. } => Ok(false),
                other => Err(other),
            },
        }
    }
}

/// What a writer needs of its store.
struct S3Handle {
    client: Client,
    bucket: String,
    key: String,
    runtime: Arc<tokio::runtime::Runtime>,
    location: String,
}

impl S3Handle {
    fn fail(&self, op: &'static str, detail: String) -> Error {
        Error::Remote { location: self.location.clone(), op, key: self.key.clone(), detail }
    }
}

/// A pack being uploaded: parts go up as they fill; the object appears only on completion.
struct S3Writer {
    store: S3Handle,
    buffer: Vec<u8>,
    upload: Option<String>,
    parts: Vec<CompletedPart>,
    /// Bytes written so far.
    written: u64,
}

impl S3Writer {
    fn send_part(&mut self) -> Result<()> {
        let s = &self.store;
        let upload = match &self.upload {
            Some(id) => id.clone(),
            None => {
                let request = s
                    .client
                    .create_multipart_upload()
                    .bucket(&s.bucket)
                    .key(&s.key)
                    .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32C);
                let out = s.runtime.block_on(request.send()).map_err(|e| s.fail("start upload", describe(&e)))?;
                let id = out.upload_id().ok_or_else(|| s.fail("start upload", "no upload id".into()))?.to_string();
                self.upload = Some(id.clone());
                id
            }
        };
        let number = self.parts.len() as i32 + 1;
        let body = std::mem::take(&mut self.buffer);
        let request = s
            .client
            .upload_part()
            .bucket(&s.bucket)
            .key(&s.key)
            .upload_id(&upload)
            .part_number(number)
            .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32C)
            .body(ByteStream::from(body));
        let out = s.runtime.block_on(request.send()).map_err(|e| s.fail("upload part", describe(&e)))?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_string))
                .set_checksum_crc32_c(out.checksum_crc32_c().map(str::to_string))
                .build(),
        );
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
            let s = &self.store;
            let request = s
                .client
                .put_object()
                .bucket(&s.bucket)
                .key(&s.key)
                .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32C)
                .body(ByteStream::from(std::mem::take(&mut self.buffer)));
            s.runtime.block_on(request.send()).map_err(|e| s.fail("put", describe(&e)))?;
            return Ok(());
        }
        if !self.buffer.is_empty() {
            self.send_part()?;
        }
        let s = &self.store;
        let parts = CompletedMultipartUpload::builder().set_parts(Some(std::mem::take(&mut self.parts))).build();
        let request = s
            .client
            .complete_multipart_upload()
            .bucket(&s.bucket)
            .key(&s.key)
            .upload_id(self.upload.clone().expect("started"))
            .multipart_upload(parts);
        match s.runtime.block_on(request.send()) {
            Ok(_) => {}
            // Some S3-compatible servers (moto 5) answer 200 with a body the SDK does not parse:
            // the upload is complete if the object is there with every byte written.
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 200) => {
                let head = s.client.head_object().bucket(&s.bucket).key(&s.key);
                let size = s.runtime.block_on(head.send()).ok().and_then(|h| h.content_length());
                if size != Some(self.written as i64) {
                    return Err(s.fail("complete upload", describe(&e)));
                }
            }
            Err(e) => return Err(s.fail("complete upload", describe(&e))),
        }
        self.upload = None;
        Ok(())
    }
}

impl Drop for S3Writer {
    /// An upload never completed is aborted, so its parts do not linger (and cost) in the bucket.
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take() {
            let s = &self.store;
            let request = s.client.abort_multipart_upload().bucket(&s.bucket).key(&s.key).upload_id(upload);
            if let Err(e) = s.runtime.block_on(request.send()) {
                tracing::warn!(key = %s.key, error = %describe(&e), "cannot abort an unfinished upload");
            }
        }
    }
}
