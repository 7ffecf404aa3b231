//! Approvals a person gives, through the `hearth` binary (issue 17 item 3): an agent's held
//! `control_access` is listed by `intent pending` with what it waits for, an agent can neither
//! approve nor deny (refused, and the refusal is kept), a person denies it with a reason and
//! the door — a real `hearth device-sim` whose journal is the evidence — never hears of it;
//! decisions on decided intents are refused and append nothing; an approval lets the command
//! through; and an approval nobody gives expires by itself.

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Who runs a command: the dev cluster's CA and a token.
struct As {
    ca: PathBuf,
    token: String,
}

impl As {
    fn run(&self, addr: &str, args: &[&str]) -> Output {
        common::hearth()
            .args(args)
            .args(["--addr", addr])
            .env_remove("HEARTH_TOKEN_FILE")
            .env_remove("HEARTH_ADDR")
            .env("HEARTH_CA", &self.ca)
            .env("HEARTH_TOKEN", &self.token)
            .stdin(Stdio::null())
            .output()
            .expect("run hearth")
    }

    /// Runs a command with `--output json`; its one object.
    fn one(&self, addr: &str, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let o = self.run(addr, &all);
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "`{}` did not print one JSON object ({e}): {}",
                all.join(" "),
                text(&o)
            )
        })
    }

    /// The chain's entries (JSON lines of `audit tail`).
    fn chain(&self, addr: &str) -> Vec<Value> {
        let o = self.run(addr, &["audit", "tail", "-n", "1000", "--output", "json"]);
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Runs a command that must be refused with `code`, saying `says`, appending nothing.
    fn refused(&self, addr: &str, args: &[&str], code: &str, says: &str, judge: &As) {
        let before = judge.chain(addr);
        let o = self.run(addr, args);
        assert!(
            !o.status.success(),
            "`{}` was accepted: {}",
            args.join(" "),
            text(&o)
        );
        let t = text(&o);
        assert!(
            t.contains(code) && t.contains(says),
            "`{}`: expected {code} saying {says:?}: {t}",
            args.join(" ")
        );
        let after = judge.chain(addr);
        assert_eq!(
            after.len(),
            before.len(),
            "`{}` appended an entry: {:?}",
            args.join(" "),
            &after[before.len().min(after.len())..]
        );
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

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn journal(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn a_person_lists_denies_and_approves_held_intents_and_an_agent_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let dev_dir = dir.path().join("dev");
    let _dev = Kill(
        common::hearth()
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
    // The back door: a real simulated device in its own process, journaling every command.
    let door_addr = common::free_addr();
    let door_journal = dir.path().join("back-door.jsonl");
    let _door = Kill(
        common::hearth()
            .args(["device-sim", "--listen", &door_addr, "--journal"])
            .arg(&door_journal)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start hearth device-sim"),
    );
    let pki = dev_dir.join("pki");
    wait_until("the dev cluster's admin token", || {
        pki.join("admin.token").exists()
    });
    let admin = As {
        ca: pki.join("ca.pem"),
        token: std::fs::read_to_string(pki.join("admin.token"))
            .unwrap()
            .trim()
            .to_string(),
    };
    // Ready when the last of the simulated household is registered.
    wait_until("the dev household", || {
        let o = admin.run(&addr, &["device", "list"]);
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("garden-light")
    });
    let o = common::hearth()
        .args(["token", "add", "--name", "ag", "--role", "agent", "--file"])
        .arg(pki.join("tokens.toml"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let agent = As {
        ca: admin.ca.clone(),
        token: String::from_utf8_lossy(&o.stdout).trim().to_string(),
    };
    wait_until("the agent's token", || {
        agent.run(&addr, &["device", "list"]).status.success()
    });
    let door = write(
        dir.path(),
        "door.toml",
        &format!(
            "id = \"back-door\"\nname = \"Back door\"\nlocation = \"home/garden\"\n\
             [actuators]\nlock = [\"locked\", \"unlocked\"]\n\
             [adapter]\nkind = \"sim\"\naddress = \"{door_addr}\"\n"
        ),
    );
    let o = admin.run(&addr, &["device", "register", &door]);
    assert!(o.status.success(), "{}", text(&o));
    let ask = write(
        dir.path(),
        "ask.toml",
        "[[policies]]\nid = \"ask\"\nrule = { kind = \"require_confirmation\", class = \"control_access\" }\n",
    );
    let o = admin.run(&addr, &["policy", "add", &ask]);
    assert!(o.status.success(), "{}", text(&o));
    let unlock = |who: &As, key: &str| -> Value {
        who.one(
            &addr,
            &[
                "intent",
                "send",
                "control_access",
                "--location",
                "home/garden",
                "--context",
                "state=unlocked",
                "--key",
                key,
                "--source",
                "ag",
            ],
        )
    };

    // The agent's held unlock: it is told that it waits, and for what.
    let held = unlock(&agent, "plumber-1");
    assert_eq!(held["status"], "awaiting_approval", "{held}");
    let id = held["id"].as_str().unwrap().to_string();
    let w = &held["waiting_for"];
    let said = w["text"].as_str().unwrap_or_default();
    for part in [
        "operator",
        "back-door lock -> unlocked",
        "policy ask",
        "5 min",
    ] {
        assert!(said.contains(part), "{said:?} lacks {part:?}");
    }
    assert_eq!(w["policies"], serde_json::json!(["ask"]), "{held}");
    assert_eq!(
        w["actions"],
        serde_json::json!([format!("{id}/0")]),
        "{held}"
    );
    assert!(
        w["expires"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{held}"
    );
    let got = agent.run(&addr, &["intent", "get", &id]);
    assert!(
        text(&got).contains("waits for approval") && text(&got).contains("held for approval"),
        "{}",
        text(&got)
    );

    // `intent pending`: a person's table, and the same as JSON.
    let o = admin.run(&addr, &["intent", "pending"]);
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", text(&o));
    let row = table
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{table}"));
    for part in ["control_access", "ag", "back-door lock->unlocked", "ask"] {
        assert!(row.contains(part), "{row:?} lacks {part:?}\n{table}");
    }
    assert!(
        table.contains("EXPIRES IN") && table.contains("WAITS FOR"),
        "{table}"
    );
    let p = admin.one(&addr, &["intent", "pending"]);
    let listed = p["pending"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{p}");
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["source"], "ag");
    let left = listed[0]["expires_in_ms"].as_u64().unwrap();
    assert!(left > 0 && left <= 300_000, "{p}");
    // An agent sees its own pending intents, never another source's.
    let theirs = admin.one(
        &addr,
        &[
            "intent",
            "send",
            "control_access",
            "--location",
            "home/garden",
            "--context",
            "state=unlocked",
            "--key",
            "admins-own",
        ],
    );
    assert_eq!(theirs["status"], "awaiting_approval", "{theirs}");
    let all = admin.one(&addr, &["intent", "pending"]);
    assert_eq!(all["pending"].as_array().map(Vec::len), Some(2), "{all}");
    let mine = agent.one(&addr, &["intent", "pending"]);
    let mine = mine["pending"].as_array().unwrap().clone();
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["id"], id.as_str(), "{mine:?}");
    let theirs = theirs["id"].as_str().unwrap();
    admin.one(
        &addr,
        &["intent", "deny", theirs, "--reason", "asked by mistake"],
    );

    // An agent never decides: refused before anything is appended, and the refusal is kept.
    agent.refused(
        &addr,
        &["intent", "approve", &id],
        "PermissionDenied",
        "needs operator",
        &admin,
    );
    agent.refused(
        &addr,
        &["intent", "deny", &id, "--reason", "mine"],
        "PermissionDenied",
        "needs operator",
        &admin,
    );
    let o = admin.run(&addr, &["audit", "tail", "--refused", "--output", "json"]);
    let refused = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        refused
            .lines()
            .any(|l| l.contains("/hearth.v1.Intents/Deny") && l.contains("\"principal\":\"ag\"")),
        "{refused}"
    );
    // Bad decisions: clear errors, nothing appended.
    admin.refused(
        &addr,
        &["intent", "deny", &id, "--reason", ""],
        "InvalidArgument",
        "reason",
        &admin,
    );
    admin.refused(
        &addr,
        &["intent", "deny", "i-0000000000000000", "--reason", "x"],
        "FailedPrecondition",
        "no intent i-0000000000000000",
        &admin,
    );
    admin.refused(
        &addr,
        &["intent", "deny", "front-door", "--reason", "x"],
        "InvalidArgument",
        "not an intent id",
        &admin,
    );

    // A person denies it: one entry naming them; the door never hears of it.
    let denied = admin.one(
        &addr,
        &["intent", "deny", &id, "--reason", "not while we are out"],
    );
    assert_eq!(denied["status"], "denied", "{denied}");
    assert_eq!(denied["denied"]["by"], "admin", "{denied}");
    assert_eq!(denied["denied"]["reason"], "not while we are out");
    assert_eq!(denied["actions"][0]["outcome"], "DENIED", "{denied}");
    assert!(denied["waiting_for"].is_null(), "{denied}");
    let chain = admin.chain(&addr);
    let entry = chain
        .iter()
        .find(|l| l["intent"] == id.as_str() && l["principal"] == "admin")
        .unwrap_or_else(|| panic!("no deny entry: {chain:?}"));
    assert!(
        entry["what"]
            .as_str()
            .is_some_and(|w| w.contains("denied by admin")),
        "{entry}"
    );
    assert_eq!(entry["source"], "ag", "{entry}");
    // A retry, and an approval after the denial: refused naming who decided.
    admin.refused(
        &addr,
        &["intent", "deny", &id, "--reason", "not while we are out"],
        "FailedPrecondition",
        "already denied by admin",
        &admin,
    );
    admin.refused(
        &addr,
        &["intent", "approve", &id],
        "FailedPrecondition",
        "already denied by admin",
        &admin,
    );
    assert!(
        admin.one(&addr, &["intent", "pending"])["pending"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Approved with a reason: the door gets its command; deciding again is refused.
    let held = unlock(&agent, "plumber-2");
    let id2 = held["id"].as_str().unwrap().to_string();
    let ok = admin.one(
        &addr,
        &["intent", "approve", &id2, "--reason", "the plumber is here"],
    );
    assert_eq!(ok["approved_by"], "admin", "{ok}");
    assert_eq!(ok["approval_reason"], "the plumber is here", "{ok}");
    wait_until("the approved unlock reaching the door", || {
        journal(&door_journal).contains(&format!("{id2}/0"))
    });
    admin.refused(
        &addr,
        &["intent", "approve", &id2],
        "FailedPrecondition",
        "already approved by admin",
        &admin,
    );
    admin.refused(
        &addr,
        &["intent", "deny", &id2, "--reason", "changed my mind"],
        "FailedPrecondition",
        "already approved by admin",
        &admin,
    );
    assert!(
        !journal(&door_journal).contains(&id),
        "the denied unlock reached the door"
    );

    // Nobody decides: with a class timeout of 1.5 s it is denied by itself.
    let class = write(
        dir.path(),
        "access.toml",
        "name = \"control_access\"\ndescription = \"Doors, ask quickly\"\nrepeat_safe = true\n\
         approval_timeout_ms = 1500\n\
         steps = [ { capability = \"lock\", target = { from_context = { key = \"state\", allowed = [\"locked\", \"unlocked\"], default = \"locked\" } } } ]\n",
    );
    let o = admin.run(&addr, &["policy", "apply-class", &class]);
    assert!(o.status.success(), "{}", text(&o));
    let held = unlock(&agent, "plumber-3");
    let id3 = held["id"].as_str().unwrap().to_string();
    assert!(
        held["waiting_for"]["text"]
            .as_str()
            .unwrap()
            .contains("1500 ms"),
        "{held}"
    );
    let mut last = Value::Null;
    wait_until("the approval's expiry", || {
        last = agent.one(&addr, &["intent", "get", &id3]);
        last["status"] == "denied"
    });
    assert_eq!(last["denied"]["by"], "system", "{last}");
    assert!(
        last["denied"]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("approval expired after 1500 ms")),
        "{last}"
    );
    let chain = admin.chain(&addr);
    assert!(
        chain
            .iter()
            .any(|l| l["intent"] == id3.as_str() && l["principal"] == "system"),
        "{chain:?}"
    );
    admin.refused(
        &addr,
        &["intent", "approve", &id3],
        "FailedPrecondition",
        "no longer waits",
        &admin,
    );
    assert!(
        !journal(&door_journal).contains(&id3),
        "the expired unlock reached the door"
    );
}
