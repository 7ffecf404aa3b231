//! The `hearth` binary for scripts and agents (issue 15 items 5 and 8): `--output json` on the
//! commands that read, `completions`, an `audit tail` a person can read (filters, --follow,
//! refused calls), and `device remove`. One `hearth dev --topology one` cluster with TLS and
//! tokens, driven through the CLI as its admin, an agent and a stranger.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Who runs a command: the CA, and a token file or a token.
#[derive(Clone)]
struct As {
    ca: PathBuf,
    token_file: Option<PathBuf>,
    token: Option<String>,
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hearth"));
    c.env_remove("HEARTH_CA")
        .env_remove("HEARTH_TOKEN_FILE")
        .env_remove("HEARTH_TOKEN")
        .env_remove("HEARTH_ADDR")
        .stdin(Stdio::null());
    c
}

impl As {
    fn cmd(&self, addr: &str, args: &[&str]) -> Command {
        let mut c = bin();
        c.args(args)
            .args(["--addr", addr])
            .env("HEARTH_CA", &self.ca);
        if let Some(f) = &self.token_file {
            c.env("HEARTH_TOKEN_FILE", f);
        }
        if let Some(t) = &self.token {
            c.env("HEARTH_TOKEN", t);
        }
        c
    }

    fn run(&self, addr: &str, args: &[&str]) -> Output {
        self.cmd(addr, args).output().expect("run hearth")
    }

    /// Runs a reader with `--output json` and parses every line of its standard output.
    fn json(&self, addr: &str, args: &[&str]) -> Vec<Value> {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let o = self.run(addr, &all);
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!(
                        "`{}` printed a line that is not JSON ({e}): {l:?}",
                        all.join(" ")
                    )
                })
            })
            .collect()
    }

    fn one(&self, addr: &str, args: &[&str]) -> Value {
        let mut v = self.json(addr, args);
        assert_eq!(
            v.len(),
            1,
            "`{}` printed {} objects: {v:?}",
            args.join(" "),
            v.len()
        );
        v.remove(0)
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

/// The last chain index a node shows.
fn last_index(admin: &As, addr: &str) -> u64 {
    let lines = admin.json(addr, &["audit", "tail", "-n", "1"]);
    lines
        .last()
        .and_then(|l| l["index"].as_u64())
        .expect("a last entry")
}

#[test]
fn completions_are_printed_and_a_wrong_shell_is_refused() {
    let o = bin().args(["completions", "bash"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let script = String::from_utf8_lossy(&o.stdout);
    assert!(script.contains("_hearth()"), "{script:.300}");
    for word in ["audit", "device", "remove", "--output", "--refused"] {
        assert!(script.contains(word), "the bash completion lacks {word}");
    }
    let o = bin().args(["completions", "zsh"]).output().unwrap();
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("#compdef hearth"));
    let o = bin().args(["completions", "tcsh"]).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bash") && err.contains("tcsh"), "{err}");
    // A typo in the output format is refused with the choices named.
    let o = bin()
        .args(["device", "list", "--output", "jsno"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("text") && err.contains("json"), "{err}");
    // --since that is not a time: refused before anything is asked of a node.
    let o = bin()
        .args([
            "audit",
            "tail",
            "--since",
            "yesterday",
            "--addr",
            "127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is not a time"),
        "{}",
        text(&o)
    );
}

#[test]
fn readers_speak_json_tail_reads_like_a_log_and_devices_can_be_removed() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let dev_dir = dir.path().join("dev");
    let _dev = Kill(
        bin()
            .args(["dev", "--topology", "one", "--base-port"])
            .arg(port.to_string())
            .arg("--dir")
            .arg(&dev_dir)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start hearth dev"),
    );
    let pki = dev_dir.join("pki");
    let admin = As {
        ca: pki.join("ca.pem"),
        token_file: Some(pki.join("admin.token")),
        token: None,
    };
    // Ready when the simulated household is registered (the pki appears first).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if pki.join("admin.token").exists() {
            let o = admin.run(&addr, &["device", "list"]);
            if o.status.success() && String::from_utf8_lossy(&o.stdout).contains("front-door") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "dev cluster not ready");
        std::thread::sleep(Duration::from_millis(200));
    }

    // --output json: one stable object per reader.
    let s = admin.one(&addr, &["cluster", "status"]);
    assert_eq!(s["leader"], 1, "{s}");
    assert_eq!(s["nodes"][0]["reachable"], true, "{s}");
    assert_eq!(s["nodes"][0]["state"], "Leader", "{s}");
    assert!(s["no_quorum"].is_null(), "{s}");
    let d = admin.one(&addr, &["device", "list"]);
    let ids: Vec<&str> = d["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"front-door") && ids.contains(&"kitchen-siren"),
        "{d}"
    );
    let door = admin.one(&addr, &["device", "show", "front-door"]);
    assert_eq!(door["location"], "home/hall");
    assert_eq!(
        door["actuators"]["lock"],
        serde_json::json!(["locked", "unlocked"])
    );
    let o = admin.run(&addr, &["device", "show", "back-door"]);
    assert!(
        !o.status.success() && text(&o).contains("NotFound"),
        "{}",
        text(&o)
    );
    let p = admin.one(&addr, &["policy", "show"]);
    assert!(p["policies"].is_array() && p["classes"].is_array(), "{p}");
    assert_eq!(p["sha256"].as_str().map(str::len), Some(64), "{p}");
    let verify = admin.one(&addr, &["audit", "verify"]);
    assert_eq!(verify["ok"], true, "{verify}");

    // An agent, and a token nobody issued.
    let o = bin()
        .args(["token", "add", "--name", "ag", "--role", "agent", "--file"])
        .arg(pki.join("tokens.toml"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let agent_token = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let agent = As {
        token_file: None,
        token: Some(agent_token.clone()),
        ..admin.clone()
    };
    let stranger = As {
        token_file: None,
        token: Some("hth_not-a-token-anyone-issued".into()),
        ..admin.clone()
    };
    // The agent reads devices (its role may), as JSON too.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent.run(&addr, &["device", "list"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "the new agent token is never accepted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = last_index(&admin, &addr);

    // Item 8: the wrong role is refused, and nothing is appended.
    let o = agent.run(&addr, &["device", "remove", "front-door"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("PermissionDenied"), "{}", text(&o));
    let o = stranger.run(&addr, &["device", "remove", "front-door"]);
    assert!(text(&o).contains("Unauthenticated"), "{}", text(&o));
    // An unknown id (a typo) is NOT_FOUND, naming it, and appends nothing.
    let o = admin.run(&addr, &["device", "remove", "front-dor"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("NotFound") && text(&o).contains("front-dor"),
        "{}",
        text(&o)
    );
    assert_eq!(
        last_index(&admin, &addr),
        before,
        "a refusal appended an entry"
    );
    assert!(
        admin
            .run(&addr, &["device", "show", "front-door"])
            .status
            .success()
    );

    // Refused calls are visible, with who, the method and what they were told — never a
    // token — and stay out of the chain.
    let refused = admin.json(&addr, &["audit", "tail", "--refused"]);
    let denied = refused
        .iter()
        .find(|r| r["code"] == "PERMISSION_DENIED" && r["method"] == "/hearth.v1.Devices/Remove")
        .unwrap_or_else(|| panic!("the agent's refused removal is not shown: {refused:?}"));
    assert_eq!(denied["principal"], "ag", "{denied}");
    assert_eq!(denied["refused"], true);
    assert!(
        denied["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{denied}"
    );
    assert!(
        refused
            .iter()
            .any(|r| r["code"] == "UNAUTHENTICATED" && r["principal"].is_null()),
        "{refused:?}"
    );
    let all = format!("{refused:?}");
    assert!(
        !all.contains(&agent_token) && !all.contains("hth_not-a-token"),
        "{all}"
    );
    let o = admin.run(&addr, &["audit", "tail", "--refused", "--source", "ag"]);
    let t = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success() && t.contains("REFUSED") && t.contains("ag"),
        "{}",
        text(&o)
    );
    assert!(
        !t.contains("UNAUTHENTICATED"),
        "--source ag shows only ag's: {t}"
    );
    // Not in the chain: no entry names the agent.
    let chain = admin.json(&addr, &["audit", "tail", "-n", "1000"]);
    assert!(chain.iter().all(|l| l["principal"] != "ag"), "{chain:?}");
    // The refusals list is operator's reading, not an agent's.
    let o = agent.run(&addr, &["audit", "tail", "--refused"]);
    assert!(text(&o).contains("PermissionDenied"), "{}", text(&o));

    // An action held for approval, then its device removed: it ends CANCELLED, naming who.
    let ask = write(
        dir.path(),
        "ask.toml",
        "[[policies]]\nid = \"ask\"\nrule = { kind = \"require_confirmation\", class = \"control_access\" }\n",
    );
    let o = admin.run(&addr, &["policy", "add", &ask]);
    assert!(o.status.success(), "{}", text(&o));
    let held = admin.one(
        &addr,
        &[
            "intent",
            "send",
            "control_access",
            "--location",
            "home/hall",
            "--context",
            "state=locked",
        ],
    );
    assert_eq!(held["status"], "awaiting_approval", "{held}");
    let id = held["id"].as_str().unwrap().to_string();
    assert_eq!(held["actions"][0]["device"], "front-door", "{held}");
    assert!(held["actions"][0]["outcome"].is_null(), "pending: {held}");
    let o = admin.run(&addr, &["device", "remove", "front-door"]);
    assert!(o.status.success(), "{}", text(&o));
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("removed by admin") && said.contains(&id),
        "{said}"
    );
    let after = admin.one(&addr, &["intent", "get", &id]);
    assert_eq!(after["status"], "failed", "{after}");
    assert_eq!(after["actions"][0]["outcome"], "CANCELLED", "{after}");
    assert_eq!(
        after["actions"][0]["detail"], "device front-door removed by admin",
        "{after}"
    );
    let o = admin.run(&addr, &["device", "show", "front-door"]);
    assert!(!o.status.success(), "removed: {}", text(&o));
    // The chain entry names the principal; --device finds it, and the intent about it.
    let about = admin.json(&addr, &["audit", "tail", "--device", "front-door"]);
    let removal = about
        .iter()
        .find(|l| l["states"] == serde_json::json!(["removed"]))
        .unwrap_or_else(|| panic!("no removal entry: {about:?}"));
    assert_eq!(removal["principal"], "admin", "{removal}");
    assert!(
        about.iter().any(|l| l["intent"] == id.as_str()),
        "{about:?}"
    );
    assert!(
        about.iter().all(|l| l["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == "front-door")),
        "--device lets through only the device's entries: {about:?}"
    );
    // A person reads the same in text: time, principal, device, state on the line.
    let o = admin.run(&addr, &["audit", "tail", "--device", "front-door"]);
    let t = String::from_utf8_lossy(&o.stdout).to_string();
    let line = t
        .lines()
        .find(|l| l.contains(" removed "))
        .unwrap_or_else(|| panic!("{t}"));
    assert!(
        line.contains("admin") && line.contains("front-door") && line.contains("Z "),
        "{line}"
    );
    // Registered again, it is back.
    let manifest = write(
        dir.path(),
        "door.toml",
        "id = \"front-door\"\nname = \"Front door lock\"\nlocation = \"home/hall\"\n\
         [actuators]\nlock = [\"locked\", \"unlocked\"]\n[adapter]\nkind = \"sim\"\naddress = \"local:dev\"\n",
    );
    let o = admin.run(&addr, &["device", "register", &manifest]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        admin
            .run(&addr, &["device", "show", "front-door"])
            .status
            .success()
    );

    // Filters: by source and time; a time in the future lets nothing through.
    let by_admin = admin.json(&addr, &["audit", "tail", "--source", "admin", "-n", "50"]);
    assert!(!by_admin.is_empty());
    assert!(
        by_admin
            .iter()
            .all(|l| l["principal"] == "admin" || l["source"] == "admin"),
        "{by_admin:?}"
    );
    let recent = admin.json(&addr, &["audit", "tail", "--since", "1h", "-n", "500"]);
    assert!(
        recent.iter().any(|l| l["intent"] == id.as_str()),
        "{recent:?}"
    );
    let future = admin.json(&addr, &["audit", "tail", "--since", "2099-01-01T00:00Z"]);
    assert!(future.is_empty(), "{future:?}");

    // --follow: an entry applied after it started appears, as one JSON object per line.
    let mut follow = Kill(
        admin
            .cmd(
                &addr,
                &["audit", "tail", "--follow", "-n", "0", "--output", "json"],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = follow.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(700));
    let o = admin.run(&addr, &["audit", "append", "followed-record"]);
    assert!(o.status.success(), "{}", text(&o));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("--follow did not show the new entry in time")
            .unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if v["what"]
            .as_str()
            .is_some_and(|w| w.contains("followed-record"))
        {
            break;
        }
    }
    drop(follow);
}
