//! Steady client load: a new intent every `period`, each with its own idempotency key, sent
//! through the real gRPC API to the nodes in turn; on any error the same intent (same key,
//! same body) is retried on the next node until it is acknowledged or its deadline passes —
//! what a careful agent does.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hearth_proto::v1 as pb;
use hearth_proto::v1::intents_client::IntentsClient;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::check::Ack;

#[derive(Debug, Clone)]
pub struct Failed {
    pub key: String,
    pub intent_id: String,
    pub last_error: String,
    /// No attempt could have appended it: every answer was "nothing was appended" or no
    /// connection at all.
    pub never_appended: bool,
}

#[derive(Debug, Default)]
pub struct LoadReport {
    pub acked: Vec<Ack>,
    pub failed: Vec<Failed>,
    /// Attempts answered `NO_QUORUM` (later retried elsewhere or not).
    pub no_quorum_answers: usize,
}

pub struct Load {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<LoadReport>,
}

/// The source of the suite's intents: idempotency keys are scoped to it.
pub const SOURCE: &str = "partition-suite";

pub fn request(key: &str) -> pb::SubmitIntentRequest {
    pb::SubmitIntentRequest {
        class: "ensure_safety".into(),
        urgency: "emergency".into(),
        subject: "partition suite".into(),
        location: "home".into(),
        idempotency_key: key.into(),
        source: SOURCE.into(),
        ..Default::default()
    }
}

pub fn channel(addr: &str) -> tonic::transport::Channel {
    // The address is a constant of the suite; a malformed one is a bug here.
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid endpoint")
        .connect_timeout(Duration::from_secs(1))
        .connect_lazy()
}

/// One submit attempt, bounded: a paused node never answers.
pub async fn submit_once(addr: &str, key: &str) -> Result<pb::IntentView, tonic::Status> {
    let mut c = IntentsClient::new(channel(addr));
    match tokio::time::timeout(Duration::from_secs(8), c.submit(request(key))).await {
        Ok(r) => r.map(|r| r.into_inner()),
        Err(_) => Err(tonic::Status::deadline_exceeded("no answer within 8 s")),
    }
}

fn never_appended(s: &tonic::Status) -> bool {
    s.message().contains("nothing was appended")
        || (s.code() == tonic::Code::Unavailable
            && (s.message().contains("tcp connect error")
                || s.message().contains("Connection refused")))
}

impl Load {
    pub fn start(
        endpoints: Vec<String>,
        tag: String,
        period: Duration,
        deadline: Duration,
    ) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let report = Arc::new(Mutex::new(LoadReport::default()));
        let task = tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            let mut n = 0usize;
            let mut tick = tokio::time::interval(period);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => break,
                }
                let key = format!("{tag}-{n}");
                let (endpoints, report) = (endpoints.clone(), report.clone());
                let first = n % endpoints.len();
                n += 1;
                tasks.spawn(async move {
                    let until = Instant::now() + deadline;
                    let intent_id = hearth_core::domain::scoped_intent_id(Some(SOURCE), &key);
                    let mut last_error = String::new();
                    let mut appended_maybe = false;
                    for attempt in 0.. {
                        let addr = &endpoints[(first + attempt) % endpoints.len()];
                        match submit_once(addr, &key).await {
                            Ok(v) => {
                                let mut r = report.lock().unwrap_or_else(|p| p.into_inner());
                                r.acked.push(Ack {
                                    key,
                                    intent_id: v.id,
                                    index: v.index,
                                });
                                return;
                            }
                            Err(s) => {
                                if s.message().starts_with("NO_QUORUM") {
                                    report
                                        .lock()
                                        .unwrap_or_else(|p| p.into_inner())
                                        .no_quorum_answers += 1;
                                }
                                appended_maybe |= !never_appended(&s);
                                last_error = format!("{addr}: {:?}: {}", s.code(), s.message());
                            }
                        }
                        if Instant::now() >= until {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    report
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .failed
                        .push(Failed {
                            key,
                            intent_id,
                            last_error,
                            never_appended: !appended_maybe,
                        });
                });
            }
            while tasks.join_next().await.is_some() {}
            std::mem::take(&mut *report.lock().unwrap_or_else(|p| p.into_inner()))
        });
        Self { stop, task }
    }

    /// Stops starting new intents and waits for those in flight to be acknowledged or fail.
    pub async fn finish(self) -> LoadReport {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}
