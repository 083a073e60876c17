//! The Portcullis engine: bundle loading and the decision VM, attestation of callers, and the
//! decision API.
//!
//! The VM ([`vm`]) is pure: it takes a loaded bundle and a request and returns a decision.
//! Attestation ([`attest`]) verifies evidence without I/O once its trust providers are built.
//! The API ([`api`]) is where requests, the clock and the audit log meet.

pub mod api;
pub mod attest;
pub mod vm;
