//! The decision VM, which lives with the bundle format in the language crate so that `policyc`
//! can run it (`policyc explain`, the instruction bound of `policyc build`).

pub use portcullis_lang::vm::*;
