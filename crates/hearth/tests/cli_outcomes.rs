//! The `hearth` binary as a household and its scripts use it: what it prints and its exit
//! code when what was asked did not happen (issue 13 items 3 and 13). A one-hub `hearth dev
//! --insecure` cluster with its simulated household, driven through the CLI.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::free_port;
use hearth_node::{NodeConfig, Role};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hearth(addr: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(args)
        .args(["--addr", addr])
        .env_remove("HEARTH_CA")
        .env_remove("HEARTH_TOKEN_FILE")
        .stdin(Stdio::null())
        .output()
        .expect("run hearth")
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

#[test]
fn the_cli_says_when_nothing_happened_and_policy_files_fail_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _dev = Kill(
        Command::new(env!("CARGO_BIN_EXE_hearth"))
            .args(["dev", "--insecure", "--topology", "one", "--base-port"])
            .arg(port.to_string())
            .arg("--dir")
            .arg(dir.path().join("dev"))
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start hearth dev"),
    );
    // Ready when the simulated household is registered.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = hearth(&addr, &["device", "list"]);
        if o.status.success() && String::from_utf8_lossy(&o.stdout).contains("kitchen-siren") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dev cluster not ready: {}",
            text(&o)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = hearth(&addr, &["cluster", "status"]);
    assert!(
        o.status.success(),
        "a one-hub cluster has its quorum: {}",
        text(&o)
    );

    // Item 3: a misspelt location. Not an emergency: refused, naming the location.
    let o = hearth(
        &addr,
        &[
            "intent",
            "send",
            "ensure_safety",
            "--urgency",
            "alert",
            "--location",
            "home/kitchn",
        ],
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("home/kitchn"), "{}", text(&o));
    // An emergency: every device that may act in one acts, and the intent says the location
    // was not found (on main: "done 0 of 0 actions applied", exit 0, no siren).
    let o = hearth(
        &addr,
        &[
            "intent",
            "send",
            "ensure_safety",
            "--urgency",
            "emergency",
            "--location",
            "home/kitchn",
            "--watch",
        ],
    );
    let out = text(&o);
    assert!(out.contains("home/kitchn was not found"), "{out}");
    assert!(out.contains("kitchen-siren"), "{out}");
    let last = String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(
        last.starts_with("done") && last.contains("was not found"),
        "the final line says the location was not found: {out}"
    );
    assert!(!out.contains("done               0 of 0"), "{out}");

    // Item 13: policy files that failed silently now fail with the field and the line.
    let cases = [
        (
            "tz.toml",
            "[[policies]]\nid = \"night\"\ntimezone = \"Europe/Paris\"\nrule = { kind = \"quiet_hours\", start_minute = 1320, end_minute = 420 }\n",
            "timezone",
            "line 3",
        ),
        (
            "typo.toml",
            "[[policies]]\nid = \"ok\"\nrule = { kind = \"block\", device = \"kitchen-light\" }\n\n[[policies]]\nid = \"never-the-garage\"\nrule = { kind = \"block\", device = \"garage-dor\" }\n",
            "garage-dor",
            "line 6",
        ),
        (
            "dup.toml",
            "[[policies]]\nid = \"a\"\nrule = { kind = \"block\", device = \"kitchen-light\" }\n[[policies]]\nid = \"a\"\nrule = { kind = \"block\", device = \"garden-light\" }\n",
            "policies[1].id",
            "line 5",
        ),
    ];
    for (name, body, what, line) in cases {
        let f = write(dir.path(), name, body);
        let o = hearth(&addr, &["policy", "apply", &f, "--yes"]);
        let out = text(&o);
        assert!(!o.status.success(), "{name}: {out}");
        assert!(out.contains(what) && out.contains(line), "{name}: {out}");
        assert!(!out.contains("line 1 column"), "{name}: {out}");
    }
    let show = || String::from_utf8_lossy(&hearth(&addr, &["policy", "show"]).stdout).to_string();
    let before = show();
    assert!(!before.contains("hush"), "{before}");

    // A valid set: the diff first; --dry-run and a non-terminal stdin without --yes change
    // nothing; --yes applies.
    let hush = write(
        dir.path(),
        "hush.toml",
        "[[policies]]\nid = \"hush-siren\"\nrule = { kind = \"exclude_device\", device = \"kitchen-siren\" }\n\n[[policies]]\nid = \"hush-light\"\nrule = { kind = \"exclude_device\", device = \"kitchen-light\" }\n",
    );
    let o = hearth(&addr, &["policy", "apply", &hush, "--dry-run"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("+ add     hush-siren"), "{}", text(&o));
    let o = hearth(&addr, &["policy", "apply", &hush]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("nothing applied"), "{}", text(&o));
    assert_eq!(
        show(),
        before,
        "a dry run or an unconfirmed apply changed the policies"
    );
    let o = hearth(&addr, &["policy", "apply", &hush, "--yes"]);
    assert!(o.status.success(), "{}", text(&o));

    // Item 3: every device excluded → no_action, exit 1 (on main: "done 0 of 0", exit 0).
    let o = hearth(
        &addr,
        &[
            "intent",
            "send",
            "ensure_safety",
            "--urgency",
            "alert",
            "--location",
            "home/kitchen",
            "--watch",
            "--key",
            "all-excluded",
        ],
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("no_action") && out.contains("policy hush-siren"),
        "{out}"
    );
    assert!(!out.contains("done "), "{out}");
    let id = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let o = hearth(&addr, &["intent", "get", &id]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));

    // One policy removed alone, another added alone; the set names what changed.
    let o = hearth(&addr, &["policy", "remove", "hush-siren"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("- remove  hush-siren"), "{}", text(&o));
    let o = hearth(&addr, &["policy", "remove", "hush-siren"]);
    assert!(
        !o.status.success(),
        "removing what is not there: {}",
        text(&o)
    );
    let one = write(
        dir.path(),
        "one.toml",
        "[[policies]]\nid = \"ask\"\nrule = { kind = \"require_confirmation\", class = \"control_access\" }\n",
    );
    let o = hearth(&addr, &["policy", "add", &one]);
    assert!(o.status.success(), "{}", text(&o));
    let now = show();
    assert!(
        now.contains("hush-light") && now.contains("\"ask\"") && !now.contains("hush-siren"),
        "{now}"
    );
}

/// A hub whose peers never answer has no quorum: `cluster status` says so and exits 1 (on
/// main it exited 0).
#[test]
fn cluster_status_without_a_quorum_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (free_port(), free_port());
    let cfg = NodeConfig::builder(
        1,
        Role::Hub,
        format!("127.0.0.1:{a}"),
        dir.path().join("node1"),
    )
    .bootstrap(true)
    .peer(2, format!("127.0.0.1:{b}"), Role::Hub)
    .insecure()
    .build()
    .unwrap();
    let path = dir.path().join("node1.toml");
    common::write_config(&cfg, &path);
    let path = path.display().to_string();
    let _node = Kill(
        Command::new(env!("CARGO_BIN_EXE_hearth"))
            .args(["serve", "--config", &path])
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start hearth serve"),
    );
    let addr = format!("127.0.0.1:{a}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let o = loop {
        let o = hearth(&addr, &["cluster", "status"]);
        if String::from_utf8_lossy(&o.stdout).contains("NODE") || Instant::now() > deadline {
            break o;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("NO QUORUM"), "{}", text(&o));
}
