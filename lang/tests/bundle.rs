//! The bundle format from the outside: determinism, round trips, and what the loader says
//! about damaged or forged bytes. Forged bundles carry a recomputed hash, so that they reach
//! the section checks behind it.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use std::ops::Range;

use portcullis_lang::bundle::{Bundle, BundleError, FORMAT_VERSION, SectionKind};
use portcullis_lang::bytecode::{DecodeError, VerifyError};
use portcullis_lang::ir::{
    Alternative, Effect, Expr, PolicySet, Protocol, RequestField, Rule, Target, TargetId,
    TargetRef, Value, Workload, WorkloadId, WorkloadRef,
};
use portcullis_lang::schema::ProviderKind;
use sha2::{Digest, Sha256};

fn text(value: &str) -> Expr {
    Expr::Const(Value::String(value.to_owned()))
}

/// One workload, one target, a permit whose `when` is `request.action == "GET" && has
/// request.resource`, and a forbid for every caller of one kind.
fn policy_set() -> PolicySet {
    let (repository, _) = ProviderKind::Github.claim("repository").unwrap();
    let condition = Expr::Like(
        Box::new(Expr::Claim {
            kind: ProviderKind::Github,
            claim: repository,
        }),
        "acme/*".to_owned(),
    );
    let when = Expr::And(
        Box::new(Expr::Eq(
            Box::new(Expr::Request(RequestField::Action)),
            Box::new(text("GET")),
        )),
        Box::new(Expr::HasRequest(RequestField::Resource)),
    );
    PolicySet {
        workloads: vec![Workload {
            name: "acme_ci".to_owned(),
            alternatives: vec![Alternative {
                kind: ProviderKind::Github,
                condition,
            }],
        }],
        targets: vec![Target {
            name: "api".to_owned(),
            protocol: Protocol::Https,
            host: "api.internal".to_owned(),
            port: 443,
            database: None,
            path_prefix: Some("/v1/".to_owned()),
        }],
        rules: vec![
            Rule {
                name: "acme_ci_reads_api".to_owned(),
                effect: Effect::Permit,
                workload: WorkloadRef::Named(WorkloadId(0)),
                target: TargetRef::Named(TargetId(0)),
                when: Some(when),
            },
            Rule {
                name: "no_oidc".to_owned(),
                effect: Effect::Forbid,
                workload: WorkloadRef::AnyOfKind(ProviderKind::Oidc),
                target: TargetRef::Any,
                when: None,
            },
        ],
    }
}

fn bytes() -> Vec<u8> {
    Bundle::from_policy_set(&policy_set()).unwrap().to_bytes()
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// Where a section sits, read from the section table as `docs/bundle-format.md` describes it.
fn section(bytes: &[u8], kind: SectionKind) -> Range<usize> {
    let entry = 16 + 10 * (kind as usize - 1);
    assert_eq!(
        u16::from_le_bytes([bytes[entry], bytes[entry + 1]]),
        kind as u16
    );
    let offset = u32_at(bytes, entry + 2) as usize;
    offset..offset + u32_at(bytes, entry + 6) as usize
}

/// Rewrites the trailing hash so that a forged bundle passes the hash check.
fn rehash(bytes: &mut [u8]) {
    let body = bytes.len() - 32;
    let hash = Sha256::digest(&bytes[..body]);
    bytes[body..].copy_from_slice(&hash);
}

fn forged(edit: impl FnOnce(&mut Vec<u8>)) -> Result<Bundle, BundleError> {
    let mut bytes = bytes();
    edit(&mut bytes);
    rehash(&mut bytes);
    Bundle::from_bytes(&bytes)
}

#[test]
fn same_policy_set_same_bytes_and_hash() {
    let first = Bundle::from_policy_set(&policy_set()).unwrap();
    let second = Bundle::from_policy_set(&policy_set().clone()).unwrap();
    assert_eq!(first.to_bytes(), second.to_bytes());
    assert_eq!(first.hash(), second.hash());
    assert_eq!(first.hash_hex().len(), 64);
    assert_eq!(first.hash_hex(), hex::encode(first.hash()));
    let mut renamed = policy_set();
    renamed.rules[1].name = "no_oidc_callers".to_owned();
    assert_ne!(
        Bundle::from_policy_set(&renamed).unwrap().hash(),
        first.hash()
    );
}

#[test]
fn hash_covers_everything_before_it() {
    let bundle = Bundle::from_policy_set(&policy_set()).unwrap();
    let bytes = bundle.to_bytes();
    let body = &bytes[..bytes.len() - 32];
    assert_eq!(Sha256::digest(body).as_slice(), bundle.hash());
    assert_eq!(&bytes[bytes.len() - 32..], bundle.hash());
}

#[test]
fn round_trip() {
    let bundle = Bundle::from_policy_set(&policy_set()).unwrap();
    let loaded = Bundle::from_bytes(&bundle.to_bytes()).unwrap();
    assert_eq!(loaded, bundle);
    assert_eq!(loaded.hash_hex(), bundle.hash_hex());
    assert_eq!(loaded.to_bytes(), bundle.to_bytes());
    assert_eq!(loaded.rules()[0].name, "acme_ci_reads_api");
    assert_eq!(loaded.targets()[0].path_prefix.as_deref(), Some("/v1/"));
    assert_eq!(loaded.rules_for_target(TargetId(0)).unwrap().permits, [0]);
    assert_eq!(loaded.rules_for_any_target().forbids, [1]);
    assert!(loaded.globs()[0].is_match("acme/billing"));
}

#[test]
fn header_layout() {
    let bytes = bytes();
    assert_eq!(&bytes[..8], b"GATEBNDL");
    assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), FORMAT_VERSION);
    assert_eq!(u16::from_le_bytes([bytes[10], bytes[11]]), 8);
    assert_eq!(u32_at(&bytes, 12) as usize, bytes.len());
    let mut end = 16 + 8 * 10;
    for kind in SectionKind::ALL {
        let range = section(&bytes, kind);
        assert_eq!(range.start, end, "{kind:?}");
        end = range.end;
    }
    assert_eq!(end, bytes.len() - 32);
}

#[test]
fn every_truncation_is_reported() {
    let bytes = bytes();
    for len in 0..bytes.len() {
        let error = Bundle::from_bytes(&bytes[..len]).unwrap_err();
        assert!(
            matches!(error, BundleError::Truncated { .. }),
            "{len}: {error}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(
        Bundle::from_bytes(&longer).unwrap_err(),
        BundleError::TrailingBytes { extra: 1 }
    );
}

#[test]
fn every_flipped_byte_is_reported() {
    let bytes = bytes();
    for at in 0..bytes.len() {
        for mask in [0x01, 0x80, 0xff] {
            let mut corrupt = bytes.clone();
            corrupt[at] ^= mask;
            assert!(
                Bundle::from_bytes(&corrupt).is_err(),
                "byte {at} ^ {mask:#x}"
            );
        }
    }
}

#[test]
fn header_errors() {
    let mut bytes = bytes();
    bytes[0] = b'X';
    assert_eq!(
        Bundle::from_bytes(&bytes).unwrap_err(),
        BundleError::BadMagic
    );
    assert_eq!(
        Bundle::from_bytes(b"PK\x03\x04").unwrap_err(),
        BundleError::BadMagic
    );
    let mut bytes = self::bytes();
    bytes[8] = 7;
    let error = Bundle::from_bytes(&bytes).unwrap_err();
    assert_eq!(error, BundleError::UnsupportedVersion { version: 7 });
    assert_eq!(
        error.to_string(),
        "bundle format version 7 is not supported; this build reads version 1"
    );
    let mut bytes = self::bytes();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let error = Bundle::from_bytes(&bytes).unwrap_err();
    assert!(matches!(error, BundleError::HashMismatch { .. }), "{error}");
    assert!(
        error
            .to_string()
            .starts_with("the bundle is corrupt: its content hash is ")
    );
}

#[test]
fn forged_sections_are_refused() {
    let error = forged(|bytes| {
        let at = section(bytes, SectionKind::Strings).start;
        bytes[at..at + 4].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    });
    assert_eq!(
        error,
        Err(BundleError::CountTooLarge {
            section: "strings",
            count: 0x7fff_ffff
        })
    );

    let error = forged(|bytes| {
        let at = section(bytes, SectionKind::Rules).start + 4;
        bytes[at..at + 4].copy_from_slice(&999u32.to_le_bytes());
    });
    assert!(
        matches!(
            error,
            Err(BundleError::IndexOutOfRange {
                section: "rules",
                what: "name",
                index: 999,
                ..
            })
        ),
        "{error:?}"
    );

    // The permit's effect byte follows its name.
    let error = forged(|bytes| {
        let at = section(bytes, SectionKind::Rules).start + 8;
        bytes[at] = 9;
    });
    assert!(matches!(
        error,
        Err(BundleError::InvalidTag {
            what: "effect",
            value: 9,
            ..
        })
    ));

    // The first rule's workload reference points at a workload that does not exist.
    let error = forged(|bytes| {
        let at = section(bytes, SectionKind::Rules).start + 10;
        bytes[at..at + 4].copy_from_slice(&5u32.to_le_bytes());
    });
    assert!(matches!(
        error,
        Err(BundleError::IndexOutOfRange {
            what: "workload",
            index: 5,
            ..
        })
    ));

    // The workload's alternative refers to code offset 1, inside a block.
    let error = forged(|bytes| {
        let at = section(bytes, SectionKind::Workloads).start + 4 + 8 + 1;
        bytes[at..at + 4].copy_from_slice(&1u32.to_le_bytes());
    });
    assert_eq!(
        error,
        Err(BundleError::BadCodeOffset {
            section: "workloads",
            offset: 1
        })
    );
}

#[test]
fn forged_index_is_refused() {
    // Index: two lists (`api`, then `any`), each forbid count, forbids, permit count, permits.
    // Moving the permit of `api` to an id that is not a rule of `api` must be refused.
    let error = forged(|bytes| {
        let at = section(bytes, SectionKind::Index).start + 4 + 4 + 4;
        assert_eq!(u32_at(bytes, at), 0);
        bytes[at..at + 4].copy_from_slice(&1u32.to_le_bytes());
    });
    assert_eq!(error, Err(BundleError::IndexMismatch { list: 0 }));
}

#[test]
fn forged_code_is_refused() {
    // Blocks in order: the workload's alternative, then the permit's `when`.
    let block_start = |bytes: &[u8], position: usize| {
        let code = section(bytes, SectionKind::Code);
        let mut at = code.start + 4;
        for _ in 0..position {
            at += 4 + u32_at(bytes, at) as usize;
        }
        (at - code.start, at + 4)
    };
    let error = forged(|bytes| {
        let (_, first) = block_start(bytes, 0);
        bytes[first] = 0xee;
    });
    assert_eq!(
        error,
        Err(BundleError::InvalidInstruction {
            block: 4,
            byte: 0,
            error: DecodeError::InvalidOpcode(0xee)
        })
    );

    // `when`: push_request (2 bytes), push_str (5), eq (1), then the jump at byte 8.
    let (offset, _) = block_start(&bytes(), 1);
    let error = forged(|bytes| {
        let (_, first) = block_start(bytes, 1);
        assert_eq!(bytes[first + 8], 0x0e);
        bytes[first + 9..first + 13].copy_from_slice(&40u32.to_le_bytes());
    });
    assert_eq!(
        error,
        Err(BundleError::InvalidCode {
            block: offset as u32,
            pc: 3,
            error: VerifyError::BadJump { target: 40 }
        })
    );

    // Replacing `eq` with `not` leaves a string where a bool is needed.
    let error = forged(|bytes| {
        let (_, first) = block_start(bytes, 1);
        bytes[first + 7] = 0x09;
    });
    assert_eq!(
        error,
        Err(BundleError::InvalidCode {
            block: offset as u32,
            pc: 2,
            error: VerifyError::TypeMismatch { expected: "a bool" }
        })
    );
}

#[test]
fn forged_bytes_never_panic() {
    // Deterministic pseudo-random edits behind a valid hash: each must load or be refused,
    // and a refusal must name what is wrong.
    let original = bytes();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut refused = 0;
    for _ in 0..4000 {
        let mut bytes = original.clone();
        for _ in 0..1 + next() % 3 {
            let at = 16 + (next() as usize) % (bytes.len() - 48);
            bytes[at] = next() as u8;
        }
        rehash(&mut bytes);
        match Bundle::from_bytes(&bytes) {
            Ok(bundle) => assert_eq!(bundle.to_bytes(), bytes),
            Err(error) => {
                refused += 1;
                assert!(!error.to_string().is_empty());
            }
        }
    }
    assert!(
        refused > 2000,
        "only {refused} of 4000 forgeries were refused"
    );
}
