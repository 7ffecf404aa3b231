//! `hearth device-sim`: a standalone simulated device over gRPC (`hearth.device.v1.DeviceSim`)
//! and, optionally, HTTP (`POST /command` with the JSON command; `GET /journal`). It keeps the
//! highest fencing token seen per device, refuses older ones, ignores a repeated action id,
//! and journals every command with what it did (also appended to a JSON-lines file if given).

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hearth_core::device_protocol::{DeviceCommand, Reply, SimDevices};
use hearth_proto::device as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use crate::{command_from_pb, reply_to_pb};

/// The simulator state shared by its gRPC and HTTP faces.
#[derive(Clone)]
pub struct DeviceSim {
    devices: Arc<Mutex<SimDevices>>,
    journal_file: Option<Arc<Mutex<std::fs::File>>>,
}

impl DeviceSim {
    pub fn new(journal: Option<PathBuf>) -> std::io::Result<Self> {
        let journal_file = match journal {
            Some(p) => Some(Arc::new(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ))),
            None => None,
        };
        Ok(Self {
            devices: Arc::default(),
            journal_file,
        })
    }

    pub fn receive(&self, cmd: DeviceCommand) -> Reply {
        let mut g = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        let reply = g.receive(cmd, crate::now_ms());
        if let (Some(f), Some(last)) = (&self.journal_file, g.journal().last()) {
            let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
            if let Ok(line) = serde_json::to_string(last) {
                // The journal file is evidence for tests; a failed write is reported, not fatal.
                if let Err(e) = writeln!(f, "{line}").and_then(|_| f.flush()) {
                    tracing::error!(error = %e, "device-sim could not write its journal file");
                }
            }
        }
        tracing::info!(?reply, "device-sim command");
        reply
    }

    pub fn journal_lines(&self) -> Vec<String> {
        let g = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        g.journal()
            .iter()
            .filter_map(|j| serde_json::to_string(j).ok())
            .collect()
    }

    /// Serves the HTTP face until the task is aborted.
    pub async fn serve_http(self, listener: TcpListener) {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            let sim = self.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head, then as much body as Content-Length says (bounded).
                let (head_end, len) = loop {
                    let Some(n) = read_some(&mut sock, &mut chunk).await else {
                        return;
                    };
                    if buf.len() > 1 << 20 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.strip_prefix("content-length:")
                                    .and_then(|v| v.trim().parse::<usize>().ok())
                            })
                            .unwrap_or(0);
                        break (i + 4, len.min(1 << 20));
                    }
                };
                while buf.len() < head_end + len {
                    let Some(n) = read_some(&mut sock, &mut chunk).await else {
                        return;
                    };
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let body = &buf[head_end..head_end + len];
                let (code, out) = if head.starts_with("POST /command ") {
                    match serde_json::from_slice::<DeviceCommand>(body) {
                        Ok(cmd) => (
                            "200 OK",
                            serde_json::to_string(&sim.receive(cmd)).unwrap_or_default(),
                        ),
                        Err(e) => (
                            "400 Bad Request",
                            format!("{{\"error\":{:?}}}", e.to_string()),
                        ),
                    }
                } else if head.starts_with("GET /journal ") {
                    ("200 OK", sim.journal_lines().join("\n"))
                } else {
                    (
                        "404 Not Found",
                        "{\"error\":\"POST /command or GET /journal\"}".to_string(),
                    )
                };
                let resp = format!(
                    "HTTP/1.1 {code}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{out}",
                    out.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    }
}

/// Reads what is there within 5 s; `None` on timeout, error or end of stream.
async fn read_some(sock: &mut tokio::net::TcpStream, chunk: &mut [u8]) -> Option<usize> {
    match tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(chunk)).await {
        Ok(Ok(n)) if n > 0 => Some(n),
        _ => None,
    }
}

#[tonic::async_trait]
impl pb::device_sim_server::DeviceSim for DeviceSim {
    async fn command(
        &self,
        req: Request<pb::DeviceCommand>,
    ) -> Result<Response<pb::DeviceReply>, Status> {
        let cmd = command_from_pb(req.into_inner());
        if cmd.action_id.is_empty() || cmd.device.is_empty() {
            return Err(Status::invalid_argument(
                "action_id and device are required",
            ));
        }
        Ok(Response::new(reply_to_pb(&self.receive(cmd))))
    }

    async fn journal(
        &self,
        _req: Request<pb::JournalRequest>,
    ) -> Result<Response<pb::JournalResponse>, Status> {
        Ok(Response::new(pb::JournalResponse {
            entries: self.journal_lines(),
        }))
    }
}
