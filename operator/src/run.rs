//! `sensorfleet operator`: connect, win the Lease, run the controllers until Ctrl-C or
//! SIGTERM, give the Lease back.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;

use crate::controller::{self, Context};
use crate::leader::{LeaderElector, LeaderError};
use crate::mirror::PostgresConnector;
use crate::topic::KafkaTopicAdmin;

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Watch only this namespace; `None`: all namespaces.
    pub namespace: Option<String>,
    /// Namespace of the leader-election Lease (the operator's own).
    pub lease_namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// This replica's identity in the Lease and in Events (the pod name).
    pub identity: String,
    /// A leader that has not renewed for this long loses the Lease.
    pub lease_duration: Duration,
    /// How often an unchanged object is reconciled again to repair drift.
    pub resync: Duration,
}

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No kubeconfig or in-cluster config, or the API server is unreachable.
    #[error("cannot reach Kubernetes: {0} (set KUBECONFIG or run in a cluster)")]
    Connect(#[source] kube::Error),
    /// Leadership was lost; exiting lets Kubernetes restart this replica as a follower.
    #[error(transparent)]
    Leadership(#[from] LeaderError),
}

/// Runs the operator until a shutdown signal (Ok) or lost leadership (Err).
pub async fn run(config: OperatorConfig) -> Result<(), RunError> {
    let client = Client::try_default().await.map_err(RunError::Connect)?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &config.lease_namespace);
    let elector = LeaderElector::new(
        leases,
        &config.lease_name,
        &config.identity,
        config.lease_duration,
    );
    tokio::select! {
        () = elector.acquire() => {}
        () = shutdown_signal() => return Ok(()),
    }
    let ctx = Arc::new(Context::new(
        client,
        Some(config.identity.clone()),
        Arc::new(KafkaTopicAdmin::new()),
        Arc::new(PostgresConnector),
        config.resync,
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controllers = controller::run(ctx, config.namespace.clone(), async {
        let _ = stop_rx.await;
    });
    tokio::pin!(controllers);
    let outcome = tokio::select! {
        () = &mut controllers => Ok(()),
        lost = elector.hold() => Err(RunError::Leadership(lost)),
        () = shutdown_signal() => Ok(()),
    };
    // Let in-flight reconciles finish before giving the Lease up, so the next leader
    // does not start on an object this one is still writing.
    let _ = stop_tx.send(());
    if outcome.is_ok() {
        controllers.await;
        elector.release().await;
    }
    outcome
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
