//! Gate, the Portcullis policy language, and its compiler.
//!
//! Pipeline: source files → tokens ([`lexer`], logos) → AST ([`parser`], lalrpop) → resolved,
//! typed IR ([`check`] produces [`ir::PolicySet`]) → bytecode bundle ([`bytecode`], [`bundle`]).
//! Nothing here does I/O except [`source`], which reads a policy directory for the binaries.

pub mod ast;
pub mod bundle;
pub mod bytecode;
pub mod check;
pub mod claims_file;
pub mod diagnostic;
pub mod fmt;
pub mod glob;
pub mod ir;
pub mod lexer;
pub mod lint;
pub mod net;
pub mod parser;
pub mod policy_test;
pub mod reference;
pub mod report;
pub mod request_file;
pub mod schema;
pub mod source;
pub mod test_report;
pub mod time;
pub mod vm;

pub use check::{compile, compile_with_claims};
pub use diagnostic::{Diagnostic, render};
pub use lint::{CheckOutcome, LintOptions, analyze, analyze_with_claims};
pub use source::{SourceFile, read_policy_path};
