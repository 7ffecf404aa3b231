//! What the log holds and the chain hashes: a stored record (`Record::decode`), its command
//! payload (`hearth_core::domain::Command::decode`), and a membership payload
//! (`hearth_store::types::record_to_entry`). A decoded record re-encodes to the same bytes.
#![no_main]

use hearth_core::Record;
use hearth_core::domain::Command;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = Record::decode(data) {
        assert_eq!(
            rec.encode(),
            data,
            "a decoded record re-encodes to its bytes"
        );
        let _ = hearth_store::types::record_to_entry(rec);
    }
    if let Ok(cmd) = Command::decode(data) {
        // What a node proposes it can read back.
        assert_eq!(Command::decode(&cmd.encode()).as_ref(), Ok(&cmd));
    }
});
