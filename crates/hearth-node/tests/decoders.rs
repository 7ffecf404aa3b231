//! Property tests of what the node reads from outside before anything is appended: the
//! public API's request messages (prost decoding, then the server's own validation) and the
//! configuration file. No input may panic. `fuzz/` runs the same paths under libFuzzer for
//! longer (fuzz/README.md).

use hearth_core::domain::check_intent_id;
use hearth_node::NodeConfig;
use hearth_node::api::{class_from_doc, device_from_pb, intent_from_pb, policies_from_doc};
use hearth_proto::v1 as pb;
use proptest::prelude::*;
use prost::Message;

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..200)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn requests_decode_and_validate_without_panicking(b in bytes()) {
        if let Ok(m) = pb::SubmitIntentRequest::decode(b.as_slice())
            && let Ok(i) = intent_from_pb(&m)
        {
            let _ = i.validate_request();
        }
        if let Ok(m) = pb::DeviceManifest::decode(b.as_slice())
            && let Ok(d) = device_from_pb(&m)
        {
            prop_assert!(d.validate().is_ok());
        }
        if let Ok(m) = pb::ApplyDocument::decode(b.as_slice()) {
            let _ = class_from_doc(&m.json);
            let _ = policies_from_doc(&m.json);
        }
        if let Ok(m) = pb::GetIntentRequest::decode(b.as_slice()) {
            let _ = check_intent_id("id", &m.id);
        }
    }

    #[test]
    fn requests_with_arbitrary_strings_validate_without_panicking(
        s in proptest::collection::vec(".{0,40}", 9), n in 0usize..4) {
        let req = pb::SubmitIntentRequest {
            class: s[0].clone(), urgency: s[1].clone(), subject: s[2].clone(),
            location: s[3].clone(), context: [(s[4].clone(), s[5].clone())].into(),
            idempotency_key: s[6].clone(), source: s[7].clone(), dry_run: false,
        };
        if let Ok(i) = intent_from_pb(&req) {
            let _ = i.validate_request();
        }
        let dev = pb::DeviceManifest {
            id: s[0].clone(), name: s[1].clone(), location: s[3].clone(),
            tags: s[..n].to_vec(), sensors: s[n..].to_vec(),
            actuators: [(s[4].clone(), pb::StateList { states: s[5..8].to_vec() })].into(),
            emergency_capable: n == 2, adapter_kind: ["sim", "http", "mqtt", "x"][n].into(),
            emergency_actions: Default::default(),
            adapter_target: s[8].clone(),
        };
        if let Ok(d) = device_from_pb(&dev) {
            prop_assert!(d.validate().is_ok());
            let _ = d.validate_request();
        }
        let _ = check_intent_id("id", &s[8]);
    }

    #[test]
    fn documents_never_panic(s in r#"\{"(name|policies|steps|rule|kind|id)":(\[|\{|"[a-z_]{0,10}"|[0-9]{1,22}|null|true)(,"[a-z_]{1,12}":("[^"]{0,10}"|[0-9]{1,22}|\[\]|\{\}|null))*\}?"#) {
        let _ = class_from_doc(&s);
        let _ = policies_from_doc(&s);
    }

    #[test]
    fn config_parse_never_panics(s in ".{0,300}") {
        let _ = NodeConfig::parse(&s);
    }

    #[test]
    fn config_parse_never_panics_on_near_toml(
        lines in proptest::collection::vec(r#"(\[(timing|assist|peers|tls|auth|checkpoint|mqtt_broker)\]|\[\[peers\]\]|[a-z_]{1,22} = ("[0-9a-z.:/]{0,20}"|[0-9]{1,21}|true|false|\[\]))"#, 0..12)) {
        let _ = NodeConfig::parse(&lines.join("\n"));
    }
}

#[test]
fn timing_settings_are_bounded() {
    let base = "insecure = true\nnode_id = 1\nrole = \"hub\"\nlisten = \"127.0.0.1:7101\"\ndata_dir = \"d\"\nbootstrap = true\n";
    NodeConfig::parse(base).unwrap();
    let e = NodeConfig::parse(&format!(
        "{base}[timing]\nheartbeat_ms = 50\nelection_min_ms = 300\nelection_max_ms = 9223372036854775807\n"
    ))
    .unwrap_err();
    assert!(e.to_string().contains("timing.election_max_ms"), "{e}");
}
