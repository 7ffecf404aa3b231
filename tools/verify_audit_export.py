#!/usr/bin/env python3
"""Verify a Hearth audit export (docs/AUDIT-FORMAT.md) with the Python standard library only.

Usage: verify_audit_export.py EXPORT_FILE
Exit 0 and print OK when every link verifies; exit 1 naming the first bad index otherwise.
"""
import hashlib, json, struct, sys

TAG = b"HEARTH-AUDIT-V1\x00"
KINDS = {"blank": 0, "membership": 1, "command": 2}

def verify(lines):
    header = json.loads(lines[0])
    if header.get("format") != "hearth-audit-export" or header.get("version") != 1:
        return None, "not a version 1 hearth-audit-export"
    anchor = header.get("anchor")
    prev = bytes.fromhex(anchor["hash"]) if anchor else bytes(32)
    expected = anchor["index"] + 1 if anchor else 0
    count = 0
    for line in lines[1:]:
        if not line.strip():
            continue
        e = json.loads(line)
        if e["index"] != expected:
            return expected, "expected index %d, found %d" % (expected, e["index"])
        if e["payload"] != e["payload"].lower():
            return e["index"], "payload is not lower-case hex"
        record = struct.pack(">QQQB", e["index"], e["term"], e["leader"], KINDS[e["kind"]]) + bytes.fromhex(e["payload"])
        digest = hashlib.sha256(TAG + prev + record).digest()
        if digest.hex() != e["hash"]:
            return e["index"], "hash mismatch: stored %s, computed %s" % (e["hash"], digest.hex())
        prev, expected, count = digest, expected + 1, count + 1
    return None, "%d entries verify; head %s" % (count, prev.hex())

if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        bad, message = verify(f.read().splitlines())
    if bad is None and not message.startswith("not "):
        print("OK: " + message)
        sys.exit(0)
    print("FAILED at index %s: %s" % (bad, message))
    sys.exit(1)
