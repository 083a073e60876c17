//! The Portcullis engine: bundle loading and the decision VM, attestation of callers, and the
//! decision API.
//!
//! The VM ([`vm`]) is pure: it takes a loaded bundle and a request and returns a decision.
//! Attestation ([`attest`]) verifies evidence without I/O; fetching a trust provider's keys
//! ([`jwks`]) is blocking I/O, which the API runs on a blocking thread when a token needs it.
//! The API ([`api`]) is where requests, the clock and the audit log meet.

pub mod api;
pub mod attest;
pub mod credentials;
pub mod http;
pub mod jwks;
pub mod local;
pub mod metrics;
pub mod postgres_roles;
pub mod postgres_tls;
pub mod vm;
