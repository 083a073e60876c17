//! The bundle: a compiled policy set in a versioned binary format, identified by its SHA-256.
//!
//! In: an [`ir::PolicySet`] ([`Bundle::from_policy_set`]) or the bytes of a bundle file
//! ([`Bundle::from_bytes`]). Out: a [`Bundle`] whose every table, index and block of code has
//! been checked, so that the VM can run it without meeting an index out of range, a jump out of
//! its block or a value of the wrong type. Building goes through the same loader, so a bundle
//! in memory is always one that would load from disk. A bundle may carry an ed25519 signature
//! after its content hash ([`signing`]); [`Bundle::from_bytes_verified`] refuses one that a
//! given key did not sign before reading its sections. `docs/bundle-format.md` describes the
//! format field by field.

use std::collections::HashSet;

use sha2::{Digest, Sha256};

use crate::bytecode::{
    self, ConstSet, DecodeError, EmitError, Emitter, Instr, MAX_CONDITION_DEPTH, Tables,
    VerifyError, kind_code, kind_from_code,
};
use crate::glob::{Glob, GlobItem, Segment};
use crate::ir::{
    self, Annotations, CredentialId, CredentialKind, Effect, Network, Protocol, Severity,
    StaticSource, TargetId, TargetRef, WorkloadId, WorkloadRef,
};
use crate::schema::{
    CUSTOM_CLAIMS_KIND, ClaimType, CustomClaimError, CustomClaims, DeclaredClaim, ProviderKind,
};

mod reader;
pub mod signing;
mod zones;
pub use signing::{BundleSignature, SignatureError, SigningKey, VerifyingKey};
pub use zones::{MAX_TZIF_LEN, WindowEntry, ZoneEntry};

/// The first eight bytes of every bundle.
pub const MAGIC: [u8; 8] = *b"GATEBNDL";

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;

/// The largest bundle file a reader takes; larger ones are refused before they are read.
pub const MAX_BUNDLE_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// Magic, version, section count, total length.
const HEADER_LEN: usize = 16;
/// Kind, offset, length.
const TABLE_ENTRY_LEN: usize = 10;
const HASH_LEN: usize = 32;
/// An absent optional string or code offset.
const NONE: u32 = u32::MAX;

/// The most memory one compiled `matches` pattern may take, in bytes; the checker refuses a
/// pattern above it and the loader a bundle that holds one.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// The sections of a version 1 bundle, in the order they appear. The first eight are always
/// present; the optional ones follow, in this order, only when they have entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionKind {
    Strings = 1,
    Constants = 2,
    Globs = 3,
    Workloads = 4,
    Targets = 5,
    Rules = 6,
    Index = 7,
    Code = 8,
    Credentials = 9,
    Conditions = 10,
    RuleDetails = 11,
    Regexes = 12,
    Networks = 13,
    CustomClaims = 14,
    TimeZones = 15,
    TimeWindows = 16,
}

impl SectionKind {
    /// The optional sections, in the order they appear when present.
    pub const OPTIONAL: [SectionKind; 8] = [
        SectionKind::Credentials,
        SectionKind::Conditions,
        SectionKind::RuleDetails,
        SectionKind::Regexes,
        SectionKind::Networks,
        SectionKind::CustomClaims,
        SectionKind::TimeZones,
        SectionKind::TimeWindows,
    ];

    pub const ALL: [SectionKind; 8] = [
        SectionKind::Strings,
        SectionKind::Constants,
        SectionKind::Globs,
        SectionKind::Workloads,
        SectionKind::Targets,
        SectionKind::Rules,
        SectionKind::Index,
        SectionKind::Code,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SectionKind::Strings => "strings",
            SectionKind::Constants => "constants",
            SectionKind::Globs => "globs",
            SectionKind::Workloads => "workloads",
            SectionKind::Targets => "targets",
            SectionKind::Rules => "rules",
            SectionKind::Index => "index",
            SectionKind::Code => "code",
            SectionKind::Credentials => "credentials",
            SectionKind::Conditions => "conditions",
            SectionKind::RuleDetails => "rule details",
            SectionKind::Regexes => "regexes",
            SectionKind::Networks => "networks",
            SectionKind::CustomClaims => "custom claims",
            SectionKind::TimeZones => "time zones",
            SectionKind::TimeWindows => "time windows",
        }
    }
}

/// Position of a block in [`Bundle::blocks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId(pub u32);

/// A workload: its name and its alternatives, each a block that returns whether a caller of
/// that kind is the workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadEntry {
    pub name: String,
    pub alternatives: Vec<AlternativeEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlternativeEntry {
    pub kind: ProviderKind,
    pub block: BlockId,
}

/// A rule as the VM runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleEntry {
    pub name: String,
    pub effect: Effect,
    pub workload: WorkloadRef,
    pub target: TargetRef,
    /// The block of `when`, if the rule has one.
    pub when: Option<BlockId>,
    /// The credential a permit issues, if any.
    pub credential: Option<CredentialId>,
    pub annotations: Annotations,
}

/// A named condition: a block that returns its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionEntry {
    pub name: String,
    pub block: BlockId,
}

/// A `matches` pattern, compiled when the bundle loads.
#[derive(Debug, Clone)]
pub struct CompiledRegex {
    pub pattern: String,
    pub regex: regex::Regex,
}

impl PartialEq for CompiledRegex {
    fn eq(&self, other: &CompiledRegex) -> bool {
        self.pattern == other.pattern
    }
}

/// The rules that can apply to one target (or to every target), by position in
/// [`Bundle::rules`], each list ascending, forbids apart from permits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleList {
    pub forbids: Vec<u32>,
    pub permits: Vec<u32>,
}

/// A compiled, validated policy set.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    strings: Vec<String>,
    sets: Vec<ConstSet>,
    globs: Vec<Glob>,
    workloads: Vec<WorkloadEntry>,
    targets: Vec<ir::Target>,
    credentials: Vec<ir::Credential>,
    conditions: Vec<ConditionEntry>,
    regexes: Vec<CompiledRegex>,
    network_sets: Vec<Vec<Network>>,
    custom_claims: CustomClaims,
    zones: Vec<ZoneEntry>,
    windows: Vec<WindowEntry>,
    rules: Vec<RuleEntry>,
    /// One list per target, in target order.
    index: Vec<RuleList>,
    /// The rules of `target any`.
    index_any: RuleList,
    blocks: Vec<Vec<Instr>>,
    /// Header through content hash: what the hash identifies, without a signature trailer.
    bytes: Vec<u8>,
    hash: [u8; 32],
    signature: Option<BundleSignature>,
}

/// Why a bundle could not be built or loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("this is not a policy bundle: it does not start with `GATEBNDL`")]
    BadMagic,
    #[error(
        "bundle format version {version} is not supported; this build reads version {FORMAT_VERSION}"
    )]
    UnsupportedVersion { version: u16 },
    #[error("the bundle is truncated: it should be {expected} bytes long but is {actual}")]
    Truncated { expected: u64, actual: usize },
    #[error("the bundle has {extra} bytes after its end")]
    TrailingBytes { extra: usize },
    #[error("the bundle's signature trailer is {actual} bytes long; it should be {expected}")]
    SignatureLength { actual: usize, expected: usize },
    #[error(
        "the bundle is signed with algorithm {algorithm}, which this build does not know; it \
         knows 1 (ed25519) and 2 (ed25519 with the signing time)"
    )]
    SignatureAlgorithm { algorithm: u16 },
    /// Only from [`Bundle::from_bytes_verified`].
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("the bundle is corrupt: its content hash is {actual}, but it records {recorded}")]
    HashMismatch { recorded: String, actual: String },
    #[error("the bundle has {count} sections; version {FORMAT_VERSION} has 8 to 16")]
    SectionCount { count: u16 },
    #[error("entry {position} of the section table has kind {kind}, expected {expected}")]
    BadSectionTable {
        position: usize,
        kind: u16,
        expected: u16,
    },
    #[error("section `{section}` at offset {offset}, length {length} is out of place")]
    SectionOutOfRange {
        section: &'static str,
        offset: u32,
        length: u32,
    },
    #[error("section `{section}` ends in the middle of an entry, at its byte {offset}")]
    SectionEndsEarly {
        section: &'static str,
        offset: usize,
    },
    #[error("section `{section}` has unused bytes after its last entry, from its byte {offset}")]
    SectionTrailingBytes {
        section: &'static str,
        offset: usize,
    },
    #[error("section `{section}` declares {count} entries, more than its bytes can hold")]
    CountTooLarge { section: &'static str, count: u32 },
    #[error("string {index} is not valid UTF-8")]
    InvalidUtf8 { index: usize },
    #[error("section `{section}`: {what} index {index} is out of range (there are {len})")]
    IndexOutOfRange {
        section: &'static str,
        what: &'static str,
        index: u32,
        len: usize,
    },
    #[error("section `{section}`: {what} has the invalid value {value}")]
    InvalidTag {
        section: &'static str,
        what: &'static str,
        value: u32,
    },
    #[error("section `{section}`: code offset {offset} is not the start of a block")]
    BadCodeOffset { section: &'static str, offset: u32 },
    #[error("code block at offset {block}, byte {byte}: {error}")]
    InvalidInstruction {
        block: u32,
        byte: usize,
        error: DecodeError,
    },
    #[error("code block at offset {block}, instruction {pc}: {error}")]
    InvalidCode {
        block: u32,
        pc: usize,
        error: VerifyError,
    },
    #[error("the index does not match the rules (list {list})")]
    IndexMismatch { list: usize },
    #[error("two targets are named `{name}`")]
    DuplicateTarget { name: String },
    #[error("network {network} of set {set} is not a network without host bits")]
    InvalidNetwork { set: usize, network: usize },
    #[error("regex {index} does not compile: {error}")]
    InvalidRegex { index: usize, error: String },
    #[error(
        "the conditions refer to each other in a cycle or more than {MAX_CONDITION_DEPTH} deep"
    )]
    ConditionGraph,
    #[error("section `custom claims`: {0}")]
    CustomClaim(CustomClaimError),
    #[error("time zone {index} cannot be loaded: {error}")]
    InvalidZone { index: usize, error: String },
    #[error("the compiler does not know the time zone `{name}`")]
    UnknownZone { name: String },
    #[error("cannot compile the policy set: {0}")]
    Emit(#[from] EmitError),
}

impl Bundle {
    /// Compiles a checked policy set.
    pub fn from_policy_set(set: &ir::PolicySet) -> Result<Bundle, BundleError> {
        let bytes = write::policy_set(set)?;
        Bundle::from_bytes(&bytes)
    }

    /// The bundle file's bytes, with the signature trailer when it is signed; the same policy
    /// set always gives the same unsigned bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = self.bytes.clone();
        if let Some(signature) = &self.signature {
            bytes.extend(signature.trailer());
        }
        bytes
    }

    /// Loads and checks a bundle, signed or not, without checking a signature it carries.
    /// Never panics, and allocates in proportion to `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Bundle, BundleError> {
        read::bundle(bytes, None)
    }

    /// Loads a bundle only if `key` signed it, with a signing time: an unsigned bundle, one
    /// signed by another key, one altered after signing and one whose signature has no time
    /// are each refused with their [`SignatureError`], after
    /// the header, content hash and trailer are checked and before any section is read.
    pub fn from_bytes_verified(bytes: &[u8], key: &VerifyingKey) -> Result<Bundle, BundleError> {
        read::bundle(bytes, Some(key))
    }

    /// The same bundle signed with `key` now: the same unsigned bytes and content hash,
    /// followed by a signature trailer, which replaces any the bundle carried.
    pub fn sign(&self, key: &SigningKey) -> Bundle {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        self.sign_at(key, now)
    }

    /// The same bundle signed with `key`, saying it was signed at `signed_at` (seconds since
    /// the Unix epoch, UTC).
    pub fn sign_at(&self, key: &SigningKey, signed_at: u64) -> Bundle {
        Bundle {
            signature: Some(signing::sign(&self.bytes, key, signed_at)),
            ..self.clone()
        }
    }

    /// The signature the bundle carries, as recorded: not yet checked against any key.
    pub fn signature(&self) -> Option<&BundleSignature> {
        self.signature.as_ref()
    }

    /// Checks that `key` signed exactly these bytes.
    pub fn verify_signature(&self, key: &VerifyingKey) -> Result<(), SignatureError> {
        let Some(signature) = &self.signature else {
            return Err(SignatureError::Unsigned);
        };
        signing::verify(&self.bytes, signature, key)
    }

    /// The SHA-256 of the bundle's header and sections; signing does not change it.
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }

    pub fn hash_hex(&self) -> String {
        hex::encode(self.hash)
    }

    pub fn strings(&self) -> &[String] {
        &self.strings
    }

    pub fn sets(&self) -> &[ConstSet] {
        &self.sets
    }

    pub fn globs(&self) -> &[Glob] {
        &self.globs
    }

    pub fn workloads(&self) -> &[WorkloadEntry] {
        &self.workloads
    }

    pub fn targets(&self) -> &[ir::Target] {
        &self.targets
    }

    pub fn rules(&self) -> &[RuleEntry] {
        &self.rules
    }

    pub fn credentials(&self) -> &[ir::Credential] {
        &self.credentials
    }

    pub fn credential(&self, id: CredentialId) -> Option<&ir::Credential> {
        self.credentials.get(id.0 as usize)
    }

    pub fn conditions(&self) -> &[ConditionEntry] {
        &self.conditions
    }

    /// The networks that `in` tests IP addresses against.
    pub fn network_sets(&self) -> &[Vec<Network>] {
        &self.network_sets
    }

    /// The compiled patterns of `matches`.
    /// The custom `oidc` claims the policy set was checked against, with their ids and types.
    pub fn custom_claims(&self) -> &CustomClaims {
        &self.custom_claims
    }

    /// The time zones of `within` windows, each built from the TZif data the bundle carries.
    pub fn zones(&self) -> &[ZoneEntry] {
        &self.zones
    }

    /// The windows of `within`, by [`Instr::Within`] index.
    pub fn windows(&self) -> &[WindowEntry] {
        &self.windows
    }

    pub fn regexes(&self) -> &[CompiledRegex] {
        &self.regexes
    }

    /// The rules that name `target`.
    pub fn rules_for_target(&self, target: TargetId) -> Option<&RuleList> {
        self.index.get(target.0 as usize)
    }

    /// The rules of `target any`.
    pub fn rules_for_any_target(&self) -> &RuleList {
        &self.index_any
    }

    pub fn blocks(&self) -> &[Vec<Instr>] {
        &self.blocks
    }

    pub fn block(&self, id: BlockId) -> Option<&[Instr]> {
        self.blocks.get(id.0 as usize).map(Vec::as_slice)
    }

    /// The number of instructions in all blocks: no decision can run more, because a block
    /// only jumps forward and a decision runs each block at most once.
    pub fn instruction_count(&self) -> usize {
        self.blocks.iter().map(Vec::len).sum()
    }
}

fn credential_code(kind: &CredentialKind) -> u8 {
    match kind {
        CredentialKind::Jwt { copy_claims, .. } if copy_claims.is_empty() => 0,
        CredentialKind::Jwt { .. } => 4,
        CredentialKind::Static(_) => 1,
        CredentialKind::OauthClientCredentials { .. } => 2,
        CredentialKind::PostgresRole { .. } => 3,
    }
}

fn severity_code(severity: Option<Severity>) -> u8 {
    match severity {
        None => 0,
        Some(Severity::Low) => 1,
        Some(Severity::Medium) => 2,
        Some(Severity::High) => 3,
        Some(Severity::Critical) => 4,
    }
}

fn severity_from_code(code: u8) -> Option<Option<Severity>> {
    match code {
        0 => Some(None),
        1 => Some(Some(Severity::Low)),
        2 => Some(Some(Severity::Medium)),
        3 => Some(Some(Severity::High)),
        4 => Some(Some(Severity::Critical)),
        _ => None,
    }
}

/// Compiles one `matches` pattern as the checker and the loader both do.
pub fn compile_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

fn claim_type_code(ty: ClaimType) -> u8 {
    match ty {
        ClaimType::String => 0,
        ClaimType::Int => 1,
        ClaimType::Bool => 2,
        ClaimType::StringSet => 3,
    }
}

fn claim_type_from_code(code: u8) -> Option<ClaimType> {
    [
        ClaimType::String,
        ClaimType::Int,
        ClaimType::Bool,
        ClaimType::StringSet,
    ]
    .into_iter()
    .find(|ty| claim_type_code(*ty) == code)
}

fn protocol_code(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::Http => 0,
        Protocol::Https => 1,
        Protocol::Postgres => 2,
    }
}

fn protocol_from_code(code: u8) -> Option<Protocol> {
    Protocol::ALL
        .into_iter()
        .find(|protocol| protocol_code(*protocol) == code)
}

/// The index a set of rules implies: per target the rules naming it, then `target any`.
fn build_index(rules: &[RuleEntry], n_targets: usize) -> (Vec<RuleList>, RuleList) {
    let mut index = vec![RuleList::default(); n_targets];
    let mut index_any = RuleList::default();
    for (rule_idx, rule) in (0u32..).zip(rules) {
        let list = match rule.target {
            TargetRef::Named(TargetId(target)) => match index.get_mut(target as usize) {
                Some(list) => list,
                None => continue,
            },
            TargetRef::Any => &mut index_any,
        };
        match rule.effect {
            Effect::Forbid => list.forbids.push(rule_idx),
            Effect::Permit => list.permits.push(rule_idx),
        }
    }
    (index, index_any)
}

/// Serialization of a policy set.
mod write {
    use super::*;

    /// Appends little-endian integers and length-prefixed lists.
    #[derive(Default)]
    struct Out(Vec<u8>);

    impl Out {
        fn u8(&mut self, value: u8) {
            self.0.push(value);
        }
        fn u16(&mut self, value: u16) {
            self.0.extend(value.to_le_bytes());
        }
        fn u32(&mut self, value: u32) {
            self.0.extend(value.to_le_bytes());
        }
        fn i64(&mut self, value: i64) {
            self.0.extend(value.to_le_bytes());
        }
        fn u64(&mut self, value: u64) {
            self.0.extend(value.to_le_bytes());
        }
        fn strings(&mut self, emitter: &mut Emitter, items: &[String]) -> Result<(), EmitError> {
            self.count(items.len(), "strings in one list")?;
            for item in items {
                self.u32(emitter.intern(item)?);
            }
            Ok(())
        }
        fn optional_string(
            &mut self,
            emitter: &mut Emitter,
            text: Option<&str>,
        ) -> Result<(), EmitError> {
            match text {
                Some(text) => self.u32(emitter.intern(text)?),
                None => self.u32(NONE),
            }
            Ok(())
        }
        fn count(&mut self, len: usize, what: &'static str) -> Result<(), EmitError> {
            self.u32(bytecode::to_u32(len, what)?);
            Ok(())
        }
    }

    /// The code section being built: blocks and the offset of each.
    #[derive(Default)]
    struct Code {
        out: Out,
        n_blocks: usize,
    }

    impl Code {
        /// Adds a block and returns the offset that refers to it.
        fn add(&mut self, block: &[Instr]) -> Result<u32, EmitError> {
            // The block count (4 bytes) precedes the first block.
            let offset = bytecode::to_u32(self.out.0.len() + 4, "bytes of code")?;
            let bytes = bytecode::encode_block(block);
            self.out.count(bytes.len(), "bytes in one block")?;
            self.out.0.extend(bytes);
            self.n_blocks += 1;
            Ok(offset)
        }

        fn finish(self) -> Result<Vec<u8>, EmitError> {
            let mut section = Out::default();
            section.count(self.n_blocks, "code blocks")?;
            section.0.extend(self.out.0);
            Ok(section.0)
        }
    }

    pub(super) fn policy_set(set: &ir::PolicySet) -> Result<Vec<u8>, BundleError> {
        let mut emitter = Emitter::new();
        let mut code = Code::default();
        let workloads = workloads(set, &mut emitter, &mut code)?;
        let targets = targets(set, &mut emitter)?;
        let conditions = conditions(set, &mut emitter, &mut code)?;
        let rules = rules(set, &mut emitter, &mut code)?;
        let index = index(set)?;
        let credentials = credentials(set, &mut emitter)?;
        let rule_details = rule_details(set, &mut emitter)?;
        let regexes = regexes(&mut emitter)?;
        let networks = networks(&emitter)?;
        let custom_claims = custom_claims(&set.custom_claims, &mut emitter)?;
        let (time_zones, time_windows) = zones::write(&mut emitter)?;
        let constants = constants(&mut emitter)?;
        let globs = globs(&mut emitter)?;
        let strings = strings(&emitter)?;
        let mut sections = vec![
            (SectionKind::Strings, strings),
            (SectionKind::Constants, constants),
            (SectionKind::Globs, globs),
            (SectionKind::Workloads, workloads),
            (SectionKind::Targets, targets),
            (SectionKind::Rules, rules),
            (SectionKind::Index, index),
            (SectionKind::Code, code.finish()?),
        ];
        let optional = [
            (SectionKind::Credentials, credentials),
            (SectionKind::Conditions, conditions),
            (SectionKind::RuleDetails, rule_details),
            (SectionKind::Regexes, regexes),
            (SectionKind::Networks, networks),
            (SectionKind::CustomClaims, custom_claims),
            (SectionKind::TimeZones, time_zones),
            (SectionKind::TimeWindows, time_windows),
        ];
        // An optional section without entries is left out, so that a policy set that uses none
        // of them gives the same bytes as before they existed.
        sections.extend(
            optional
                .into_iter()
                .filter(|(_, bytes)| !is_empty_section(bytes)),
        );
        Ok(assemble(&sections)?)
    }

    /// Whether a section holds only its count, and that count is zero.
    fn is_empty_section(bytes: &[u8]) -> bool {
        bytes == [0, 0, 0, 0]
    }

    fn assemble(sections: &[(SectionKind, Vec<u8>)]) -> Result<Vec<u8>, EmitError> {
        let table_len = TABLE_ENTRY_LEN * sections.len();
        let body_len: usize = sections.iter().map(|(_, bytes)| bytes.len()).sum();
        let total = HEADER_LEN + table_len + body_len + HASH_LEN;
        let mut out = Out::default();
        out.0.extend(MAGIC);
        out.u16(FORMAT_VERSION);
        out.u16(sections.len() as u16);
        out.count(total, "bytes in the bundle")?;
        let mut offset = HEADER_LEN + table_len;
        for (kind, section) in sections {
            out.u16(*kind as u16);
            out.count(offset, "bytes in the bundle")?;
            out.count(section.len(), "bytes in one section")?;
            offset += section.len();
        }
        for (_, section) in sections {
            out.0.extend(section);
        }
        let hash = Sha256::digest(&out.0);
        out.0.extend(hash);
        Ok(out.0)
    }

    fn strings(emitter: &Emitter) -> Result<Vec<u8>, EmitError> {
        let mut out = Out::default();
        out.count(emitter.strings().len(), "strings")?;
        for text in emitter.strings() {
            out.count(text.len(), "bytes in one string")?;
            out.0.extend(text.as_bytes());
        }
        Ok(out.0)
    }

    fn constants(emitter: &mut Emitter) -> Result<Vec<u8>, EmitError> {
        let sets = emitter.sets().to_vec();
        let mut out = Out::default();
        out.count(sets.len(), "constant sets")?;
        for set in &sets {
            match set {
                ConstSet::Str(items) => {
                    out.u8(0);
                    out.count(items.len(), "values in one set")?;
                    for item in items {
                        out.u32(emitter.intern(item)?);
                    }
                }
                ConstSet::Int(items) => {
                    out.u8(1);
                    out.count(items.len(), "values in one set")?;
                    items.iter().for_each(|item| out.i64(*item));
                }
                ConstSet::Bool(items) => {
                    out.u8(2);
                    out.count(items.len(), "values in one set")?;
                    items.iter().for_each(|item| out.u8(u8::from(*item)));
                }
            }
        }
        Ok(out.0)
    }

    fn globs(emitter: &mut Emitter) -> Result<Vec<u8>, EmitError> {
        let globs = emitter.globs().to_vec();
        let mut out = Out::default();
        out.count(globs.len(), "glob patterns")?;
        for glob in &globs {
            out.count(glob.segments().len(), "segments in one glob")?;
            for segment in glob.segments() {
                out.count(segment.items.len(), "items in one glob segment")?;
                for item in &segment.items {
                    match item {
                        GlobItem::Literal(text) => {
                            out.u8(0);
                            out.u32(emitter.intern(text)?);
                        }
                        GlobItem::AnyChar => out.u8(1),
                    }
                }
            }
        }
        Ok(out.0)
    }

    fn workloads(
        set: &ir::PolicySet,
        emitter: &mut Emitter,
        code: &mut Code,
    ) -> Result<Vec<u8>, EmitError> {
        let mut out = Out::default();
        out.count(set.workloads.len(), "workloads")?;
        for workload in &set.workloads {
            out.u32(emitter.intern(&workload.name)?);
            out.count(workload.alternatives.len(), "alternatives in one workload")?;
            for alternative in &workload.alternatives {
                out.u8(kind_code(alternative.kind));
                let block = emitter.block(&alternative.condition)?;
                out.u32(code.add(&block)?);
            }
        }
        Ok(out.0)
    }

    fn conditions(
        set: &ir::PolicySet,
        emitter: &mut Emitter,
        code: &mut Code,
    ) -> Result<Vec<u8>, EmitError> {
        let mut out = Out::default();
        out.count(set.conditions.len(), "conditions")?;
        for condition in &set.conditions {
            out.u32(emitter.intern(&condition.name)?);
            let block = emitter.block(&condition.body)?;
            out.u32(code.add(&block)?);
        }
        Ok(out.0)
    }

    fn credentials(set: &ir::PolicySet, emitter: &mut Emitter) -> Result<Vec<u8>, EmitError> {
        let mut out = Out::default();
        out.count(set.credentials.len(), "credentials")?;
        for credential in &set.credentials {
            out.u32(emitter.intern(&credential.name)?);
            out.u8(credential_code(&credential.kind));
            out.u64(credential.ttl_s.unwrap_or(0));
            match &credential.kind {
                CredentialKind::Jwt {
                    audience,
                    copy_claims,
                } => {
                    out.u32(emitter.intern(audience)?);
                    if !copy_claims.is_empty() {
                        out.strings(emitter, copy_claims)?;
                    }
                }
                CredentialKind::Static(source) => {
                    let (tag, text) = match source {
                        StaticSource::Env(var) => (0, var),
                        StaticSource::File(path) => (1, path),
                    };
                    out.u8(tag);
                    out.u32(emitter.intern(text)?);
                }
                CredentialKind::OauthClientCredentials {
                    token_url,
                    client_id,
                    scopes,
                } => {
                    out.u32(emitter.intern(token_url)?);
                    out.u32(emitter.intern(client_id)?);
                    out.strings(emitter, scopes)?;
                }
                CredentialKind::PostgresRole { grant } => out.strings(emitter, grant)?,
            }
        }
        Ok(out.0)
    }

    /// One entry for each rule with a credential or an annotation, in rule order.
    fn rule_details(set: &ir::PolicySet, emitter: &mut Emitter) -> Result<Vec<u8>, EmitError> {
        let detailed: Vec<(u32, &ir::Rule)> = (0u32..)
            .zip(&set.rules)
            .filter(|(_, rule)| {
                rule.credential.is_some() || rule.annotations != Annotations::default()
            })
            .collect();
        let mut out = Out::default();
        out.count(detailed.len(), "rule details")?;
        for (rule_idx, rule) in detailed {
            out.u32(rule_idx);
            out.u32(rule.credential.map_or(NONE, |id| id.0));
            out.optional_string(emitter, rule.annotations.description.as_deref())?;
            out.u8(severity_code(rule.annotations.severity));
        }
        Ok(out.0)
    }

    fn regexes(emitter: &mut Emitter) -> Result<Vec<u8>, EmitError> {
        let patterns = emitter.regexes().to_vec();
        let mut out = Out::default();
        out.strings(emitter, &patterns)?;
        Ok(out.0)
    }

    fn custom_claims(claims: &CustomClaims, emitter: &mut Emitter) -> Result<Vec<u8>, EmitError> {
        let mut out = Out::default();
        out.count(claims.len(), "custom claims")?;
        for (id, claim) in claims.iter() {
            out.u32(emitter.intern(&claim.name)?);
            out.u16(id.0);
            out.u8(claim_type_code(claim.ty));
            out.u8(u8::from(claim.required));
        }
        Ok(out.0)
    }

    fn networks(emitter: &Emitter) -> Result<Vec<u8>, EmitError> {
        let mut out = Out::default();
        out.count(emitter.network_sets().len(), "network sets")?;
        for set in emitter.network_sets() {
            out.count(set.len(), "networks in one set")?;
            for network in set {
                match network.addr {
                    std::net::IpAddr::V4(v4) => {
                        out.u8(4);
                        out.0.extend(v4.octets());
                    }
                    std::net::IpAddr::V6(v6) => {
                        out.u8(6);
                        out.0.extend(v6.octets());
                    }
                }
                out.u8(network.prefix);
            }
        }
        Ok(out.0)
    }

    fn targets(set: &ir::PolicySet, emitter: &mut Emitter) -> Result<Vec<u8>, EmitError> {
        let mut out = Out::default();
        out.count(set.targets.len(), "targets")?;
        for target in &set.targets {
            out.u32(emitter.intern(&target.name)?);
            out.u8(protocol_code(target.protocol));
            out.u32(emitter.intern(&target.host)?);
            out.u16(target.port);
            for optional in [&target.database, &target.path_prefix] {
                match optional {
                    Some(text) => out.u32(emitter.intern(text)?),
                    None => out.u32(NONE),
                }
            }
        }
        Ok(out.0)
    }

    fn rules(
        set: &ir::PolicySet,
        emitter: &mut Emitter,
        code: &mut Code,
    ) -> Result<Vec<u8>, EmitError> {
        let mut out = Out::default();
        out.count(set.rules.len(), "rules")?;
        for rule in &set.rules {
            out.u32(emitter.intern(&rule.name)?);
            out.u8(match rule.effect {
                Effect::Permit => 0,
                Effect::Forbid => 1,
            });
            let (tag, value) = match rule.workload {
                WorkloadRef::Named(WorkloadId(idx)) => (0, idx),
                WorkloadRef::AnyOfKind(kind) => (1, u32::from(kind_code(kind))),
                WorkloadRef::Any => (2, 0),
            };
            out.u8(tag);
            out.u32(value);
            let (tag, value) = match rule.target {
                TargetRef::Named(TargetId(idx)) => (0, idx),
                TargetRef::Any => (1, 0),
            };
            out.u8(tag);
            out.u32(value);
            match &rule.when {
                Some(expr) => {
                    let block = emitter.block(expr)?;
                    out.u32(code.add(&block)?);
                }
                None => out.u32(NONE),
            }
        }
        Ok(out.0)
    }

    fn index(set: &ir::PolicySet) -> Result<Vec<u8>, EmitError> {
        let entries: Vec<RuleEntry> = set
            .rules
            .iter()
            .map(|rule| RuleEntry {
                name: String::new(),
                effect: rule.effect,
                workload: rule.workload,
                target: rule.target,
                when: None,
                credential: None,
                annotations: Annotations::default(),
            })
            .collect();
        let (index, index_any) = build_index(&entries, set.targets.len());
        let mut out = Out::default();
        out.count(index.len() + 1, "index lists")?;
        for list in index.iter().chain([&index_any]) {
            for ids in [&list.forbids, &list.permits] {
                out.count(ids.len(), "rules in one index list")?;
                ids.iter().for_each(|id| out.u32(*id));
            }
        }
        Ok(out.0)
    }
}

/// Loading and checking.
mod read {
    use super::reader::{Reader, check_index};
    use super::*;

    pub(super) fn bundle(bytes: &[u8], key: Option<&VerifyingKey>) -> Result<Bundle, BundleError> {
        let Header {
            unsigned,
            body,
            hash,
            signature,
        } = header(bytes)?;
        if let Some(key) = key {
            let signature = signature.as_ref().ok_or(SignatureError::Unsigned)?;
            signing::verify(unsigned, signature, key)?;
            if signature.signed_at().is_none() {
                return Err(SignatureError::Untimed.into());
            }
        }
        let (sections, optional) = section_table(body)?;
        let [
            credentials,
            conditions,
            rule_details,
            regexes,
            networks,
            custom_claims,
            time_zones,
            time_windows,
        ] = optional;
        let [
            strings,
            constants,
            globs,
            workloads,
            targets,
            rules,
            index,
            code,
        ] = sections;
        let strings = read_strings(strings)?;
        let sets = read_constants(constants, &strings)?;
        let globs = read_globs(globs, &strings)?;
        let regexes = read_regexes(regexes, &strings)?;
        let raw_conditions = read_conditions(conditions, &strings)?;
        let network_sets = read_networks(networks)?;
        let custom_claims = read_custom_claims(custom_claims, &strings)?;
        let zones = zones::read_zones(time_zones, &strings)?;
        let windows = zones::read_windows(time_windows, zones.len())?;
        let tables = Tables {
            n_strings: strings.len(),
            sets: &sets,
            n_globs: globs.len(),
            n_regexes: regexes.len(),
            n_conditions: raw_conditions.len(),
            n_network_sets: network_sets.len(),
            n_windows: windows.len(),
            custom_claims: &custom_claims,
        };
        let (blocks, offsets) = read_code(code, &tables)?;
        let workloads = read_workloads(workloads, &strings, &offsets)?;
        let targets = read_targets(targets, &strings)?;
        let conditions = resolve_conditions(raw_conditions, &offsets, &blocks)?;
        let credentials = read_credentials(credentials, &strings)?;
        let mut rules = read_rules(rules, &strings, &offsets, workloads.len(), targets.len())?;
        read_rule_details(rule_details, &strings, credentials.len(), &mut rules)?;
        let (index, index_any) = read_index(index, &rules, targets.len())?;
        Ok(Bundle {
            strings,
            sets,
            globs,
            workloads,
            targets,
            credentials,
            conditions,
            regexes,
            network_sets,
            custom_claims,
            zones,
            windows,
            rules,
            index,
            index_any,
            blocks,
            bytes: unsigned.to_vec(),
            hash,
            signature,
        })
    }

    /// A bundle file taken apart by [`header`].
    struct Header<'b> {
        /// Header through content hash.
        unsigned: &'b [u8],
        /// Everything the hash covers.
        body: &'b [u8],
        hash: [u8; 32],
        /// The trailer after the hash, if any; not yet verified.
        signature: Option<BundleSignature>,
    }

    /// Checks magic, version, length, the signature trailer's form and the content hash.
    fn header(bytes: &[u8]) -> Result<Header<'_>, BundleError> {
        let truncated = |expected: usize| BundleError::Truncated {
            expected: expected as u64,
            actual: bytes.len(),
        };
        let magic_len = MAGIC.len().min(bytes.len());
        if bytes.get(..magic_len) != MAGIC.get(..magic_len) {
            return Err(BundleError::BadMagic);
        }
        let Some(&[v0, v1, _, _, l0, l1, l2, l3]) = bytes.get(MAGIC.len()..HEADER_LEN) else {
            return Err(truncated(HEADER_LEN + HASH_LEN));
        };
        let version = u16::from_le_bytes([v0, v1]);
        if version != FORMAT_VERSION {
            return Err(BundleError::UnsupportedVersion { version });
        }
        let total = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
        let Some((unsigned, extra)) = bytes.split_at_checked(total) else {
            return Err(truncated(total));
        };
        let signature = signing::read_trailer(extra)?;
        let Some(body_len) = total.checked_sub(HASH_LEN).filter(|len| *len >= HEADER_LEN) else {
            return Err(truncated(HEADER_LEN + HASH_LEN));
        };
        let (body, recorded) = unsigned.split_at(body_len);
        let mut actual = [0u8; 32];
        actual.copy_from_slice(&Sha256::digest(body));
        if actual.as_slice() != recorded {
            return Err(BundleError::HashMismatch {
                recorded: hex::encode(recorded),
                actual: hex::encode(actual),
            });
        }
        Ok(Header {
            unsigned,
            body,
            hash: actual,
            signature,
        })
    }

    /// The eight required sections and the optional ones (an absent one is empty).
    type Sections<'b> = ([&'b [u8]; 8], [&'b [u8]; 8]);

    /// The section at each position of the table: the eight required ones, then the optional
    /// ones that are present, in order.
    fn table_kinds(count: u16, body: &[u8]) -> Result<Vec<SectionKind>, BundleError> {
        let n_optional = usize::from(count).checked_sub(SectionKind::ALL.len());
        let n_optional = n_optional.filter(|n| *n <= SectionKind::OPTIONAL.len());
        let Some(n_optional) = n_optional else {
            return Err(BundleError::SectionCount { count });
        };
        let mut kinds = SectionKind::ALL.to_vec();
        let mut remaining = SectionKind::OPTIONAL.as_slice();
        for position in SectionKind::ALL.len()..SectionKind::ALL.len() + n_optional {
            let start = HEADER_LEN + TABLE_ENTRY_LEN * position;
            let found = body
                .get(start..start + 2)
                .map_or(0, |raw| u16::from_le_bytes([raw[0], raw[1]]));
            let Some(at) = remaining.iter().position(|kind| *kind as u16 == found) else {
                // 0 when no optional section may follow.
                let expected = remaining.first().map_or(0, |kind| *kind as u16);
                return Err(BundleError::BadSectionTable {
                    position,
                    kind: found,
                    expected,
                });
            };
            kinds.extend(remaining.get(at).copied());
            remaining = remaining.get(at + 1..).unwrap_or_default();
        }
        Ok(kinds)
    }

    /// Splits the hashed body into its sections, which must follow the table in order and
    /// without gaps up to the hash.
    fn section_table(body: &[u8]) -> Result<Sections<'_>, BundleError> {
        let count = body
            .get(10..12)
            .map(|raw| u16::from_le_bytes([raw[0], raw[1]]));
        let count = count.unwrap_or_default();
        let kinds = table_kinds(count, body)?;
        let table_end = HEADER_LEN + TABLE_ENTRY_LEN * kinds.len();
        let mut sections: [&[u8]; 8] = [&[]; 8];
        let mut optional: [&[u8]; 8] = [&[0, 0, 0, 0]; 8];
        let mut expected_offset = table_end;
        for (position, kind) in kinds.into_iter().enumerate() {
            let start = HEADER_LEN + TABLE_ENTRY_LEN * position;
            let entry = body
                .get(start..start + TABLE_ENTRY_LEN)
                .ok_or(BundleError::Truncated {
                    expected: table_end as u64,
                    actual: body.len(),
                })?;
            let mut entry = Reader::named("section table", entry);
            let found = entry.u16()?;
            if found != kind as u16 {
                return Err(BundleError::BadSectionTable {
                    position,
                    kind: found,
                    expected: kind as u16,
                });
            }
            let (offset, length) = (entry.u32()?, entry.u32()?);
            let out_of_range = BundleError::SectionOutOfRange {
                section: kind.name(),
                offset,
                length,
            };
            if offset as usize != expected_offset {
                return Err(out_of_range);
            }
            let end = expected_offset.saturating_add(length as usize);
            let slot = match SectionKind::OPTIONAL
                .iter()
                .position(|known| *known == kind)
            {
                Some(at) => optional.get_mut(at),
                None => sections.get_mut(position),
            };
            let Some(slot) = slot else {
                return Err(out_of_range);
            };
            *slot = body.get(expected_offset..end).ok_or(out_of_range)?;
            expected_offset = end;
        }
        if expected_offset != body.len() {
            return Err(BundleError::SectionOutOfRange {
                section: SectionKind::Code.name(),
                offset: expected_offset as u32,
                length: 0,
            });
        }
        Ok((sections, optional))
    }

    fn read_networks(bytes: &[u8]) -> Result<Vec<Vec<Network>>, BundleError> {
        let mut reader = Reader::new(SectionKind::Networks, bytes);
        let count = reader.count(4)?;
        let mut sets = Vec::new();
        for set_idx in 0..count as usize {
            let n = reader.count(6)?;
            let mut set = Vec::new();
            for network_idx in 0..n as usize {
                let addr = match reader.u8()? {
                    4 => std::net::IpAddr::from(reader.array::<4>()?),
                    6 => std::net::IpAddr::from(reader.array::<16>()?),
                    other => return Err(reader.invalid("address family", u32::from(other))),
                };
                let prefix = reader.u8()?;
                let network = Network { addr, prefix };
                // Parsing the printed form checks the prefix length and the host bits.
                if Network::parse(&format!("{addr}/{prefix}")) != Ok(network) {
                    return Err(BundleError::InvalidNetwork {
                        set: set_idx,
                        network: network_idx,
                    });
                }
                set.push(network);
            }
            sets.push(set);
        }
        reader.finish()?;
        Ok(sets)
    }

    /// The custom claims: each id must follow the built-in `oidc` claims in order, and each
    /// name be one a configuration could declare.
    fn read_custom_claims(bytes: &[u8], strings: &[String]) -> Result<CustomClaims, BundleError> {
        let mut reader = Reader::new(SectionKind::CustomClaims, bytes);
        let count = reader.count(8)?;
        let first_id = CUSTOM_CLAIMS_KIND.claims().len();
        let mut declared = Vec::new();
        for position in 0..count as usize {
            let name = string_at(strings, reader.index("name", strings.len())?);
            let id = reader.u16()?;
            if usize::from(id) != first_id + position {
                return Err(reader.invalid("claim id", u32::from(id)));
            }
            let code = reader.u8()?;
            let Some(ty) = claim_type_from_code(code) else {
                return Err(reader.invalid("claim type", u32::from(code)));
            };
            let required = match reader.u8()? {
                0 => false,
                1 => true,
                other => return Err(reader.invalid("required flag", u32::from(other))),
            };
            declared.push(DeclaredClaim { name, ty, required });
        }
        reader.finish()?;
        CustomClaims::from_declared(declared).map_err(BundleError::CustomClaim)
    }

    fn read_regexes(bytes: &[u8], strings: &[String]) -> Result<Vec<CompiledRegex>, BundleError> {
        let mut reader = Reader::new(SectionKind::Regexes, bytes);
        let count = reader.count(4)?;
        let mut regexes = Vec::new();
        for index in 0..count as usize {
            let pattern = string_at(strings, reader.index("pattern", strings.len())?);
            let regex = compile_regex(&pattern).map_err(|error| BundleError::InvalidRegex {
                index,
                error: error.to_string(),
            })?;
            regexes.push(CompiledRegex { pattern, regex });
        }
        reader.finish()?;
        Ok(regexes)
    }

    /// Condition names and code offsets; the offsets are resolved once the code is read.
    fn read_conditions(
        bytes: &[u8],
        strings: &[String],
    ) -> Result<Vec<(String, u32)>, BundleError> {
        let mut reader = Reader::new(SectionKind::Conditions, bytes);
        let count = reader.count(8)?;
        let mut conditions = Vec::new();
        for _ in 0..count {
            let name = string_at(strings, reader.index("name", strings.len())?);
            conditions.push((name, reader.u32()?));
        }
        reader.finish()?;
        Ok(conditions)
    }

    /// Resolves each condition's block and checks that conditions read each other without a
    /// cycle and at most [`MAX_CONDITION_DEPTH`] deep, which bounds the VM's recursion.
    fn resolve_conditions(
        raw: Vec<(String, u32)>,
        offsets: &[u32],
        blocks: &[Vec<Instr>],
    ) -> Result<Vec<ConditionEntry>, BundleError> {
        let reader = Reader::new(SectionKind::Conditions, &[]);
        let mut conditions = Vec::new();
        for (name, offset) in raw {
            let block = block_at(&reader, offsets, offset)?;
            conditions.push(ConditionEntry { name, block });
        }
        let edges: Vec<Vec<usize>> = conditions
            .iter()
            .map(|condition| {
                let code = blocks.get(condition.block.0 as usize);
                let instrs = code.map(Vec::as_slice).unwrap_or_default();
                instrs
                    .iter()
                    .filter_map(|instr| match instr {
                        Instr::Condition(idx) => Some(*idx as usize),
                        _ => None,
                    })
                    .collect()
            })
            .collect();
        if longest_chain(&edges).is_none_or(|depth| depth > MAX_CONDITION_DEPTH) {
            return Err(BundleError::ConditionGraph);
        }
        Ok(conditions)
    }

    /// The number of nodes on the longest path of a graph, or `None` when it has a cycle.
    /// Kahn's algorithm on the reversed edges: a node is done when everything it reads is.
    fn longest_chain(edges: &[Vec<usize>]) -> Option<usize> {
        let mut readers: Vec<Vec<usize>> = vec![Vec::new(); edges.len()];
        let mut pending: Vec<usize> = edges.iter().map(Vec::len).collect();
        for (node, out) in edges.iter().enumerate() {
            for to in out {
                readers.get_mut(*to)?.push(node);
            }
        }
        let mut depth = vec![1usize; edges.len()];
        let mut ready: Vec<usize> = (0..edges.len())
            .filter(|node| pending.get(*node) == Some(&0))
            .collect();
        let mut n_done = 0;
        while let Some(node) = ready.pop() {
            n_done += 1;
            let node_depth = *depth.get(node)?;
            for reader in readers.get(node)? {
                let slot = depth.get_mut(*reader)?;
                *slot = (*slot).max(node_depth + 1);
                let left = pending.get_mut(*reader)?;
                *left -= 1;
                if *left == 0 {
                    ready.push(*reader);
                }
            }
        }
        (n_done == edges.len()).then(|| depth.iter().copied().max().unwrap_or(0))
    }

    fn read_credentials(
        bytes: &[u8],
        strings: &[String],
    ) -> Result<Vec<ir::Credential>, BundleError> {
        let mut reader = Reader::new(SectionKind::Credentials, bytes);
        let count = reader.count(17)?;
        let mut credentials = Vec::new();
        let string = |reader: &mut Reader<'_>| {
            reader
                .index("string", strings.len())
                .map(|idx| string_at(strings, idx))
        };
        for _ in 0..count {
            let name = string(&mut reader)?;
            let code = reader.u8()?;
            let ttl_s = match reader.u64()? {
                0 => None,
                seconds => Some(seconds),
            };
            let kind = match code {
                0 => CredentialKind::Jwt {
                    audience: string(&mut reader)?,
                    copy_claims: Vec::new(),
                },
                4 => {
                    let audience = string(&mut reader)?;
                    let copy_claims = read_string_list(&mut reader, strings)?;
                    if copy_claims.is_empty() {
                        // Written as kind 0; refused so that one policy set has one encoding.
                        return Err(reader.invalid("copied claim count", 0));
                    }
                    CredentialKind::Jwt {
                        audience,
                        copy_claims,
                    }
                }
                1 => CredentialKind::Static(match reader.u8()? {
                    0 => StaticSource::Env(string(&mut reader)?),
                    1 => StaticSource::File(string(&mut reader)?),
                    other => return Err(reader.invalid("static source", u32::from(other))),
                }),
                2 => CredentialKind::OauthClientCredentials {
                    token_url: string(&mut reader)?,
                    client_id: string(&mut reader)?,
                    scopes: read_string_list(&mut reader, strings)?,
                },
                3 => CredentialKind::PostgresRole {
                    grant: read_string_list(&mut reader, strings)?,
                },
                other => return Err(reader.invalid("credential kind", u32::from(other))),
            };
            if ttl_s.is_none() && !matches!(kind, CredentialKind::Static(_)) {
                return Err(reader.invalid("ttl", 0));
            }
            credentials.push(ir::Credential { name, kind, ttl_s });
        }
        reader.finish()?;
        Ok(credentials)
    }

    fn read_string_list(
        reader: &mut Reader<'_>,
        strings: &[String],
    ) -> Result<Vec<String>, BundleError> {
        let count = reader.count(4)?;
        (0..count)
            .map(|_| {
                reader
                    .index("string", strings.len())
                    .map(|idx| string_at(strings, idx))
            })
            .collect()
    }

    /// Fills in the credentials and annotations of the rules that have them.
    fn read_rule_details(
        bytes: &[u8],
        strings: &[String],
        n_credentials: usize,
        rules: &mut [RuleEntry],
    ) -> Result<(), BundleError> {
        let mut reader = Reader::new(SectionKind::RuleDetails, bytes);
        let count = reader.count(13)?;
        let mut previous: Option<u32> = None;
        for _ in 0..count {
            let rule_idx = reader.index("rule", rules.len())?;
            if previous.is_some_and(|previous| previous >= rule_idx) {
                return Err(reader.invalid("rule order", rule_idx));
            }
            previous = Some(rule_idx);
            let credential = match reader.u32()? {
                NONE => None,
                idx => {
                    check_index(reader.section, "credential", idx, n_credentials)?;
                    Some(CredentialId(idx))
                }
            };
            let description = match reader.u32()? {
                NONE => None,
                idx => {
                    check_index(reader.section, "string", idx, strings.len())?;
                    Some(string_at(strings, idx))
                }
            };
            let code = reader.u8()?;
            let severity = severity_from_code(code)
                .ok_or_else(|| reader.invalid("severity", u32::from(code)))?;
            let Some(rule) = rules.get_mut(rule_idx as usize) else {
                return Err(reader.invalid("rule", rule_idx));
            };
            if credential.is_some() && rule.effect == Effect::Forbid {
                return Err(reader.invalid("credential of a forbid", rule_idx));
            }
            rule.credential = credential;
            rule.annotations = Annotations {
                description,
                severity,
            };
        }
        reader.finish()
    }

    fn read_strings(bytes: &[u8]) -> Result<Vec<String>, BundleError> {
        let mut reader = Reader::new(SectionKind::Strings, bytes);
        let count = reader.count(4)?;
        let mut strings = Vec::new();
        for index in 0..count as usize {
            let len = reader.u32()? as usize;
            let raw = reader.take(len)?;
            let text = std::str::from_utf8(raw).map_err(|_| BundleError::InvalidUtf8 { index })?;
            strings.push(text.to_owned());
        }
        reader.finish()?;
        Ok(strings)
    }

    fn read_constants(bytes: &[u8], strings: &[String]) -> Result<Vec<ConstSet>, BundleError> {
        let mut reader = Reader::new(SectionKind::Constants, bytes);
        let count = reader.count(5)?;
        let mut sets = Vec::new();
        for _ in 0..count {
            let tag = reader.u8()?;
            let set = match tag {
                0 => {
                    let n = reader.count(4)?;
                    let items = (0..n).map(|_| {
                        let idx = reader.index("string", strings.len())?;
                        Ok(string_at(strings, idx))
                    });
                    ConstSet::Str(items.collect::<Result<_, BundleError>>()?)
                }
                1 => {
                    let n = reader.count(8)?;
                    ConstSet::Int((0..n).map(|_| reader.i64()).collect::<Result<_, _>>()?)
                }
                2 => {
                    let n = reader.count(1)?;
                    let items = (0..n).map(|_| match reader.u8()? {
                        0 => Ok(false),
                        1 => Ok(true),
                        other => Err(reader.invalid("bool", u32::from(other))),
                    });
                    ConstSet::Bool(items.collect::<Result<_, _>>()?)
                }
                other => return Err(reader.invalid("set type", u32::from(other))),
            };
            sets.push(set);
        }
        reader.finish()?;
        Ok(sets)
    }

    fn string_at(strings: &[String], idx: u32) -> String {
        strings.get(idx as usize).cloned().unwrap_or_default()
    }

    fn read_globs(bytes: &[u8], strings: &[String]) -> Result<Vec<Glob>, BundleError> {
        let mut reader = Reader::new(SectionKind::Globs, bytes);
        let count = reader.count(4)?;
        let mut globs = Vec::new();
        for _ in 0..count {
            let n_segments = reader.count(4)?;
            let mut segments = Vec::new();
            for _ in 0..n_segments {
                let n_items = reader.count(1)?;
                let mut items = Vec::new();
                for _ in 0..n_items {
                    items.push(match reader.u8()? {
                        0 => {
                            let idx = reader.index("string", strings.len())?;
                            GlobItem::Literal(string_at(strings, idx))
                        }
                        1 => GlobItem::AnyChar,
                        other => return Err(reader.invalid("glob item", u32::from(other))),
                    });
                }
                segments.push(Segment { items });
            }
            globs.push(Glob::from_segments(segments));
        }
        reader.finish()?;
        Ok(globs)
    }

    /// Decodes and verifies every block; returns the blocks and the sorted offsets that refer
    /// to them, position for position.
    fn read_code(
        bytes: &[u8],
        tables: &Tables<'_>,
    ) -> Result<(Vec<Vec<Instr>>, Vec<u32>), BundleError> {
        let mut reader = Reader::new(SectionKind::Code, bytes);
        let count = reader.count(4)?;
        let mut blocks = Vec::new();
        let mut offsets = Vec::new();
        for _ in 0..count {
            let offset = reader.pos as u32;
            let len = reader.u32()? as usize;
            let block = bytecode::decode_block(reader.take(len)?).map_err(|(byte, error)| {
                BundleError::InvalidInstruction {
                    block: offset,
                    byte,
                    error,
                }
            })?;
            bytecode::verify_block(&block, tables).map_err(|(pc, error)| {
                BundleError::InvalidCode {
                    block: offset,
                    pc,
                    error,
                }
            })?;
            blocks.push(block);
            offsets.push(offset);
        }
        reader.finish()?;
        Ok((blocks, offsets))
    }

    fn block_at(
        reader: &Reader<'_>,
        offsets: &[u32],
        offset: u32,
    ) -> Result<crate::bundle::BlockId, BundleError> {
        match offsets.binary_search(&offset) {
            Ok(position) => Ok(BlockId(position as u32)),
            Err(_) => Err(BundleError::BadCodeOffset {
                section: reader.section,
                offset,
            }),
        }
    }

    fn read_workloads(
        bytes: &[u8],
        strings: &[String],
        offsets: &[u32],
    ) -> Result<Vec<WorkloadEntry>, BundleError> {
        let mut reader = Reader::new(SectionKind::Workloads, bytes);
        let count = reader.count(8)?;
        let mut workloads = Vec::new();
        for _ in 0..count {
            let name = string_at(strings, reader.index("name", strings.len())?);
            let n_alternatives = reader.count(5)?;
            let mut alternatives = Vec::new();
            for _ in 0..n_alternatives {
                let code = reader.u8()?;
                let kind = kind_from_code(code)
                    .ok_or_else(|| reader.invalid("provider kind", u32::from(code)))?;
                let offset = reader.u32()?;
                let block = block_at(&reader, offsets, offset)?;
                alternatives.push(AlternativeEntry { kind, block });
            }
            workloads.push(WorkloadEntry { name, alternatives });
        }
        reader.finish()?;
        Ok(workloads)
    }

    fn read_targets(bytes: &[u8], strings: &[String]) -> Result<Vec<ir::Target>, BundleError> {
        let mut reader = Reader::new(SectionKind::Targets, bytes);
        let count = reader.count(19)?;
        let mut targets: Vec<ir::Target> = Vec::new();
        let mut names = HashSet::new();
        for _ in 0..count {
            let name = string_at(strings, reader.index("name", strings.len())?);
            let code = reader.u8()?;
            let protocol = protocol_from_code(code)
                .ok_or_else(|| reader.invalid("protocol", u32::from(code)))?;
            let host = string_at(strings, reader.index("host", strings.len())?);
            let port = reader.u16()?;
            let mut optional = || match reader.u32()? {
                NONE => Ok::<_, BundleError>(None),
                idx => {
                    check_index(reader.section, "string", idx, strings.len())?;
                    Ok(Some(string_at(strings, idx)))
                }
            };
            let database = optional()?;
            let path_prefix = optional()?;
            if !names.insert(name.clone()) {
                return Err(BundleError::DuplicateTarget { name });
            }
            targets.push(ir::Target {
                name,
                protocol,
                host,
                port,
                database,
                path_prefix,
            });
        }
        reader.finish()?;
        Ok(targets)
    }

    fn read_rules(
        bytes: &[u8],
        strings: &[String],
        offsets: &[u32],
        n_workloads: usize,
        n_targets: usize,
    ) -> Result<Vec<RuleEntry>, BundleError> {
        let mut reader = Reader::new(SectionKind::Rules, bytes);
        let count = reader.count(19)?;
        let mut rules = Vec::new();
        for _ in 0..count {
            let name = string_at(strings, reader.index("name", strings.len())?);
            let effect = match reader.u8()? {
                0 => Effect::Permit,
                1 => Effect::Forbid,
                other => return Err(reader.invalid("effect", u32::from(other))),
            };
            let workload = match (reader.u8()?, reader.u32()?) {
                (0, idx) => {
                    check_index(reader.section, "workload", idx, n_workloads)?;
                    WorkloadRef::Named(WorkloadId(idx))
                }
                (1, code) => {
                    let kind = u8::try_from(code).ok().and_then(kind_from_code);
                    WorkloadRef::AnyOfKind(kind.ok_or_else(|| reader.invalid("kind", code))?)
                }
                (2, 0) => WorkloadRef::Any,
                (tag, _) => return Err(reader.invalid("workload reference", u32::from(tag))),
            };
            let target = match (reader.u8()?, reader.u32()?) {
                (0, idx) => {
                    check_index(reader.section, "target", idx, n_targets)?;
                    TargetRef::Named(TargetId(idx))
                }
                (1, 0) => TargetRef::Any,
                (tag, _) => return Err(reader.invalid("target reference", u32::from(tag))),
            };
            let when = match reader.u32()? {
                NONE => None,
                offset => Some(block_at(&reader, offsets, offset)?),
            };
            rules.push(RuleEntry {
                name,
                effect,
                workload,
                target,
                when,
                credential: None,
                annotations: Annotations::default(),
            });
        }
        reader.finish()?;
        Ok(rules)
    }

    /// Reads the index and checks that it is exactly the one the rules imply.
    fn read_index(
        bytes: &[u8],
        rules: &[RuleEntry],
        n_targets: usize,
    ) -> Result<(Vec<RuleList>, RuleList), BundleError> {
        let mut reader = Reader::new(SectionKind::Index, bytes);
        let count = reader.count(8)?;
        let mut lists = Vec::new();
        for _ in 0..count {
            let n_forbids = reader.count(4)?;
            let forbids = (0..n_forbids)
                .map(|_| reader.u32())
                .collect::<Result<_, _>>()?;
            let n_permits = reader.count(4)?;
            let permits = (0..n_permits)
                .map(|_| reader.u32())
                .collect::<Result<_, _>>()?;
            lists.push(RuleList { forbids, permits });
        }
        reader.finish()?;
        let (expected, expected_any) = build_index(rules, n_targets);
        for (list, (found, wanted)) in lists
            .iter()
            .zip(expected.iter().chain([&expected_any]))
            .enumerate()
        {
            if found != wanted {
                return Err(BundleError::IndexMismatch { list });
            }
        }
        let index_any = match lists.pop() {
            Some(list) if lists.len() == n_targets => list,
            _ => return Err(BundleError::IndexMismatch { list: n_targets }),
        };
        Ok((lists, index_any))
    }
}
