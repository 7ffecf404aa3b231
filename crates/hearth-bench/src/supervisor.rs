//! The process supervisor of `hearth-bench compare`: each Hearth node and etcd member is a
//! real child process with its own log, killed (SIGKILL) when dropped, and sampled through
//! `/proc` for its memory and CPU.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// One child process, killed (SIGKILL) when dropped.
pub struct Proc {
    pub name: String,
    exe: PathBuf,
    args: Vec<OsString>,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    pub fn new(name: &str, exe: &Path, args: Vec<OsString>, log: PathBuf) -> Proc {
        Proc {
            name: name.to_string(),
            exe: exe.to_path_buf(),
            args,
            log,
            child: None,
        }
    }

    pub fn start(&mut self) -> anyhow::Result<()> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let err = out.try_clone()?;
        let child = Process::new(&self.exe)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {} ({})", self.name, self.exe.display()))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `kill -9`, and reap it.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill().with_context(|| format!("killing {}", self.name))?;
            c.wait()?;
        }
        Ok(())
    }

    /// SIGTERM (a planned stop), then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) -> anyhow::Result<()> {
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        let _ = Process::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if c.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        c.kill()?;
        c.wait()?;
        Ok(())
    }

    /// Fails with the tail of its log if the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(c) = self.child.as_mut()
            && let Some(st) = c.try_wait()?
        {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{} exited ({st}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                tail.join("\n")
            );
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

/// Resident memory (MiB) and CPU ticks (user + system) of a process.
fn proc_sample(pid: u32) -> anyhow::Result<(f64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let rss_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/PID/status")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses: state is field 3, utime 14,
    // stime 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unexpected /proc/PID/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> anyhow::Result<u64> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .context("unexpected /proc/PID/stat")
    };
    Ok((rss_kb / 1024.0, tick(11)? + tick(12)?))
}

fn clock_ticks() -> f64 {
    Process::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Idle RSS (MiB, at the end) and CPU (% of one core) of each pid over `secs`.
pub async fn idle(pids: &[u32], secs: f64) -> anyhow::Result<Vec<(f64, f64)>> {
    let before: Vec<u64> = pids
        .iter()
        .map(|p| proc_sample(*p).map(|s| s.1))
        .collect::<anyhow::Result<_>>()?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let wall = t0.elapsed().as_secs_f64();
    let hz = clock_ticks();
    let mut out = Vec::new();
    for (p, b) in pids.iter().zip(before) {
        let (rss, after) = proc_sample(*p)?;
        out.push((rss, (after.saturating_sub(b)) as f64 / hz / wall * 100.0));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_memory_and_cpu_from_proc() {
        let (rss, _ticks) = proc_sample(std::process::id()).unwrap();
        assert!(rss > 0.0);
        assert!(proc_sample(u32::MAX).is_err());
    }
}
