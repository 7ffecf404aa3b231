//! Faults made from outside the nodes: the docker CLI for the containers, and `iptables` run in a
//! container's network namespace (entered from the host with `nsenter`) to cut single links.
//! The image carries no tools and the containers need no extra capabilities.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

pub struct Docker {
    pub root: PathBuf,
    pub project: String,
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Says whether a Docker engine answers, and why not.
pub fn engine_check() -> anyhow::Result<()> {
    run(Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]))
        .context("no Docker engine answers (`docker info` failed)")?;
    run(Command::new("docker").args(["image", "inspect", "hearth:dev"]))
        .context("image hearth:dev is missing: build it with deploy/build-image.sh")?;
    for tool in ["nsenter", "iptables"] {
        run(Command::new("sh").args(["-c", &format!("command -v {tool}")]))
            .with_context(|| format!("{tool} is needed on the host to cut single links"))?;
    }
    Ok(())
}

impl Docker {
    fn compose(&self) -> Command {
        let mut c = Command::new("docker-compose");
        c.current_dir(&self.root)
            .args(["-p", &self.project, "-f", "docker-compose.yml"]);
        c
    }

    pub fn down(&self) -> anyhow::Result<()> {
        run(self
            .compose()
            .args(["down", "-v", "--remove-orphans", "-t", "2"]))?;
        Ok(())
    }

    pub fn up(&self) -> anyhow::Result<()> {
        run(self.compose().args(["up", "-d"]))?;
        Ok(())
    }

    pub fn kill(&self, c: &str) -> anyhow::Result<()> {
        run(Command::new("docker").args(["kill", "-s", "KILL", c]))?;
        Ok(())
    }

    pub fn start(&self, c: &str) -> anyhow::Result<()> {
        run(Command::new("docker").args(["start", c]))?;
        Ok(())
    }

    /// A planned stop (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(&self, c: &str) -> anyhow::Result<()> {
        run(Command::new("docker").args(["stop", "-t", "10", c]))?;
        Ok(())
    }

    pub fn pause(&self, c: &str) -> anyhow::Result<()> {
        run(Command::new("docker").args(["pause", c]))?;
        Ok(())
    }

    pub fn unpause(&self, c: &str) -> anyhow::Result<()> {
        run(Command::new("docker").args(["unpause", c]))?;
        Ok(())
    }

    fn pid(&self, c: &str) -> anyhow::Result<String> {
        let pid = run(Command::new("docker").args(["inspect", "-f", "{{.State.Pid}}", c]))?;
        if pid == "0" || pid.is_empty() {
            bail!("container {c} is not running");
        }
        Ok(pid)
    }

    pub fn ip(&self, c: &str) -> anyhow::Result<String> {
        let ip = run(Command::new("docker").args([
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            c,
        ]))?;
        ip.split_whitespace()
            .next()
            .map(str::to_string)
            .with_context(|| format!("container {c} has no address"))
    }

    fn iptables(&self, c: &str, args: &[&str]) -> anyhow::Result<()> {
        let pid = self.pid(c)?;
        run(Command::new("nsenter")
            .args(["-t", &pid, "-n", "iptables", "-w"])
            .args(args))?;
        Ok(())
    }

    /// Drops every packet between containers `a` and `b`, in both namespaces. Each keeps its
    /// other links, its clients and its devices.
    pub fn cut(&self, a: &str, b: &str) -> anyhow::Result<()> {
        let (ia, ib) = (self.ip(a)?, self.ip(b)?);
        for (c, other) in [(a, &ib), (b, &ia)] {
            self.iptables(c, &["-I", "INPUT", "-s", other, "-j", "DROP"])?;
            self.iptables(c, &["-I", "OUTPUT", "-d", other, "-j", "DROP"])?;
        }
        Ok(())
    }

    /// Removes every rule this suite put in `c`'s namespace (a stopped container has none).
    pub fn heal(&self, c: &str) -> anyhow::Result<()> {
        if self.pid(c).is_err() {
            return Ok(());
        }
        self.iptables(c, &["-F", "INPUT"])?;
        self.iptables(c, &["-F", "OUTPUT"])
    }

    pub fn logs(&self, c: &str, tail: usize) -> String {
        run(Command::new("sh").args(["-c", &format!("docker logs --tail {tail} {c} 2>&1")]))
            .unwrap_or_else(|e| format!("(no logs: {e})"))
    }
}
