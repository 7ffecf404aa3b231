//! Client channels of the benchmarks: plain text, like the etcd Hearth is compared with (every
//! cluster the benchmarks start is `insecure`).

use std::time::Duration;

use anyhow::Context;
use tonic::transport::Channel;

/// A lazily connected plain-text channel to `addr` (`host:port`), as a node's own.
pub fn channel(addr: &str) -> anyhow::Result<Channel> {
    hearth_cluster::grpc::lazy_channel(addr).with_context(|| format!("{addr:?}"))
}

/// `f`, or DEADLINE_EXCEEDED after `d`.
pub async fn with_timeout<T>(
    d: Duration,
    f: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(d, f).await {
        Ok(r) => r,
        Err(_) => Err(tonic::Status::deadline_exceeded("no answer in time")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_bad_address_is_an_error_naming_it() {
        let e = super::channel("no such host:port:x").unwrap_err();
        assert!(format!("{e:#}").contains("no such host:port:x"), "{e:#}");
    }
}
