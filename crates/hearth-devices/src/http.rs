//! The HTTP webhook adapter: `POST <url>` with the command as JSON; the body of a 2xx answer is
//! the device's reply as JSON. Plain HTTP/1.1 on a fresh connection (no TLS: a home LAN device
//! or a local bridge). Kept minimal on purpose: one request, one response, bounded sizes.

use hearth_core::device_protocol::{DeviceCommand, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::AdapterError;

/// Largest reply body read.
const MAX_REPLY: usize = 64 * 1024;

/// Splits `http://host:port/path` (the check registration runs too).
pub use hearth_core::intent::parse_http_url as parse_url;

pub async fn post_command(url: &str, cmd: &DeviceCommand) -> Result<Reply, AdapterError> {
    let dev = || cmd.device.clone();
    let (hostport, path) = parse_url(url).map_err(|e| AdapterError::Unreachable(dev(), e))?;
    let body = serde_json::to_vec(cmd).map_err(|e| AdapterError::BadReply(dev(), e.to_string()))?;
    let mut s = TcpStream::connect(&hostport)
        .await
        .map_err(|e| AdapterError::Unreachable(dev(), format!("{hostport}: {e}")))?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .await
        .map_err(|e| AdapterError::Unreachable(dev(), e.to_string()))?;
    s.write_all(&body)
        .await
        .map_err(|e| AdapterError::Unreachable(dev(), e.to_string()))?;
    let mut resp = Vec::new();
    s.take(MAX_REPLY as u64 + 4096)
        .read_to_end(&mut resp)
        .await
        .map_err(|e| AdapterError::Unreachable(dev(), e.to_string()))?;
    let text = String::from_utf8_lossy(&resp);
    let (status_line, rest) = text
        .split_once("\r\n")
        .ok_or_else(|| AdapterError::BadReply(dev(), "no status line".into()))?;
    let code: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| AdapterError::BadReply(dev(), format!("bad status line {status_line:?}")))?;
    let body = rest.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    if !(200..300).contains(&code) {
        return Err(AdapterError::BadReply(
            dev(),
            format!(
                "HTTP {code}: {}",
                body.chars().take(200).collect::<String>()
            ),
        ));
    }
    serde_json::from_str(body).map_err(|e| AdapterError::BadReply(dev(), e.to_string()))
}
