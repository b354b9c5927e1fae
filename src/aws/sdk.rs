//! The one SDK configuration every AWS client of drctl starts from (S3, KMS, RDS): the same retries
//! and timeouts everywhere, tuned by the same environment variables.

use std::time::Duration;

/// How many times a request is tried (`DRCTL_S3_MAX_ATTEMPTS`, default 8): throttling (503
/// SlowDown), 5xx, timeouts and connection resets are retried with exponential backoff and full
/// jitter, from 0.2 s up to 20 s between attempts, so a backup rides out a minute-long brown-out.
pub fn retry_config() -> aws_config::retry::RetryConfig {
    aws_config::retry::RetryConfig::standard()
        .with_max_attempts(env_number("DRCTL_S3_MAX_ATTEMPTS", 8) as u32)
        .with_initial_backoff(Duration::from_millis(200))
        .with_max_backoff(Duration::from_secs(20))
}

/// A request whose response has not begun within `DRCTL_S3_TIMEOUT` seconds (default 120: a
/// 16 MiB part on a slow uplink fits) is abandoned and retried; a body that stalls mid-way is cut
/// by the SDK's stalled-stream protection.
pub fn timeout_config() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs_f64(env_number("DRCTL_S3_TIMEOUT", 120.0)))
        .build()
}

/// Loads the shared configuration (credentials from the default chain) on `runtime`, in `region`
/// when one is given, else in the default chain's.
pub fn load(runtime: &tokio::runtime::Runtime, region: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(crate::store::https::client())
        .retry_config(retry_config())
        .timeout_config(timeout_config());
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_string()));
    }
    runtime.block_on(loader.load())
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| {
            tracing::warn!("{name}={v:?} is not a number; using the default");
            default
        }),
        Err(_) => default,
    }
}
