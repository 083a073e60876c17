//! The kept bundles under `verify`: the chain vouches for the events, the events name the
//! bundles by content hash, so a kept bundle that was replaced, altered or deleted is found.

#![cfg(feature = "query")]
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests unwrap and panic on a wrong variant"
)]

use std::path::{Path, PathBuf};

use portcullis_audit::bundles::archive_bundle;
use portcullis_audit::verify::{self, BundleFailure, VerifyError};
use portcullis_audit::{AuditLog, AuditOptions, EventKind, NewEvent};
use portcullis_lang::bundle::Bundle;
use portcullis_lang::{SourceFile, compile};

fn bundle(source: &str) -> Bundle {
    let set = compile(&[SourceFile::new("policy.gate", source)]).unwrap();
    Bundle::from_policy_set(&set).unwrap()
}

const FIRST: &str = "\
workload ci { github { repository == \"acme/api\" } }
target api { https { host = \"api.example\" } }
permit ci_calls_api { workload ci target api }
";

const SECOND: &str = "\
workload ci { github { repository == \"acme/api\" } }
target api { https { host = \"api.example\" path_prefix = \"/v2/\" } }
permit ci_calls_api { workload ci target api }
";

const UNUSED: &str = "\
workload ci { github { repository == \"acme/web\" } }
target web { https { host = \"web.example\" } }
permit ci_calls_web { workload ci target web }
";

/// A store where the server ran FIRST, then SECOND: both kept, each put in effect by a
/// `policy_change` event, with decisions between. Gives the two bundle files.
fn store(dir: &Path) -> [PathBuf; 2] {
    let (log, _) = AuditLog::open(dir, AuditOptions::new("node-1")).unwrap();
    let mut paths = Vec::new();
    for source in [FIRST, SECOND] {
        let bundle = bundle(source);
        let hash = bundle.hash_hex();
        paths.push(archive_bundle(dir, &hash, &bundle.to_bytes()).unwrap());
        log.record(NewEvent {
            kind: EventKind::PolicyChange,
            bundle_hash: Some(hash.clone()),
            ..NewEvent::default()
        })
        .unwrap();
        for _ in 0..3 {
            log.record(NewEvent {
                kind: EventKind::Decision,
                bundle_hash: Some(hash.clone()),
                ..NewEvent::default()
            })
            .unwrap();
        }
    }
    log.close().unwrap();
    [paths[0].clone(), paths[1].clone()]
}

fn failure(dir: &Path) -> (PathBuf, BundleFailure) {
    match verify::verify(dir, None, &mut |_| {}) {
        Err(VerifyError::Bundle { path, problem }) => (path, problem),
        other => panic!("expected a bundle failure, got {other:?}"),
    }
}

#[test]
fn kept_bundles_are_confirmed_and_one_no_event_names_may_stay() {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path());
    let report = verify::verify(dir.path(), None, &mut |_| {}).unwrap();
    assert_eq!((report.bundles.kept, report.bundles.named), (2, 2));

    let unused = bundle(UNUSED);
    archive_bundle(dir.path(), &unused.hash_hex(), &unused.to_bytes()).unwrap();
    let report = verify::verify(dir.path(), None, &mut |_| {}).unwrap();
    assert_eq!((report.bundles.kept, report.bundles.named), (3, 2));
}

#[test]
fn a_deleted_bundle_is_named_with_the_event_that_put_it_in_effect() {
    let dir = tempfile::tempdir().unwrap();
    let [_, second] = store(dir.path());
    std::fs::remove_file(&second).unwrap();
    let (path, problem) = failure(dir.path());
    assert_eq!(path, second);
    // Events 1 to 4 ran the first bundle; event 5 put the second in effect.
    assert!(
        matches!(problem, BundleFailure::Missing { seq: 5 }),
        "{problem}"
    );
}

#[test]
fn a_replaced_bundle_is_found_though_it_is_a_valid_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let [first, _] = store(dir.path());
    std::fs::write(&first, bundle(UNUSED).to_bytes()).unwrap();
    let (path, problem) = failure(dir.path());
    assert_eq!(path, first);
    let BundleFailure::Hash { found } = &problem else {
        panic!("{problem}");
    };
    assert_eq!(found, &bundle(UNUSED).hash_hex());
    assert!(
        problem.to_string().contains("altered or replaced"),
        "{problem}"
    );
}

#[test]
fn an_altered_bundle_and_a_file_that_is_no_bundle_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let [first, second] = store(dir.path());
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[40] ^= 0x01;
    std::fs::write(&first, &bytes).unwrap();
    let (path, problem) = failure(dir.path());
    assert_eq!(path, first);
    assert!(matches!(problem, BundleFailure::NotABundle(_)), "{problem}");

    std::fs::write(&first, bundle(FIRST).to_bytes()).unwrap();
    std::fs::write(&second, b"not a bundle").unwrap();
    let (path, problem) = failure(dir.path());
    assert_eq!(path, second);
    assert!(problem.to_string().contains("GATEBNDL"), "{problem}");
}
