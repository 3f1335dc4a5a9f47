//! Leader election with a `coordination.k8s.io/v1` Lease, so two operator replicas never
//! reconcile at once. The decision is a pure function of the Lease and the time (tested
//! with times passed in); the I/O around it is a get and a replace guarded by the Lease's
//! `resourceVersion`, so two candidates cannot both win the same round.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// What the Lease says, reduced to what the decision needs (times in Unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    /// Who holds it; `None` or empty when released.
    pub holder: Option<String>,
    /// When the holder last renewed it.
    pub renewed_ms: Option<i64>,
    /// How long a renewal is good for.
    pub duration_ms: i64,
}

/// What a candidate does with the Lease now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it, or the holder let it expire: take it.
    Acquire,
    /// We hold it: renew it.
    Renew,
    /// Someone else holds it until `expires_ms`: wait.
    Follow {
        /// The current leader.
        holder: String,
        /// When its hold runs out unless renewed.
        expires_ms: i64,
    },
}

/// Decides from the Lease (`None`: it does not exist), our identity and the time.
pub fn decide(lease: Option<&LeaseView>, me: &str, now_ms: i64) -> Decision {
    let Some(lease) = lease else {
        return Decision::Acquire;
    };
    let holder = match lease.holder.as_deref() {
        None | Some("") => return Decision::Acquire,
        Some(holder) => holder,
    };
    if holder == me {
        return Decision::Renew;
    }
    // A Lease with no renew time was never renewed: treat it as expired.
    let expires_ms = lease.renewed_ms.map_or(i64::MIN, |renewed| {
        renewed.saturating_add(lease.duration_ms)
    });
    if now_ms >= expires_ms {
        Decision::Acquire
    } else {
        Decision::Follow {
            holder: holder.to_owned(),
            expires_ms,
        }
    }
}

/// Reads the fields [`decide`] needs from a Lease.
pub fn view(lease: &Lease) -> LeaseView {
    let spec = lease.spec.as_ref();
    LeaseView {
        holder: spec.and_then(|s| s.holder_identity.clone()),
        renewed_ms: spec
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0.as_millisecond()),
        duration_ms: spec
            .and_then(|s| s.lease_duration_seconds)
            .map_or(0, |s| i64::from(s) * 1000),
    }
}

/// The Lease after `decision` (Acquire or Renew) by `me` at `now_ms`; `current` keeps its
/// metadata (and so its `resourceVersion`, which makes the replace conditional).
pub fn next_lease(
    current: Option<&Lease>,
    name: &str,
    me: &str,
    now_ms: i64,
    duration: Duration,
    decision: &Decision,
) -> Lease {
    let now = Timestamp::from_millisecond(now_ms).ok().map(MicroTime);
    let old = current.and_then(|l| l.spec.clone()).unwrap_or_default();
    let acquiring = *decision == Decision::Acquire;
    Lease {
        metadata: current.map(|l| l.metadata.clone()).unwrap_or(ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        }),
        spec: Some(LeaseSpec {
            holder_identity: Some(me.to_owned()),
            lease_duration_seconds: Some(i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)),
            acquire_time: if acquiring {
                now.clone()
            } else {
                old.acquire_time
            },
            renew_time: now,
            lease_transitions: Some(
                old.lease_transitions.unwrap_or(0) + i32::from(acquiring && current.is_some()),
            ),
            ..old
        }),
    }
}

/// Why leadership could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// Another replica holds the Lease now.
    #[error("lost the Lease {lease} to {holder}")]
    Lost {
        /// Lease name.
        lease: String,
        /// Who holds it now.
        holder: String,
    },
    /// The Lease could not be renewed before it ran out.
    #[error("could not renew the Lease {lease} in time: {source}")]
    RenewFailed {
        /// Lease name.
        lease: String,
        /// The last API error.
        source: kube::Error,
    },
}

/// Where a replica stands in the election, as its readiness probe reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Has not read the Lease yet, or the last read failed: not ready.
    Candidate,
    /// Another replica leads; this one waits to take over: ready.
    Standby,
    /// Holds the Lease (or leader election is off) and reconciles: ready once the
    /// controllers' watches have synced.
    Leading,
}

/// A candidate for one Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    standing: watch::Sender<Standing>,
}

impl LeaderElector {
    /// A candidate `identity` (the pod name) for the Lease `name` in `api`'s namespace;
    /// a leader that has not renewed for `duration` loses it.
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
            standing: watch::Sender::new(Standing::Candidate),
        }
    }

    /// Follows where this candidate stands, as [`Self::acquire`], [`Self::hold`] and
    /// [`Self::release`] find it.
    pub fn standing(&self) -> watch::Receiver<Standing> {
        self.standing.subscribe()
    }

    /// How often the leader renews and a follower retries: a third of the duration, so
    /// two renewals may fail before the Lease runs out.
    pub fn period(&self) -> Duration {
        self.duration / 3
    }

    /// One round: reads the Lease, decides, writes it when acquiring or renewing.
    /// `Ok(Ok(()))`: we lead now; `Ok(Err(holder))`: someone else does.
    pub async fn try_lead(&self) -> Result<Result<(), String>, kube::Error> {
        let current = self.api.get_opt(&self.name).await?;
        let now_ms = Timestamp::now().as_millisecond();
        let decision = decide(current.as_ref().map(view).as_ref(), &self.identity, now_ms);
        if let Decision::Follow { holder, .. } = decision {
            return Ok(Err(holder));
        }
        let lease = next_lease(
            current.as_ref(),
            &self.name,
            &self.identity,
            now_ms,
            self.duration,
            &decision,
        );
        let written = match current {
            Some(_) => {
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
            None => self.api.create(&PostParams::default(), &lease).await,
        };
        match written {
            Ok(_) => Ok(Ok(())),
            // 409: another candidate wrote first (create raced, or resourceVersion moved).
            Err(kube::Error::Api(status)) if status.code == 409 => {
                Ok(Err("another candidate".to_owned()))
            }
            Err(e) => Err(e),
        }
    }

    /// Waits until this candidate leads, retrying every [`Self::period`].
    pub async fn acquire(&self) {
        loop {
            match self.try_lead().await {
                Ok(Ok(())) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "leading");
                    self.standing.send_replace(Standing::Leading);
                    return;
                }
                Ok(Err(holder)) => {
                    tracing::debug!(lease = %self.name, %holder, "following");
                    self.standing.send_replace(Standing::Standby);
                }
                Err(e) => {
                    tracing::warn!(lease = %self.name, error = %e, "lease read failed");
                    self.standing.send_replace(Standing::Candidate);
                }
            }
            tokio::time::sleep(self.period()).await;
        }
    }

    /// Renews every period; returns when leadership is lost (the caller stops
    /// reconciling: a deposed leader must not keep writing).
    pub async fn hold(&self) -> LeaderError {
        let lost = self.keep().await;
        self.standing.send_replace(Standing::Candidate);
        lost
    }

    async fn keep(&self) -> LeaderError {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.period()).await;
            match self.try_lead().await {
                Ok(Ok(())) => last_renewed = tokio::time::Instant::now(),
                Ok(Err(holder)) => {
                    return LeaderError::Lost {
                        lease: self.name.clone(),
                        holder,
                    };
                }
                Err(source) if last_renewed.elapsed() >= self.duration => {
                    return LeaderError::RenewFailed {
                        lease: self.name.clone(),
                        source,
                    };
                }
                Err(e) => tracing::warn!(lease = %self.name, error = %e, "renew failed; retrying"),
            }
        }
    }

    /// Gives the Lease up (on shutdown) so a standby takes over at once instead of after
    /// the duration. Best effort: a failure only delays the takeover.
    pub async fn release(&self) {
        self.standing.send_replace(Standing::Candidate);
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        if let Err(e) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(lease = %self.name, error = %e, "could not release the lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(holder: &str, renewed_ms: i64) -> LeaseView {
        LeaseView {
            holder: Some(holder.into()),
            renewed_ms: Some(renewed_ms),
            duration_ms: 15_000,
        }
    }

    #[test]
    fn no_lease_or_released_lease_is_taken() {
        assert_eq!(decide(None, "a", 0), Decision::Acquire);
        let released = LeaseView {
            holder: None,
            ..held("x", 0)
        };
        assert_eq!(decide(Some(&released), "a", 0), Decision::Acquire);
        let empty = LeaseView {
            holder: Some(String::new()),
            ..held("x", 0)
        };
        assert_eq!(decide(Some(&empty), "a", 0), Decision::Acquire);
    }

    #[test]
    fn the_holder_renews_others_follow_until_expiry() {
        let lease = held("a", 100_000);
        assert_eq!(decide(Some(&lease), "a", 100_001), Decision::Renew);
        assert_eq!(
            decide(Some(&lease), "b", 114_999),
            Decision::Follow {
                holder: "a".into(),
                expires_ms: 115_000
            }
        );
        assert_eq!(decide(Some(&lease), "b", 115_000), Decision::Acquire);
        // The holder itself renews even past expiry (nobody took it meanwhile).
        assert_eq!(decide(Some(&lease), "a", 999_999), Decision::Renew);
        let never_renewed = LeaseView {
            renewed_ms: None,
            ..lease
        };
        assert_eq!(decide(Some(&never_renewed), "b", 0), Decision::Acquire);
    }

    #[test]
    fn taking_over_counts_a_transition_and_keeps_the_resource_version() {
        let duration = Duration::from_secs(15);
        let first = next_lease(None, "op", "a", 1_000, duration, &Decision::Acquire);
        let spec = first.spec.clone().expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_transitions, Some(0));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(view(&first).renewed_ms, Some(1_000));

        let mut stored = first;
        stored.metadata.resource_version = Some("7".into());
        let renewed = next_lease(Some(&stored), "op", "a", 6_000, duration, &Decision::Renew);
        let spec = renewed.spec.clone().expect("spec");
        assert_eq!(spec.lease_transitions, Some(0));
        assert_eq!(spec.acquire_time.map(|t| t.0.as_millisecond()), Some(1_000));
        assert_eq!(renewed.metadata.resource_version.as_deref(), Some("7"));

        let taken = next_lease(
            Some(&stored),
            "op",
            "b",
            20_000,
            duration,
            &Decision::Acquire,
        );
        let spec = taken.spec.expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(spec.lease_transitions, Some(1));
        assert_eq!(
            spec.acquire_time.map(|t| t.0.as_millisecond()),
            Some(20_000)
        );
    }
}
