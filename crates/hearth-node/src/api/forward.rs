//! Forwarding a call from a follower to the leader: the one way every service does it.
//!
//! A node never forwards a forwarded call again (it is marked), so a leadership change cannot
//! make a call loop. The leader gets the caller's own token, so it checks and records the
//! same principal. The forward has one deadline, [`forward_deadline`]: the leader's own
//! write timeout plus [`FORWARD_MARGIN`], so a leader that answers in time is heard, and one
//! that does not (stopped, cut off, paused) is named by this node as `NO_QUORUM` before the
//! client's own deadline (30 s for the CLI) runs out.

use std::future::Future;
use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::auth::Principal;
use crate::config::TimingConfig;
use crate::node::Node;

/// The metadata key that marks a forwarded call.
const FORWARDED: &str = "x-hearth-forwarded";

/// How much longer than the leader's own write timeout a forwarding node waits for the
/// leader's answer: the leader bounds each of its writes by the write timeout and says
/// `NO_QUORUM` itself, so its answer arrives within this margin unless it is gone.
pub const FORWARD_MARGIN: Duration = Duration::from_secs(3);

/// The one deadline of a forwarded call (8 s with the default 5 s write timeout).
pub fn forward_deadline(timing: &TimingConfig) -> Duration {
    Duration::from_millis(timing.write_timeout_ms) + FORWARD_MARGIN
}

/// Whether another node forwarded this request.
pub(crate) fn is_forwarded<T>(req: &Request<T>) -> bool {
    req.metadata().contains_key(FORWARDED)
}

/// Sends `msg` to the leader (`leader` at `addr`) with `rpc`, marked as forwarded, with the
/// caller's token and the forward deadline. The leader's own answers pass through unchanged;
/// a leader that could not be reached or did not answer in time becomes `NO_QUORUM` naming
/// it ([`leader_failed`]).
pub(crate) async fn to_leader<T, R, F, Fut>(
    node: &Node,
    leader: u64,
    addr: &str,
    caller: Option<&Principal>,
    msg: T,
    rpc: F,
) -> Result<Response<R>, Status>
where
    F: FnOnce(Channel, Request<T>) -> Fut,
    Fut: Future<Output = Result<Response<R>, Status>>,
{
    let deadline = forward_deadline(&node.config().timing);
    let fail = |s: Status| leader_failed(node.id, leader, addr, deadline, s);
    tracing::debug!(node = node.id, leader, "forwarding a call to the leader");
    let channel = hearth_cluster::grpc::shared_channel(addr, node.security())
        .map_err(|e| fail(Status::unavailable(format!("its address {addr:?}: {e}"))))?;
    let mut req = Request::new(msg);
    req.metadata_mut()
        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    if let Some(auth) = caller.and_then(|p| p.authorization.as_deref())
        && let Ok(v) = auth.parse()
    {
        req.metadata_mut().insert("authorization", v);
    }
    // The header tells the leader; the local timer holds even when the leader never reads it
    // (a connection that is accepted but never answered).
    req.set_timeout(deadline);
    match tokio::time::timeout(deadline, rpc(channel, req)).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(s)) => Err(fail(s)),
        Err(_) => Err(fail(Status::deadline_exceeded("no answer"))),
    }
}

/// A forward that did not reach the leader, or got no answer in time, is this node's lack of
/// a quorum from the client's point of view, and names the leader (not this node, which the
/// client would otherwise blame). The leader's own answers pass through unchanged.
pub(crate) fn leader_failed(
    node: u64,
    leader: u64,
    addr: &str,
    deadline: Duration,
    s: Status,
) -> Status {
    let transport = matches!(
        s.code(),
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled | tonic::Code::Unknown
    ) || (s.code() == tonic::Code::Unavailable
        && !s.message().starts_with("NO_QUORUM"));
    if !transport {
        return s;
    }
    Status::unavailable(format!(
        "NO_QUORUM: node {node} forwarded the request to the leader, node {leader} at {addr}, \
         which did not answer within {} ms ({}); nothing is known to have run there. Retry in a \
         few seconds (a new leader is elected if it is gone); a retry with the same idempotency \
         key never runs an intent twice",
        deadline.as_millis(),
        s.message()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(8);

    #[test]
    fn a_leader_that_does_not_answer_is_no_quorum_naming_it() {
        for s in [
            Status::deadline_exceeded("late"),
            Status::cancelled("gone"),
            Status::unknown("transport error"),
            Status::unavailable("connection refused"),
        ] {
            let out = leader_failed(2, 1, "10.0.0.1:7101", D, s);
            assert_eq!(out.code(), tonic::Code::Unavailable);
            assert!(out.message().starts_with("NO_QUORUM: node 2"), "{out:?}");
            assert!(out.message().contains("node 1 at 10.0.0.1:7101"), "{out:?}");
            assert!(out.message().contains("8000 ms"), "{out:?}");
        }
    }

    #[test]
    fn the_leaders_own_answers_pass_through() {
        for s in [
            Status::invalid_argument("field `id`: 0 is reserved"),
            Status::permission_denied("no"),
            Status::unavailable("NO_QUORUM: node 1 leads but no quorum"),
            Status::already_exists("key"),
        ] {
            let (code, msg) = (s.code(), s.message().to_string());
            let out = leader_failed(2, 1, "a:1", D, s);
            assert_eq!((out.code(), out.message()), (code, msg.as_str()));
        }
    }

    #[test]
    fn the_deadline_is_the_write_timeout_plus_the_margin() {
        let t = TimingConfig {
            write_timeout_ms: 5000,
            ..TimingConfig::default()
        };
        assert_eq!(forward_deadline(&t), Duration::from_secs(8));
    }
}
