//! Calls this node refused before anything was appended: an unknown or missing token, a role
//! too low, a grant not held, a rate limit. They must stay out of the chain (nothing was
//! decided), yet a household wants to see them next to it (`hearth audit tail --refused`):
//! each node keeps the latest ones in a bounded in-memory ring, lost on restart, served by
//! `Audit.Refusals`.
//!
//! What is kept is what the caller was told, the method, the principal's name (when its token
//! was known), the client's address and the time — never a token: a message that happens to
//! contain the presented token has it blanked out before it is kept.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hearth_proto::v1 as pb;

/// How many refusals a node keeps.
pub const CAPACITY: usize = 1024;
/// The longest message kept (bytes); longer ones are cut at a character boundary.
pub const MAX_MESSAGE: usize = 500;

/// Whether a call that ended with `code` was refused (rather than failed or bad input).
pub fn is_refusal(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unauthenticated
            | tonic::Code::PermissionDenied
            | tonic::Code::ResourceExhausted
    )
}

/// One refused call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub at_ms: u64,
    pub method: String,
    pub code: tonic::Code,
    /// The token's name; `None` when no known token was presented.
    pub principal: Option<String>,
    pub message: String,
    pub peer: Option<SocketAddr>,
}

impl Refused {
    /// A refusal now (this node's wall clock), its message cleaned: `secret` (the token the
    /// caller presented, if any) never appears in it, nor control characters, and it is cut
    /// to [`MAX_MESSAGE`] bytes.
    pub fn new(
        method: &str,
        status: &tonic::Status,
        principal: Option<String>,
        peer: Option<SocketAddr>,
        secret: Option<&str>,
    ) -> Self {
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self {
            at_ms,
            method: clean(method, None),
            code: status.code(),
            principal,
            message: clean(status.message(), secret),
            peer,
        }
    }
}

fn clean(text: &str, secret: Option<&str>) -> String {
    let mut s: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if let Some(t) = secret.map(str::trim).filter(|t| !t.is_empty()) {
        s = s.replace(t, "[token]");
    }
    if s.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// The ring of one node.
#[derive(Debug)]
pub struct Refusals {
    node_id: u64,
    capacity: usize,
    ring: Mutex<VecDeque<Refused>>,
    dropped: AtomicU64,
}

impl Refusals {
    pub fn new(node_id: u64) -> Self {
        Self::with_capacity(node_id, CAPACITY)
    }

    pub fn with_capacity(node_id: u64, capacity: usize) -> Self {
        Self {
            node_id,
            capacity: capacity.max(1),
            ring: Mutex::new(VecDeque::new()),
            dropped: AtomicU64::new(0),
        }
    }

    /// Keeps `r`, dropping the oldest when the ring is full.
    pub fn record(&self, r: Refused) {
        let mut g = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        while g.len() >= self.capacity {
            g.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        g.push_back(r);
    }

    /// The newest `count` (0: all) at or after `since_ms`, oldest first, and how many the
    /// ring dropped since the node started.
    pub fn recent(&self, count: usize, since_ms: u64) -> (Vec<Refused>, u64) {
        let g = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let matching: Vec<&Refused> = g.iter().filter(|r| r.at_ms >= since_ms).collect();
        let skip = if count == 0 {
            0
        } else {
            matching.len().saturating_sub(count)
        };
        (
            matching.into_iter().skip(skip).cloned().collect(),
            self.dropped.load(Ordering::Relaxed),
        )
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }
}

/// The name gRPC gives a status code (`PERMISSION_DENIED`).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// `Audit.Refusals`: this node's ring, as the API returns it.
pub fn serve(ring: &Refusals, req: &pb::RefusalsRequest) -> pb::RefusalsResponse {
    let count = usize::try_from(req.count).unwrap_or(CAPACITY);
    let (list, dropped) = ring.recent(count, req.since_ms);
    pb::RefusalsResponse {
        refused: list
            .into_iter()
            .map(|r| pb::RefusedCall {
                at_ms: r.at_ms,
                method: r.method,
                code: code_name(r.code).to_string(),
                principal: r.principal.unwrap_or_default(),
                message: r.message,
                peer: r.peer.map(|p| p.to_string()).unwrap_or_default(),
                node_id: ring.node_id(),
            })
            .collect(),
        dropped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(at_ms: u64, msg: &str) -> Refused {
        Refused {
            at_ms,
            method: "/hearth.v1.Intents/Submit".into(),
            code: tonic::Code::PermissionDenied,
            principal: Some("ag".into()),
            message: msg.into(),
            peer: None,
        }
    }

    #[test]
    fn the_ring_is_bounded_and_counts_what_it_dropped() {
        let r = Refusals::with_capacity(7, 3);
        for i in 0..5 {
            r.record(refused(i, &format!("m{i}")));
        }
        let (all, dropped) = r.recent(0, 0);
        assert_eq!(dropped, 2);
        assert_eq!(
            all.iter().map(|x| x.message.as_str()).collect::<Vec<_>>(),
            ["m2", "m3", "m4"],
            "the newest, oldest first"
        );
        let (last, _) = r.recent(2, 0);
        assert_eq!(last[0].message, "m3");
        let (since, _) = r.recent(0, 4);
        assert_eq!(since.len(), 1);
        assert!(r.recent(0, 99).0.is_empty());
        let resp = serve(
            &r,
            &pb::RefusalsRequest {
                count: 1,
                since_ms: 0,
            },
        );
        assert_eq!(resp.refused.len(), 1);
        assert_eq!(resp.refused[0].code, "PERMISSION_DENIED");
        assert_eq!(resp.refused[0].node_id, 7);
        assert_eq!(resp.refused[0].principal, "ag");
        assert_eq!(resp.dropped, 2);
    }

    #[test]
    fn a_token_never_stays_in_a_kept_message() {
        let secret = "s3cr3t-token-value";
        let status =
            tonic::Status::unauthenticated(format!("token {secret} unknown\nsecond line {secret}"));
        let r = Refused::new("/x/Y", &status, None, None, Some(secret));
        assert!(!r.message.contains(secret), "{}", r.message);
        assert!(!r.message.contains('\n'));
        assert!(r.message.contains("[token]"));
        let long = tonic::Status::permission_denied("é".repeat(MAX_MESSAGE));
        let r = Refused::new("/x/Y", &long, None, None, None);
        assert!(r.message.len() <= MAX_MESSAGE + '…'.len_utf8());
        assert!(r.at_ms > 0);
    }

    #[test]
    fn only_denials_rate_limits_and_bad_tokens_are_refusals() {
        assert!(is_refusal(tonic::Code::Unauthenticated));
        assert!(is_refusal(tonic::Code::PermissionDenied));
        assert!(is_refusal(tonic::Code::ResourceExhausted));
        for c in [
            tonic::Code::Ok,
            tonic::Code::InvalidArgument,
            tonic::Code::NotFound,
            tonic::Code::Unavailable,
            tonic::Code::FailedPrecondition,
        ] {
            assert!(!is_refusal(c), "{c:?}");
        }
    }
}
