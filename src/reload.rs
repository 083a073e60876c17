//! Hot reload of the running policy. Three things ask for one: a change to the policy files
//! (found by polling their sizes and modification times), SIGHUP, and `POST
//! /v1/admin/reload`. Each reload loads the policy set exactly as the start did; a bundle
//! that differs from the running one is recorded as a `policy_change` event and only then
//! put in effect, while decisions in flight finish on the bundle they started with. A policy
//! set that does not load leaves the running bundle in place; the failure is logged with the
//! compiler's report and recorded too.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result};
use portcullis_audit::bundles::{archive_bundle, set_current_bundle};
use portcullis_audit::{EventKind, NewEvent};
use portcullis_engine::api::Engine;
use portcullis_engine::api::admin::{Reload, ReloadOutcome, ReloadTrigger};
use portcullis_engine::vm::Program;
use portcullis_lang::bundle::signing::signing_time_text;

use crate::policy::{Fingerprint, LoadError, PolicyLoader};

/// The longest `reason` a `policy_change` event carries; a compiler's first error fits.
const MAX_REASON_CHARS: usize = 1024;

/// Reloads the policy set into the engine, one reload at a time.
#[derive(Debug)]
pub struct Reloader {
    loader: PolicyLoader,
    /// Held for the whole of a reload.
    one_at_a_time: Mutex<()>,
    /// The policy files as the last load, failed or not, found them.
    loaded: Mutex<Fingerprint>,
}

impl Reloader {
    /// `loaded` is the fingerprint taken before the load that produced the running program,
    /// so that a change made during that load is still seen.
    pub fn new(loader: PolicyLoader, loaded: Fingerprint) -> Reloader {
        Reloader {
            loader,
            one_at_a_time: Mutex::new(()),
            loaded: Mutex::new(loaded),
        }
    }

    /// Records the bundle the server starts with as a `policy_change` event: a restart on
    /// another policy set is a change too.
    pub fn record_startup(&self, engine: &Engine) -> Result<()> {
        let program = engine.program.current();
        let hash = program.hash_hex();
        let data_dir = engine.audit.data_dir();
        archive_bundle(data_dir, hash, &program.bundle().to_bytes())
            .context("cannot keep the starting bundle in the audit store")?;
        // A signed bundle's time is on the record: starting on the running bundle signed
        // again moves the rollback cut-off, which the event shows. Recorded before the time is.
        let signed = program
            .bundle()
            .signature()
            .and_then(|signature| Some((signature.signed_at()?, signature.key_id())));
        let reason = match signed {
            Some((signed_at, key_id)) => format!(
                "bundle sha256:{hash} took effect at startup; signed at {} by key {key_id}",
                signing_time_text(signed_at)
            ),
            None => format!("bundle sha256:{hash} took effect at startup"),
        };
        let event = self.event("startup", None, "policy_loaded", reason, hash);
        engine
            .audit
            .record(event)
            .context("cannot record the policy_change event of the starting bundle")?;
        self.loader.admitted(data_dir, &program)?;
        set_current_bundle(data_dir, hash)
            .context("cannot record the starting bundle as the one in effect")?;
        Ok(())
    }

    fn loaded(&self) -> Fingerprint {
        self.loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn replace(
        &self,
        engine: &Engine,
        trigger: ReloadTrigger,
        running: &Program,
        program: Program,
    ) -> ReloadOutcome {
        let old_hash = running.hash_hex().to_owned();
        let new_hash = program.hash_hex().to_owned();
        // Kept before its event names it, so that SQL can always read the bundle an event
        // names (the `rules`, `targets`, … tables).
        let data_dir = engine.audit.data_dir();
        if let Err(error) = archive_bundle(data_dir, &new_hash, &program.bundle().to_bytes()) {
            let refused = format!("sha256:{new_hash}");
            tracing::error!(%error, refused_bundle = %refused, "policy_change_unrecorded");
            return ReloadOutcome::Unrecorded {
                running_hash: old_hash,
                error: format!(
                    "bundle sha256:{new_hash} was not put in effect: it could not be kept in \
                     the audit store: {error}"
                ),
            };
        }
        // So that no bundle signed before this one is admitted from now on.
        if let Err(error) = self.loader.admitted(data_dir, &program) {
            let refused = format!("sha256:{new_hash}");
            let error = crate::error_chain(&error);
            tracing::error!(%error, refused_bundle = %refused, "policy_change_unrecorded");
            return ReloadOutcome::Unrecorded {
                running_hash: old_hash,
                error: format!("bundle sha256:{new_hash} was not put in effect: {error}"),
            };
        }
        let reason = format!("bundle sha256:{new_hash} replaced sha256:{old_hash}");
        let event = self.event(
            trigger.as_str(),
            trigger.source_ip(),
            "policy_replaced",
            reason,
            &new_hash,
        );
        // Recorded before it takes effect: no decision runs on a bundle the log has not seen.
        let recorded = match engine.audit.record(event) {
            Ok(recorded) => recorded,
            Err(error) => {
                tracing::error!(
                    trigger = trigger.as_str(),
                    bundle = %format!("sha256:{old_hash}"),
                    refused_bundle = %format!("sha256:{new_hash}"),
                    %error,
                    "policy_change_unrecorded"
                );
                let error = format!(
                    "bundle sha256:{new_hash} was not put in effect: its policy_change event \
                     could not be recorded: {error}"
                );
                return ReloadOutcome::Unrecorded {
                    running_hash: old_hash,
                    error,
                };
            }
        };
        if let Some(credentials) = &engine.credentials {
            warn_not_issuable(credentials, program.bundle());
        }
        engine.program.replace(Arc::new(program));
        if let Err(error) = set_current_bundle(data_dir, &new_hash) {
            // The event already says which bundle is in effect; only the `bundles.current`
            // column of the policy-state tables lags until the next change.
            tracing::warn!(%error, "current_bundle_unrecorded");
        }
        tracing::info!(
            trigger = trigger.as_str(),
            old_bundle = %format!("sha256:{old_hash}"),
            new_bundle = %format!("sha256:{new_hash}"),
            event_id = %recorded.event_id,
            "policy_replaced"
        );
        ReloadOutcome::Replaced {
            old_hash,
            new_hash,
            event_id: recorded.event_id.to_string(),
        }
    }

    fn refuse(
        &self,
        engine: &Engine,
        trigger: ReloadTrigger,
        running: &Program,
        error: &LoadError,
    ) -> ReloadOutcome {
        let running_hash = running.hash_hex().to_owned();
        let summary = error.summary();
        let diagnostics = error.rendered_diagnostics(false);
        let running_bundle = format!("sha256:{running_hash}");
        match &diagnostics {
            Some(report) => tracing::error!(
                trigger = trigger.as_str(),
                bundle = %running_bundle,
                error = %summary,
                diagnostics = %format_args!("\n{report}"),
                "policy_reload_failed"
            ),
            None => tracing::error!(
                trigger = trigger.as_str(),
                bundle = %running_bundle,
                error = %summary,
                "policy_reload_failed"
            ),
        }
        let reason = format!(
            "the policy set did not load, so bundle sha256:{running_hash} stays in effect: \
             {summary}"
        );
        let event = self.event(
            trigger.as_str(),
            trigger.source_ip(),
            "policy_reload_failed",
            reason,
            &running_hash,
        );
        let event_id = match engine.audit.record(event) {
            Ok(recorded) => Some(recorded.event_id.to_string()),
            Err(error) => {
                tracing::error!(%error, "policy_change_unrecorded");
                None
            }
        };
        ReloadOutcome::Failed {
            running_hash,
            error: summary,
            diagnostics,
            event_id,
        }
    }

    /// Records a `policy_resigned` event when `program`, the running bundle, is signed later
    /// than the bundle last admitted, and gives its id; nothing when it is not. Refuses (and
    /// the signing time stays unrecorded) when the event cannot be written.
    fn record_resigning(
        &self,
        engine: &Engine,
        trigger: ReloadTrigger,
        program: &Program,
    ) -> Result<Option<String>, Box<ReloadOutcome>> {
        let hash = program.hash_hex().to_owned();
        let unrecorded = |error: String| {
            tracing::error!(%error, bundle = %format!("sha256:{hash}"), "policy_change_unrecorded");
            Box::new(ReloadOutcome::Unrecorded {
                running_hash: hash.clone(),
                error,
            })
        };
        let newest = match self.loader.supersedes(engine.audit.data_dir(), program) {
            Ok(Some(newest)) => newest,
            Ok(None) => return Ok(None),
            Err(error) => return Err(unrecorded(crate::error_chain(&error))),
        };
        let reason = format!(
            "bundle sha256:{hash} signed again at {} by key {}: bundles signed before it are \
             refused from now on",
            signing_time_text(newest.signed_at),
            newest.key_id
        );
        let event = self.event(
            trigger.as_str(),
            trigger.source_ip(),
            "policy_resigned",
            reason,
            &hash,
        );
        match engine.audit.record(event) {
            Ok(recorded) => {
                tracing::info!(
                    trigger = trigger.as_str(),
                    bundle = %format!("sha256:{hash}"),
                    signed_at = %signing_time_text(newest.signed_at),
                    event_id = %recorded.event_id,
                    "policy_resigned"
                );
                Ok(Some(recorded.event_id.to_string()))
            }
            Err(error) => Err(unrecorded(format!(
                "bundle sha256:{hash} signed again was not admitted: its policy_change event \
                 could not be recorded: {error}"
            ))),
        }
    }

    /// A `policy_change` event: the bundle in effect after it in `bundle_hash`, what asked
    /// for it in `action`, the policy directory or bundle file in `resource`.
    fn event(
        &self,
        action: &str,
        source_ip: Option<IpAddr>,
        reason_code: &str,
        reason: String,
        bundle_hash: &str,
    ) -> NewEvent {
        NewEvent {
            kind: EventKind::PolicyChange,
            reason: Some(bounded(reason)),
            reason_code: Some(reason_code.to_owned()),
            bundle_hash: Some(bundle_hash.to_owned()),
            action: Some(action.to_owned()),
            resource: Some(self.loader.path().display().to_string()),
            source_ip,
            ..NewEvent::default()
        }
    }
}

impl Reload for Reloader {
    fn reload(&self, engine: &Engine, trigger: ReloadTrigger) -> ReloadOutcome {
        let _reloading = self
            .one_at_a_time
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        tracing::info!(
            trigger = trigger.as_str(),
            policy = %self.loader.path().display(),
            "policy_reload_started"
        );
        // Taken before the load reads the files: a change made during the load is seen by
        // the next poll.
        let fingerprint = self.loader.fingerprint();
        *self.loaded.lock().unwrap_or_else(PoisonError::into_inner) = fingerprint;
        // Only reloads replace the program, and they run one at a time: this stays the
        // running program until this reload replaces it.
        let running = engine.program.current();
        match self.loader.load(engine.attestor.custom_claims()) {
            Ok(program) if program.hash_hex() == running.hash_hex() => {
                // The same policy signed again supersedes every bundle signed before it, the
                // one in effect included: record its time, or those stay admissible. That
                // changes which bundles the server admits, so it is a policy change on the
                // record, written before the time is.
                let resigned = match self.record_resigning(engine, trigger, &program) {
                    Ok(event_id) => event_id,
                    Err(outcome) => return *outcome,
                };
                if let Err(error) = self.loader.admitted(engine.audit.data_dir(), &program) {
                    let error = crate::error_chain(&error);
                    tracing::error!(%error, "bundle_signing_time_unrecorded");
                    return ReloadOutcome::Unrecorded {
                        running_hash: running.hash_hex().to_owned(),
                        error,
                    };
                }
                tracing::info!(
                    trigger = trigger.as_str(),
                    bundle = %format!("sha256:{}", running.hash_hex()),
                    "policy_unchanged"
                );
                let hash = running.hash_hex().to_owned();
                match resigned {
                    Some(event_id) => ReloadOutcome::Resigned { hash, event_id },
                    None => ReloadOutcome::Unchanged { hash },
                }
            }
            Ok(program) => self.replace(engine, trigger, &running, program),
            Err(error) => self.refuse(engine, trigger, &running, &error),
        }
    }
}

/// `text`, cut to [`MAX_REASON_CHARS`] with `…` at the cut.
fn bounded(text: String) -> String {
    match text.char_indices().nth(MAX_REASON_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// Polls the policy files every `interval`, and reloads once a change has settled.
pub async fn watch(engine: Arc<Engine>, reloader: Arc<Reloader>, interval: Duration) {
    let mut settling = Settling::default();
    loop {
        tokio::time::sleep(interval).await;
        let polling = Arc::clone(&reloader);
        let poll = move || (polling.loader.fingerprint(), polling.loaded());
        let Ok((now, loaded)) = tokio::task::spawn_blocking(poll).await else {
            return; // the runtime is shutting down
        };
        if settling.should_reload(now, &loaded) {
            reload(&engine, &reloader, ReloadTrigger::Watch).await;
        }
    }
}

/// What the watcher remembers between polls.
#[derive(Debug, Default)]
struct Settling {
    /// Files that differ from the last load's, as the previous poll found them.
    changed: Option<Fingerprint>,
}

impl Settling {
    /// Whether to reload, given the files as this poll finds them and as the last load found
    /// them. A change must look the same to two polls in a row: an editor that is still
    /// writing a file, or a deploy still copying several, gets one more interval instead of a
    /// reload of a half-written policy set.
    fn should_reload(&mut self, now: Fingerprint, loaded: &Fingerprint) -> bool {
        if now == *loaded {
            self.changed = None;
            return false;
        }
        if self.changed.as_ref() == Some(&now) {
            self.changed = None;
            return true;
        }
        self.changed = Some(now);
        false
    }
}

/// Runs one reload on the blocking pool; the reload logs its outcome.
async fn reload(engine: &Arc<Engine>, reloader: &Arc<Reloader>, trigger: ReloadTrigger) {
    let (engine, reloader) = (Arc::clone(engine), Arc::clone(reloader));
    let reloading = tokio::task::spawn_blocking(move || reloader.reload(&engine, trigger));
    if let Err(error) = reloading.await {
        tracing::error!(trigger = trigger.as_str(), %error, "policy_reload_aborted");
    }
}

/// SIGHUP, handled from the moment it is registered: by default it would end the process.
pub struct HangUps {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl HangUps {
    pub fn register() -> Result<HangUps> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signal = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
            Ok(HangUps { signal })
        }
        #[cfg(not(unix))]
        Ok(HangUps {})
    }

    /// Reloads at each SIGHUP; several that arrive during one reload ask for one more.
    pub async fn reload_on_each(mut self, engine: Arc<Engine>, reloader: Arc<Reloader>) {
        #[cfg(unix)]
        while self.signal.recv().await.is_some() {
            reload(&engine, &reloader, ReloadTrigger::Signal).await;
        }
        #[cfg(not(unix))]
        {
            let _ = (&mut self, engine, reloader);
        }
    }
}

/// Logs each credential of `bundle` that `credentials` cannot issue
/// ([`portcullis_engine::credentials::CredentialIssuer::check`]), so that a mismatch between
/// the policy and the configuration shows when the policy takes effect, not when the first
/// caller meets it.
pub fn warn_not_issuable(
    credentials: &portcullis_engine::credentials::CredentialIssuer,
    bundle: &portcullis_lang::bundle::Bundle,
) {
    for problem in credentials.check(bundle) {
        tracing::warn!(problem, "credential_not_issuable");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PolicySource;

    #[test]
    fn a_change_reloads_once_two_polls_agree_on_it() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("policy.gate");
        let loader = PolicyLoader::new(PolicySource::Sources(path.clone())).unwrap();
        let fingerprint_of = |text: &str| {
            std::fs::write(&path, text).unwrap();
            loader.fingerprint()
        };
        let loaded = fingerprint_of("a");
        let half_written = fingerprint_of("bb");
        let written = fingerprint_of("ccc");
        let mut settling = Settling::default();

        assert!(!settling.should_reload(loaded.clone(), &loaded));
        assert!(!settling.should_reload(half_written.clone(), &loaded));
        assert!(
            !settling.should_reload(written.clone(), &loaded),
            "still changing"
        );
        assert!(settling.should_reload(written.clone(), &loaded), "settled");
        // The reload took its own fingerprint: nothing more to do.
        assert!(!settling.should_reload(written.clone(), &written));
        // A change that is undone before it settles is no change.
        assert!(!settling.should_reload(half_written, &written));
        assert!(!settling.should_reload(written.clone(), &written));
    }

    #[test]
    fn long_reasons_are_cut_at_a_character() {
        assert_eq!(bounded("short".to_owned()), "short");
        let long = "é".repeat(MAX_REASON_CHARS + 10);
        let cut = bounded(long);
        assert_eq!(cut.chars().count(), MAX_REASON_CHARS + 1);
        assert!(cut.ends_with('…'));
    }
}
