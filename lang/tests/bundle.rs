//! The bundle format from the outside: determinism, round trips, and what the loader says
//! about damaged or forged bytes. Forged bundles carry a recomputed hash, so that they reach
//! the section checks behind it. Signed bundles: what the signature covers, and each way a
//! signature is refused.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use std::ops::Range;

use ed25519_dalek::Signature;
use portcullis_lang::bundle::signing::{
    self, KeyError, TRAILER_LEN, signing_key_from_pem, signing_key_to_pem, verifying_key_from_pem,
    verifying_key_to_pem,
};
use portcullis_lang::bundle::{
    Bundle, BundleError, FORMAT_VERSION, SectionKind, SignatureError, SigningKey, VerifyingKey,
};
use portcullis_lang::bytecode::{DecodeError, VerifyError};
use portcullis_lang::ir::{
    Alternative, Annotations, Condition, ConditionId, Credential, CredentialId, CredentialKind,
    Effect, Expr, Network, OrderOp, PolicySet, Protocol, RequestField, Rule, Severity,
    StaticSource, Target, TargetField, TargetId, TargetRef, Value, Workload, WorkloadId,
    WorkloadRef,
};
use portcullis_lang::schema::{ClaimType, CustomClaims, DeclaredClaim, ProviderKind};
use portcullis_lang::time::{Days, Window};
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
                credential: None,
                annotations: Annotations::default(),
            },
            Rule {
                name: "no_oidc".to_owned(),
                effect: Effect::Forbid,
                workload: WorkloadRef::AnyOfKind(ProviderKind::Oidc),
                target: TargetRef::Any,
                when: None,
                credential: None,
                annotations: Annotations::default(),
            },
        ],
        credentials: Vec::new(),
        conditions: Vec::new(),
        custom_claims: Default::default(),
    }
}

/// The policy set above plus everything that lives in the optional sections: credentials of
/// every kind, conditions that read each other, annotations, a regex, orderings and a range.
fn full_policy_set() -> PolicySet {
    let mut set = policy_set();
    set.credentials = vec![
        Credential {
            name: "api_token".to_owned(),
            kind: CredentialKind::Jwt {
                audience: "api".to_owned(),
                copy_claims: Vec::new(),
            },
            ttl_s: Some(900),
        },
        Credential {
            name: "legacy".to_owned(),
            kind: CredentialKind::Static(StaticSource::Env("LEGACY_TOKEN".to_owned())),
            ttl_s: None,
        },
        Credential {
            name: "oauth".to_owned(),
            kind: CredentialKind::OauthClientCredentials {
                token_url: "https://idp.internal/token".to_owned(),
                client_id: "portcullis".to_owned(),
                scopes: vec!["read".to_owned(), "write".to_owned()],
            },
            ttl_s: Some(3600),
        },
        Credential {
            name: "orders_rw".to_owned(),
            kind: CredentialKind::PostgresRole {
                grant: vec!["orders_rw".to_owned()],
            },
            ttl_s: Some(5400),
        },
        Credential {
            name: "api_token_with_claims".to_owned(),
            kind: CredentialKind::Jwt {
                audience: "api".to_owned(),
                copy_claims: vec!["repository".to_owned(), "ref".to_owned()],
            },
            ttl_s: Some(600),
        },
    ];
    set.conditions = vec![
        Condition {
            name: "standard_port".to_owned(),
            body: Expr::InRange(Box::new(Expr::Target(TargetField::Port)), 1, 1024),
        },
        Condition {
            name: "office".to_owned(),
            body: Expr::InNetworks(
                Box::new(Expr::Request(RequestField::SourceIp)),
                vec![
                    Network::parse("10.0.0.0/8").unwrap(),
                    Network::parse("2001:db8::/32").unwrap(),
                ],
            ),
        },
        Condition {
            name: "versioned".to_owned(),
            body: Expr::And(
                Box::new(Expr::Condition(ConditionId(0))),
                Box::new(Expr::Matches(
                    Box::new(Expr::Request(RequestField::Resource)),
                    "^/v[0-9]+/".to_owned(),
                )),
            ),
        },
    ];
    let permit = &mut set.rules[0];
    permit.credential = Some(CredentialId(3));
    permit.annotations = Annotations {
        description: Some("CI reads the API".to_owned()),
        severity: Some(Severity::High),
    };
    permit.when = Some(Expr::And(
        Box::new(Expr::And(
            Box::new(Expr::Condition(ConditionId(2))),
            Box::new(Expr::Condition(ConditionId(1))),
        )),
        Box::new(Expr::And(
            Box::new(Expr::Order(
                OrderOp::Le,
                Box::new(Expr::Const(Value::Int(900))),
                Box::new(Expr::Const(Value::Int(3600))),
            )),
            Box::new(Expr::Within(
                Box::new(Expr::Request(RequestField::Time)),
                Window::whole_days(Days::WEEKDAYS),
                "Europe/Berlin".to_owned(),
            )),
        )),
    ));
    set.rules[1].annotations.severity = Some(Severity::Critical);
    set.custom_claims = CustomClaims::from_declared([DeclaredClaim {
        name: "team".to_owned(),
        ty: ClaimType::String,
        required: true,
    }])
    .unwrap();
    set
}

fn bytes() -> Vec<u8> {
    Bundle::from_policy_set(&policy_set()).unwrap().to_bytes()
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// Where a section sits, read from the section table as `docs/bundle-format.md` describes it.
fn section(bytes: &[u8], kind: SectionKind) -> Range<usize> {
    let count = usize::from(u16::from_le_bytes([bytes[10], bytes[11]]));
    let entry = (0..count)
        .map(|position| 16 + 10 * position)
        .find(|entry| u16::from_le_bytes([bytes[*entry], bytes[entry + 1]]) == kind as u16)
        .unwrap();
    let offset = u32_at(bytes, entry + 2) as usize;
    offset..offset + u32_at(bytes, entry + 6) as usize
}

fn full_bytes() -> Vec<u8> {
    Bundle::from_policy_set(&full_policy_set())
        .unwrap()
        .to_bytes()
}

fn forged_full(edit: impl FnOnce(&mut Vec<u8>)) -> Result<Bundle, BundleError> {
    let mut bytes = full_bytes();
    edit(&mut bytes);
    rehash(&mut bytes);
    Bundle::from_bytes(&bytes)
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

#[test]
fn optional_sections_round_trip() {
    let set = full_policy_set();
    let bundle = Bundle::from_policy_set(&set).unwrap();
    let bytes = bundle.to_bytes();
    let n_sections = SectionKind::ALL.len() + SectionKind::OPTIONAL.len();
    assert_eq!(
        usize::from(u16::from_le_bytes([bytes[10], bytes[11]])),
        n_sections
    );
    let mut end = 16 + n_sections * 10;
    for kind in SectionKind::ALL.into_iter().chain(SectionKind::OPTIONAL) {
        let range = section(&bytes, kind);
        assert_eq!(range.start, end, "{kind:?}");
        end = range.end;
    }
    assert_eq!(end, bytes.len() - 32);
    let loaded = Bundle::from_bytes(&bytes).unwrap();
    assert_eq!(loaded, bundle);
    assert_eq!(loaded.credentials(), set.credentials.as_slice());
    let names: Vec<&str> = loaded
        .conditions()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["standard_port", "office", "versioned"]);
    assert_eq!(loaded.network_sets()[0].len(), 2);
    assert!(loaded.network_sets()[0][1].contains("2001:db8::7".parse().unwrap()));
    assert_eq!(loaded.regexes()[0].pattern, "^/v[0-9]+/");
    assert_eq!(loaded.custom_claims(), &set.custom_claims);
    assert!(loaded.regexes()[0].regex.is_match("/v12/x"));
    let permit = &loaded.rules()[0];
    assert_eq!(permit.credential, Some(CredentialId(3)));
    assert_eq!(permit.annotations, set.rules[0].annotations);
    assert_eq!(loaded.rules()[1].credential, None);
    assert_eq!(
        loaded.rules()[1].annotations.severity,
        Some(Severity::Critical)
    );
}

#[test]
fn a_policy_set_without_extras_keeps_the_eight_sections() {
    // Leaving out empty optional sections keeps such bundles byte for byte as they were.
    let bytes = bytes();
    assert_eq!(u16::from_le_bytes([bytes[10], bytes[11]]), 8);
    let mut with_annotation = policy_set();
    with_annotation.rules[0].annotations.description = Some("reads".to_owned());
    let bytes = Bundle::from_policy_set(&with_annotation)
        .unwrap()
        .to_bytes();
    assert_eq!(u16::from_le_bytes([bytes[10], bytes[11]]), 9);
    section(&bytes, SectionKind::RuleDetails);
}

#[test]
fn forged_optional_sections_are_refused() {
    // The first credential's kind byte follows its name.
    let error = forged_full(|bytes| {
        let at = section(bytes, SectionKind::Credentials).start + 8;
        bytes[at] = 7;
    });
    assert_eq!(
        error,
        Err(BundleError::InvalidTag {
            section: "credentials",
            what: "credential kind",
            value: 7
        })
    );

    // A jwt credential without a ttl.
    let error = forged_full(|bytes| {
        let at = section(bytes, SectionKind::Credentials).start + 9;
        bytes[at..at + 8].copy_from_slice(&0u64.to_le_bytes());
    });
    assert!(
        matches!(error, Err(BundleError::InvalidTag { what: "ttl", .. })),
        "{error:?}"
    );

    // Rule details: rule, credential, description, severity. Moving the permit's credential
    // to the forbid is refused.
    let error = forged_full(|bytes| {
        let at = section(bytes, SectionKind::RuleDetails).start + 4 + 13;
        assert_eq!(u32_at(bytes, at), 1);
        let credential_at = at + 4;
        bytes[credential_at..credential_at + 4].copy_from_slice(&0u32.to_le_bytes());
    });
    assert!(
        matches!(
            error,
            Err(BundleError::InvalidTag {
                what: "credential of a forbid",
                ..
            })
        ),
        "{error:?}"
    );

    let error = forged_full(|bytes| {
        let at = section(bytes, SectionKind::RuleDetails).start + 4 + 4;
        bytes[at..at + 4].copy_from_slice(&5u32.to_le_bytes());
    });
    assert!(
        matches!(
            error,
            Err(BundleError::IndexOutOfRange {
                what: "credential",
                index: 5,
                ..
            })
        ),
        "{error:?}"
    );

    // A severity outside 0..=4.
    let error = forged_full(|bytes| {
        let at = section(bytes, SectionKind::RuleDetails).start + 4 + 12;
        bytes[at] = 5;
    });
    assert!(matches!(
        error,
        Err(BundleError::InvalidTag {
            what: "severity",
            ..
        })
    ));

    // Optional sections out of order: `regexes` first, then `conditions` after it.
    let error = forged_full(|bytes| {
        let entry = 16 + 10 * 8;
        bytes[entry..entry + 2].copy_from_slice(&12u16.to_le_bytes());
    });
    assert_eq!(
        error,
        Err(BundleError::BadSectionTable {
            position: 9,
            kind: 10,
            expected: 13
        })
    );
}

#[test]
fn forged_condition_cycles_are_refused() {
    // Condition 0 is `target.port in 1..1024`: push_target (2 bytes), in_range (17), return.
    // Making its block read condition 2 instead, which reads condition 0, is a cycle.
    let bytes = full_bytes();
    let conditions = section(&bytes, SectionKind::Conditions);
    let code = section(&bytes, SectionKind::Code);
    let offset = u32_at(&bytes, conditions.start + 8) as usize;
    let block = code.start + offset + 4;
    assert_eq!(bytes[block + 2], 0x15);
    let error = forged_full(|bytes| {
        bytes[block] = 0x17;
        bytes[block + 1..block + 5].copy_from_slice(&2u32.to_le_bytes());
        // pad the rest of the block with `not` around a bool: `condition 1, not, not, …`.
        bytes[block + 5..block + 19].fill(0x09);
    });
    assert_eq!(error, Err(BundleError::ConditionGraph));
}

#[test]
fn forged_networks_are_refused() {
    // Set count, network count, then family 4, four address bytes, prefix 8.
    let error = forged_full(|bytes| {
        let at = section(bytes, SectionKind::Networks).start + 8;
        assert_eq!(bytes[at], 4);
        // 10.0.0.0/4 has bits set beyond its prefix.
        bytes[at + 5] = 4;
    });
    assert_eq!(
        error,
        Err(BundleError::InvalidNetwork { set: 0, network: 0 })
    );
    let error = forged_full(|bytes| {
        let at = section(bytes, SectionKind::Networks).start + 8;
        bytes[at + 5] = 33;
    });
    assert_eq!(
        error,
        Err(BundleError::InvalidNetwork { set: 0, network: 0 })
    );
    let error = forged_full(|bytes| {
        let at = section(bytes, SectionKind::Networks).start + 8;
        bytes[at] = 5;
    });
    assert!(matches!(
        error,
        Err(BundleError::InvalidTag {
            what: "address family",
            ..
        })
    ));
}

#[test]
fn forged_regexes_are_refused() {
    let error = forged_full(|bytes| {
        let strings = section(bytes, SectionKind::Strings);
        let pattern = b"^/v[0-9]+/";
        let at = strings.start
            + bytes[strings.clone()]
                .windows(pattern.len())
                .position(|window| window == pattern)
                .unwrap();
        bytes[at + 3] = b'(';
    });
    assert!(
        matches!(error, Err(BundleError::InvalidRegex { index: 0, .. })),
        "{error:?}"
    );
}

#[test]
fn forged_full_bytes_never_panic() {
    let original = full_bytes();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..4000 {
        let mut bytes = original.clone();
        for _ in 0..1 + next() % 3 {
            let at = 16 + (next() as usize) % (bytes.len() - 48);
            bytes[at] = next() as u8;
        }
        rehash(&mut bytes);
        if let Ok(bundle) = Bundle::from_bytes(&bytes) {
            assert_eq!(bundle.to_bytes(), bytes);
        }
    }
}

/// A key pair from a fixed seed, so that signed bundles are the same on every run.
fn key(seed: u8) -> (SigningKey, VerifyingKey) {
    let signing = SigningKey::from_bytes(&[seed; 32]);
    let verifying = signing.verifying_key();
    (signing, verifying)
}

/// 2026-12-05T00:00:00Z, when the tests' bundles say they were signed.
const SIGNED_AT: u64 = 1_796_428_800;

fn signed() -> Bundle {
    Bundle::from_policy_set(&policy_set())
        .unwrap()
        .sign_at(&key(1).0, SIGNED_AT)
}

fn refused_for(bytes: &[u8], key: &VerifyingKey) -> SignatureError {
    match Bundle::from_bytes_verified(bytes, key) {
        Err(BundleError::Signature(error)) => error,
        other => panic!("expected a signature error, got {other:?}"),
    }
}

#[test]
fn a_signed_bundle_verifies_and_keeps_its_hash() {
    let unsigned = Bundle::from_policy_set(&policy_set()).unwrap();
    let (signing_key, verifying_key) = key(1);
    let signed = unsigned.sign_at(&signing_key, SIGNED_AT);
    assert_eq!(
        signed.hash(),
        unsigned.hash(),
        "one identity, signed or not"
    );
    let bytes = signed.to_bytes();
    assert_eq!(bytes.len(), unsigned.to_bytes().len() + TRAILER_LEN);
    assert!(bytes.starts_with(&unsigned.to_bytes()));
    assert_eq!(signed.verify_signature(&verifying_key), Ok(()));
    let loaded = Bundle::from_bytes_verified(&bytes, &verifying_key).unwrap();
    assert_eq!(loaded, signed);
    assert_eq!(loaded.to_bytes(), bytes);
    assert_eq!(loaded.verify_signature(&verifying_key), Ok(()));
    assert_eq!(
        signed.sign_at(&signing_key, SIGNED_AT),
        signed,
        "signing again at the same time changes nothing"
    );
    assert_eq!(
        unsigned.sign_at(&signing_key, SIGNED_AT).to_bytes(),
        bytes,
        "deterministic"
    );
    let later = signed.sign_at(&signing_key, SIGNED_AT + 1);
    assert_eq!(later.hash(), signed.hash());
    assert_eq!(later.signature().unwrap().signed_at(), Some(SIGNED_AT + 1));
    assert_ne!(later.to_bytes(), bytes, "the time is part of the trailer");
    let now = unsigned.sign(&signing_key);
    let now_at = now.signature().unwrap().signed_at().unwrap();
    assert!(now_at > SIGNED_AT, "`sign` says when: {now_at}");
}

#[test]
fn a_signed_bundle_reads_without_a_key() {
    let signed = signed();
    let loaded = Bundle::from_bytes(&signed.to_bytes()).unwrap();
    let signature = loaded.signature().unwrap();
    let (_, verifying_key) = key(1);
    assert_eq!(signature.public_key(), verifying_key.as_bytes());
    assert_eq!(signature.key_id(), signing::key_id(&verifying_key));
    assert_eq!(signature.key_id().len(), 16);
    assert_eq!(signature.signed_at(), Some(SIGNED_AT));
    assert_eq!(loaded.rules()[0].name, "acme_ci_reads_api");
    assert!(
        Bundle::from_policy_set(&policy_set())
            .unwrap()
            .signature()
            .is_none()
    );
}

#[test]
fn the_signature_covers_every_byte_before_it() {
    // What docs/bundle-format.md tells a verifier in another language to do.
    let bytes = signed().to_bytes();
    let (_, verifying_key) = key(1);
    let unsigned_len = u32_at(&bytes, 12) as usize;
    let trailer = &bytes[unsigned_len..];
    assert_eq!(trailer.len(), 114);
    assert_eq!(&trailer[..8], b"GATESIGN");
    assert_eq!(u16::from_le_bytes([trailer[8], trailer[9]]), 2);
    assert_eq!(
        u64::from_le_bytes(trailer[10..18].try_into().unwrap()),
        SIGNED_AT
    );
    assert_eq!(&trailer[18..50], verifying_key.as_bytes());
    let (message, signature) = bytes.split_at(bytes.len() - 64);
    let signature = Signature::from_slice(signature).unwrap();
    verifying_key.verify_strict(message, &signature).unwrap();
}

#[test]
fn an_unsigned_bundle_is_refused_under_a_key() {
    let (_, verifying_key) = key(1);
    let unsigned = Bundle::from_policy_set(&policy_set()).unwrap();
    assert_eq!(
        unsigned.verify_signature(&verifying_key),
        Err(SignatureError::Unsigned)
    );
    let error = refused_for(&unsigned.to_bytes(), &verifying_key);
    assert_eq!(error, SignatureError::Unsigned);
    assert_eq!(error.to_string(), "the bundle is not signed");
    let mut stripped = signed().to_bytes();
    stripped.truncate(stripped.len() - TRAILER_LEN);
    assert_eq!(
        refused_for(&stripped, &verifying_key),
        SignatureError::Unsigned
    );
}

#[test]
fn another_key_is_refused() {
    let signed = signed();
    let (_, signer) = key(1);
    let (_, other) = key(2);
    let expected = SignatureError::OtherKey {
        found: signing::key_id(&signer),
        expected: signing::key_id(&other),
    };
    assert_eq!(signed.verify_signature(&other), Err(expected.clone()));
    assert_eq!(refused_for(&signed.to_bytes(), &other), expected);
    assert!(
        expected
            .to_string()
            .starts_with("the bundle is signed by key ")
    );
    // Naming the other key in the trailer does not make the signature its.
    let mut renamed = signed.to_bytes();
    let key_at = renamed.len() - 96;
    renamed[key_at..key_at + 32].copy_from_slice(other.as_bytes());
    assert_eq!(refused_for(&renamed, &other), SignatureError::Mismatch);
}

#[test]
fn every_flipped_byte_of_a_signed_bundle_is_refused() {
    let bytes = signed().to_bytes();
    let (_, verifying_key) = key(1);
    for at in 0..bytes.len() {
        for mask in [0x01, 0x80, 0xff] {
            let mut corrupt = bytes.clone();
            corrupt[at] ^= mask;
            assert!(
                Bundle::from_bytes_verified(&corrupt, &verifying_key).is_err(),
                "byte {at} ^ {mask:#x}"
            );
        }
    }
    // Behind a recomputed content hash, an edit of the sections passes the loader's header
    // checks and is refused for its signature, before any section is read.
    let unsigned_len = bytes.len() - TRAILER_LEN;
    for at in 16..unsigned_len - 32 {
        let mut forged = bytes.clone();
        forged[at] ^= 0x01;
        rehash(&mut forged[..unsigned_len]);
        assert_eq!(
            refused_for(&forged, &verifying_key),
            SignatureError::Mismatch,
            "byte {at}"
        );
    }
    for at in bytes.len() - 64..bytes.len() {
        let mut forged = bytes.clone();
        forged[at] ^= 0x01;
        let loaded = Bundle::from_bytes(&forged).unwrap();
        assert_eq!(
            loaded.verify_signature(&verifying_key),
            Err(SignatureError::Mismatch),
            "signature byte {at}"
        );
    }
}

#[test]
fn a_signature_cannot_move_to_another_bundle() {
    let (signing_key, verifying_key) = key(1);
    let first = signed().to_bytes();
    let second = Bundle::from_bytes(&full_bytes())
        .unwrap()
        .sign_at(&signing_key, SIGNED_AT)
        .to_bytes();
    let first_len = first.len() - TRAILER_LEN;
    let second_len = second.len() - TRAILER_LEN;
    let mut swapped = first[..first_len].to_vec();
    swapped.extend(&second[second_len..]);
    // It reads as signed, by the right key, and is refused all the same.
    let loaded = Bundle::from_bytes(&swapped).unwrap();
    assert_eq!(
        loaded.signature().unwrap().public_key(),
        verifying_key.as_bytes()
    );
    assert_eq!(
        loaded.verify_signature(&verifying_key),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        refused_for(&swapped, &verifying_key),
        SignatureError::Mismatch
    );
    assert!(
        SignatureError::Mismatch
            .to_string()
            .contains("altered after signing")
    );
}

#[test]
fn malformed_signature_trailers_are_refused() {
    let bytes = signed().to_bytes();
    let unsigned_len = bytes.len() - TRAILER_LEN;
    for len in unsigned_len + 1..bytes.len() {
        assert_eq!(
            Bundle::from_bytes(&bytes[..len]).unwrap_err(),
            BundleError::SignatureLength {
                actual: len - unsigned_len,
                expected: TRAILER_LEN
            },
            "{len}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(
        Bundle::from_bytes(&longer).unwrap_err(),
        BundleError::SignatureLength {
            actual: TRAILER_LEN + 1,
            expected: TRAILER_LEN
        }
    );
    let mut other_algorithm = bytes.clone();
    other_algorithm[unsigned_len + 8] = 3;
    let error = Bundle::from_bytes(&other_algorithm).unwrap_err();
    assert_eq!(error, BundleError::SignatureAlgorithm { algorithm: 3 });
    assert_eq!(
        error.to_string(),
        "the bundle is signed with algorithm 3, which this build does not know; it knows 1 \
         (ed25519) and 2 (ed25519 with the signing time)"
    );
    // A trailer of algorithm 1 is eight bytes shorter: one of the timed length is refused.
    let mut untimed_algorithm = bytes.clone();
    untimed_algorithm[unsigned_len + 8] = 1;
    assert_eq!(
        Bundle::from_bytes(&untimed_algorithm).unwrap_err(),
        BundleError::SignatureLength {
            actual: TRAILER_LEN,
            expected: TRAILER_LEN - 8
        }
    );
    let mut garbage = bytes[..unsigned_len].to_vec();
    garbage.extend(b"not a signature");
    assert_eq!(
        Bundle::from_bytes(&garbage).unwrap_err(),
        BundleError::TrailingBytes { extra: 15 }
    );
}

#[test]
fn a_signature_without_a_signing_time_reads_but_is_refused_under_a_key() {
    // Algorithm 1, as `policyc build --sign` wrote it before signatures carried a time: made
    // here by hand, as docs/bundle-format.md describes it.
    let (signing_key, verifying_key) = key(1);
    let mut bytes = Bundle::from_policy_set(&policy_set()).unwrap().to_bytes();
    bytes.extend(b"GATESIGN");
    bytes.extend(1u16.to_le_bytes());
    bytes.extend(verifying_key.as_bytes());
    let signature = ed25519_dalek::Signer::sign(&signing_key, &bytes);
    bytes.extend(signature.to_bytes());

    let loaded = Bundle::from_bytes(&bytes).unwrap();
    assert_eq!(loaded.signature().unwrap().signed_at(), None);
    assert_eq!(loaded.verify_signature(&verifying_key), Ok(()));
    assert_eq!(loaded.to_bytes(), bytes, "written back as read");
    let error = refused_for(&bytes, &verifying_key);
    assert_eq!(error, SignatureError::Untimed);
    assert!(error.to_string().contains("no signing time"), "{error}");
    assert!(error.to_string().contains("rollback"), "{error}");
}

/// Made by `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout`; test use only.
const OPENSSL_PRIVATE_KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIMrwzrKb7DvCBkl90QOLqgdbIbfcXj0HnnG3+NWRxLbG
-----END PRIVATE KEY-----
";
const OPENSSL_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEA9ydw9JpMMrb4fkxWnn/SaWj2a7JeniPBoFlYM26jqfw=
-----END PUBLIC KEY-----
";

#[test]
fn keys_are_read_and_written_as_pem() {
    let (signing_key, verifying_key) = key(3);
    let private_pem = signing_key_to_pem(&signing_key).unwrap();
    assert!(private_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    let read = signing_key_from_pem(&private_pem).unwrap();
    assert_eq!(read.to_bytes(), signing_key.to_bytes());
    let public_pem = verifying_key_to_pem(&verifying_key).unwrap();
    assert!(public_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    assert_eq!(verifying_key_from_pem(&public_pem).unwrap(), verifying_key);

    let openssl_key = signing_key_from_pem(OPENSSL_PRIVATE_KEY).unwrap();
    let openssl_public = verifying_key_from_pem(OPENSSL_PUBLIC_KEY).unwrap();
    assert_eq!(openssl_key.verifying_key(), openssl_public);
    // Written as OpenSSL writes them, so that OpenSSL 3.0 reads them back.
    assert_eq!(
        signing_key_to_pem(&openssl_key).unwrap().as_str(),
        OPENSSL_PRIVATE_KEY
    );
    assert_eq!(
        verifying_key_to_pem(&openssl_public).unwrap(),
        OPENSSL_PUBLIC_KEY
    );
    let bundle = signed().sign(&openssl_key);
    assert_eq!(bundle.verify_signature(&openssl_public), Ok(()));

    assert_eq!(
        verifying_key_from_pem(&private_pem),
        Err(KeyError::PrivateWherePublic)
    );
    assert_eq!(
        signing_key_from_pem(&public_pem),
        Err(KeyError::PublicWherePrivate)
    );
    assert!(matches!(
        verifying_key_from_pem("not a key"),
        Err(KeyError::NotPublicKey { .. })
    ));
    // An RSA or P-256 key in the right PEM form is not an ed25519 key.
    let p256 = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/untrusted-p256.key.pem"
    ))
    .unwrap();
    assert!(matches!(
        signing_key_from_pem(&p256),
        Err(KeyError::NotPrivateKey { .. })
    ));
}
