//! Durable append: offsets, torn-tail repair, limits, fail-stop latching, acknowledged records
//! surviving power loss.

use std::fs;
use std::path::Path;

use keel_fs::seam::{Op, Survives};
use keel_fs::{Appender, CrashSim, DirSync, FailAfter, FsError, OsStorage, append_record, append_record_with};

#[test]
fn records_get_offsets_and_exactly_one_newline_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.jsonl");
    let mut appender = Appender::open(&path).expect("open");
    let first = appender.append(b"{\"a\":1}").expect("append");
    let second = appender.append(b"{\"b\":2}").expect("append");
    assert_eq!((first.offset_before, first.record_offset, first.offset_after), (0, 0, 8));
    assert_eq!((second.offset_before, second.record_offset, second.offset_after), (8, 8, 16));
    assert_eq!(first.dir_sync, Some(DirSync::Synced), "creation reported once");
    assert_eq!(second.dir_sync, None);
    assert_eq!(fs::read(&path).expect("read"), b"{\"a\":1}\n{\"b\":2}\n");
    assert_eq!(appender.len(), 16);
}

#[test]
fn one_shot_append_to_an_existing_file_reports_no_directory_sync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.jsonl");
    let created = append_record(&path, b"1").expect("append");
    assert_eq!(created.dir_sync, Some(DirSync::Synced));
    let existing = append_record(&path, b"2").expect("append");
    assert_eq!(existing.dir_sync, None);
    assert_eq!(fs::read(&path).expect("read"), b"1\n2\n");
}

#[test]
fn torn_tail_is_repaired_with_a_newline_never_truncated_and_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (tail, name) in [(&b"{\"torn\":"[..], "brace"), (&b"{\"x\":1}\r"[..], "carriage-return")] {
        let path = dir.path().join(name);
        let mut seed = b"{\"ok\":1}\n".to_vec();
        seed.extend_from_slice(tail);
        fs::write(&path, &seed).expect("seed");

        let mut appender = Appender::open(&path).expect("open");
        let repaired = appender.append(b"{\"r\":2}").expect("append");
        let next = appender.append(b"{\"r\":3}").expect("append");

        assert!(repaired.repaired_torn_tail, "{name}");
        assert_eq!(repaired.offset_before, seed.len() as u64);
        assert_eq!(repaired.record_offset, seed.len() as u64 + 1);
        assert!(!next.repaired_torn_tail, "{name}: repaired only once");
        let mut expected = seed.clone();
        expected.extend_from_slice(b"\n{\"r\":2}\n{\"r\":3}\n");
        assert_eq!(fs::read(&path).expect("read"), expected, "{name}: never truncated");
    }
}

#[test]
fn a_clean_tail_is_not_repaired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.jsonl");
    fs::write(&path, b"{}\n").expect("seed");
    let report = append_record(&path, b"{}").expect("append");
    assert!(!report.repaired_torn_tail);
    assert_eq!(fs::read(&path).expect("read"), b"{}\n{}\n");
}

#[test]
fn oversized_and_multiline_records_are_typed_errors_that_write_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.jsonl");
    let mut appender = Appender::open(&path).expect("open").with_record_bytes_max(8);
    let err = appender.append(b"123456789").expect_err("too long");
    assert!(matches!(err, FsError::RecordTooLong { record_bytes: 9, record_bytes_max: 8, .. }), "{err}");
    let err = appender.append(b"a\nb").expect_err("newline");
    assert!(matches!(err, FsError::RecordHasNewline { at: 1, .. }), "{err}");
    assert!(!appender.is_failed(), "bad input does not latch");
    let report = appender.append(b"12345678").expect("at the limit");
    assert_eq!(report.offset_after, 9);
    assert_eq!(fs::read(&path).expect("read"), b"12345678\n");
}

#[test]
fn a_write_or_fdatasync_error_latches_the_appender_until_reopened() {
    // After a failed fdatasync the record's bytes are in the file (just not known durable):
    // the reopened handle appends after them and never rewrites them.
    for (op, name, next_offset) in [(Op::Write, "write", 6), (Op::SyncData, "fdatasync", 13)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j.jsonl");
        let storage = FailAfter::once(OsStorage, 1).only(op);
        let mut appender = Appender::open_with(&storage, &path).expect("open");
        let _created = appender.append(b"first").expect("first append");

        let err = appender.append(b"second").expect_err("injected");
        assert!(matches!(&err, FsError::Io { op, .. } if *op == name), "{err}");
        assert!(err.to_string().contains("j.jsonl"), "names the path: {err}");
        assert!(appender.is_failed());

        // The storage would succeed now; the handle must still refuse (fail-stop).
        let err = appender.append(b"third").expect_err("latched");
        assert!(matches!(&err, FsError::Failed { op, .. } if *op == name), "{err}");
        assert!(err.to_string().contains("close and reopen"));

        let mut reopened = Appender::open(&path).expect("reopen");
        let report = reopened.append(b"fourth").expect("a fresh handle works");
        assert_eq!(report.record_offset, next_offset, "{name}");
    }
}

#[test]
fn a_file_replaced_or_truncated_underneath_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.jsonl");
    let mut appender = Appender::open(&path).expect("open");
    let _created = appender.append(b"a").expect("append");
    let other = dir.path().join("other");
    fs::write(&other, b"x\n").expect("write other");
    fs::rename(&other, &path).expect("replace");
    let err = appender.append(b"b").expect_err("replaced");
    assert!(matches!(err, FsError::Replaced { .. }), "{err}");
    assert!(appender.is_failed());

    let mut appender = Appender::open(&path).expect("open");
    let _appended = appender.append(b"c").expect("append");
    fs::OpenOptions::new().write(true).open(&path).and_then(|f| f.set_len(1)).expect("truncate");
    let err = appender.append(b"d").expect_err("truncated");
    assert!(matches!(err, FsError::Replaced { .. }), "{err}");
}

/// Lines of `bytes`, split on `\n`, with whether each was terminated.
fn lines(bytes: &[u8]) -> Vec<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        if let Some(at) = rest.iter().position(|&b| b == b'\n') {
            out.push((rest[..at].to_vec(), true));
            rest = &rest[at + 1..];
        } else {
            out.push((rest.to_vec(), false));
            rest = &[];
        }
    }
    out
}

fn check_power_loss(seed: Option<&[u8]>) {
    let path = Path::new("/ws/.keel/journal.jsonl");
    let records: Vec<Vec<u8>> = (0..4).map(|i| format!("{{\"seq\":{i}}}").into_bytes()).collect();
    let mut completed = false;
    for cut_at in 0..128 {
        let sim = CrashSim::new();
        if let Some(seed) = seed {
            sim.put_durable(path, seed, 0o644);
        }
        sim.cut_power_at(sim.ops() + cut_at);
        let mut acknowledged = Vec::new();
        if let Ok(mut appender) = Appender::open_with(&sim, path) {
            for record in &records {
                match appender.append(record) {
                    Ok(_) => acknowledged.push(record.clone()),
                    Err(_) => break,
                }
            }
        }
        for names in Survives::ALL {
            for data in Survives::ALL {
                let after = sim.crash(names, data);
                let content = after.read(path).unwrap_or_default();
                if let Some(seed) = seed {
                    assert!(content.starts_with(seed), "cut {cut_at}: seed lost or rewritten");
                }
                let complete: Vec<Vec<u8>> =
                    lines(&content).into_iter().filter(|(_, terminated)| *terminated).map(|(line, _)| line).collect();
                let mut found = complete.iter();
                for record in &acknowledged {
                    assert!(
                        found.any(|line| line == record),
                        "cut {cut_at}, names {names:?}, data {data:?}: acknowledged {} lost",
                        String::from_utf8_lossy(record)
                    );
                }
                // Recovery: the next writer repairs any torn tail and its record is a line.
                let report = append_record_with(&after, path, b"{\"after\":true}").expect("recover");
                let recovered = after.read(path).expect("journal exists");
                let last = lines(&recovered).pop().expect("a line");
                assert_eq!(last, (b"{\"after\":true}".to_vec(), true), "cut {cut_at}");
                assert_eq!(report.offset_after, recovered.len() as u64);
            }
        }
        if !sim.powered_off() {
            assert_eq!(acknowledged.len(), records.len(), "all appended without a cut");
            completed = true;
            break;
        }
    }
    assert!(completed, "the appends finished within the explored cut points");
}

#[test]
fn power_loss_at_every_operation_never_loses_an_acknowledged_record_in_a_new_journal() {
    check_power_loss(None);
}

#[test]
fn power_loss_at_every_operation_never_loses_an_acknowledged_record_after_a_torn_tail() {
    check_power_loss(Some(b"{\"seq\":-1}\n{\"to"));
}
