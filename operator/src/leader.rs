//! Leader election with a coordination.k8s.io/v1 Lease, as client-go's leaderelection
//! does it: the holder renews `renewTime`; a standby takes the lease over once
//! `renewTime + leaseDurationSeconds` has passed. Every write carries the resourceVersion
//! it was based on, so two replicas can never both win the same round.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};

use crate::error::{is_already_exists, is_conflict};
use crate::{Error, Result};

/// A lease and who this replica is.
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    retry: Duration,
}

impl LeaderElector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
        retry: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
            retry,
        }
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) -> Result<()> {
        let mut logged = false;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
                    return Ok(());
                }
                Ok(false) => {
                    if !logged {
                        tracing::info!(lease = %self.name, identity = %self.identity, "standing by: another replica leads");
                        logged = true;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %ferrovirt_runtime::chain(&e), "leader election attempt failed")
                }
            }
            tokio::time::sleep(self.retry).await;
        }
    }

    /// Renews the lease every retry period; returns an error once it could not be renewed
    /// for a whole lease duration (or someone else holds it): the caller must stop acting.
    /// A renewal that hangs (an API server that accepts connections but does not answer)
    /// counts as failed when the lease is about to run out.
    pub async fn keep_renewing(&self) -> Error {
        let mut last_renew = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.retry).await;
            // Stop a little before a standby could take over.
            let deadline = last_renew + self.duration.saturating_sub(self.retry);
            match tokio::time::timeout_at(deadline, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => last_renew = tokio::time::Instant::now(),
                Ok(Ok(false)) => return Error::LostLease(self.name.clone(), last_renew.elapsed()),
                Ok(Err(e)) => {
                    tracing::warn!(error = %ferrovirt_runtime::chain(&e), "renewing the leader lease failed")
                }
                Err(_) => tracing::warn!("renewing the leader lease timed out"),
            }
            if last_renew.elapsed() + self.retry >= self.duration {
                return Error::LostLease(self.name.clone(), last_renew.elapsed());
            }
        }
    }

    /// Gives the lease up so a standby takes over at once (on a clean shutdown).
    pub async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await {
            let spec = lease.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_deref() == Some(&self.identity) {
                spec.holder_identity = None;
                spec.renew_time = None;
                spec.acquire_time = None;
                let _ = self
                    .api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await;
            }
        }
    }

    /// One round: Ok(true) when this replica holds the lease afterwards.
    async fn try_acquire_or_renew(&self) -> Result<bool> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let secs = i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_already_exists(&e) || is_conflict(&e) => Ok(false),
                Err(e) => Err(Error::LeaderElection(format!("creating lease: {e}"))),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let held_by_me = spec.holder_identity.as_deref() == Some(&self.identity);
        if !held_by_me {
            let holder_set = spec
                .holder_identity
                .as_deref()
                .is_some_and(|h| !h.is_empty());
            let expires = spec.renew_time.as_ref().map(|t| {
                let secs = i64::from(spec.lease_duration_seconds.unwrap_or(secs));
                t.0 + jiff_seconds(secs)
            });
            let expired = expires.is_none_or(|e| e < now.0);
            if holder_set && !expired {
                return Ok(false);
            }
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(secs);
        spec.renew_time = Some(now);
        // The replace carries the resourceVersion read above: a concurrent winner makes it
        // fail with a conflict.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(Error::LeaderElection(format!("updating lease: {e}"))),
        }
    }
}

fn jiff_seconds(secs: i64) -> k8s_openapi::jiff::SignedDuration {
    k8s_openapi::jiff::SignedDuration::from_secs(secs)
}
