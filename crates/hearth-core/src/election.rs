//! Telling an ordinary election from a lost quorum, for what a client is told when a write
//! cannot be made: "electing a leader, retry in N ms" is worth a retry soon; "no quorum" means
//! a majority cannot reach each other and a person may have to look.

/// What a node without a usable leader tells a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaderless {
    /// An election is under way (this node campaigns, or lost its leader recently): retry in
    /// about `retry_ms`.
    Electing { retry_ms: u64 },
    /// No leader for longer than an election should take.
    NoQuorum,
}

/// An election normally ends within a few election timeouts; past this many, say no quorum.
pub const ELECTION_WINDOW: u64 = 5;

/// `silent_ms`: since this node last heard from a leader (or started); `election_max_ms`: the
/// election timeout's upper bound; `candidate`: this node is campaigning right now.
pub fn leaderless(silent_ms: u64, election_max_ms: u64, candidate: bool) -> Leaderless {
    let window = election_max_ms.saturating_mul(ELECTION_WINDOW);
    if candidate || silent_ms <= window {
        Leaderless::Electing {
            retry_ms: election_max_ms.max(100),
        }
    } else {
        Leaderless::NoQuorum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_loss_or_campaign_is_an_election() {
        assert_eq!(
            leaderless(0, 2000, false),
            Leaderless::Electing { retry_ms: 2000 }
        );
        assert_eq!(
            leaderless(10_000, 2000, false),
            Leaderless::Electing { retry_ms: 2000 }
        );
        assert_eq!(leaderless(10_001, 2000, false), Leaderless::NoQuorum);
        // A candidate that keeps campaigning is still electing (it tells the client to retry).
        assert_eq!(
            leaderless(u64::MAX, 2000, true),
            Leaderless::Electing { retry_ms: 2000 }
        );
        // A tiny timeout still asks for a sensible pause.
        assert_eq!(
            leaderless(0, 10, false),
            Leaderless::Electing { retry_ms: 100 }
        );
        assert_eq!(
            leaderless(u64::MAX, u64::MAX, false),
            Leaderless::Electing { retry_ms: u64::MAX }
        );
    }
}
