//! `sensorfleet operator`: connect, serve `/metrics` and the probes, win the Lease (unless
//! leader election is off), run the controllers until Ctrl-C or SIGTERM, give the Lease
//! back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use sensorfleet_backends::signal;
use tokio::sync::watch;

use crate::controller::{self, Context};
use crate::leader::{LeaderElector, LeaderError, Standing};
use crate::mirror::PostgresConnector;
use crate::ops::{self, Health};
use crate::topic::KafkaTopicAdmin;

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Watch only this namespace; `None`: all namespaces.
    pub namespace: Option<String>,
    /// Take the Lease before reconciling. Off: no Lease is read or written and this
    /// replica reconciles at once (run exactly one).
    pub leader_election: bool,
    /// Namespace of the leader-election Lease; `None`: the client's default namespace
    /// (in a pod, its own).
    pub lease_namespace: Option<String>,
    /// Name of the Lease.
    pub lease_name: String,
    /// This replica's identity in the Lease and in Events (the pod name).
    pub identity: String,
    /// A leader that has not renewed for this long loses the Lease.
    pub lease_duration: Duration,
    /// How often an unchanged object is reconciled again to repair drift.
    pub resync: Duration,
    /// Where `/metrics`, `/health/live` and `/health/ready` listen.
    pub metrics_addr: SocketAddr,
}

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No kubeconfig or in-cluster config, or the API server is unreachable.
    #[error("cannot reach Kubernetes: {0} (set KUBECONFIG or run in a cluster)")]
    Connect(#[source] kube::Error),
    /// The metrics and probe address cannot be listened on.
    #[error(
        "cannot serve /metrics and /health on {addr}: {source}; pass --metrics-addr \
         (SENSORFLEET_METRICS_ADDR) with a free port"
    )]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Leadership was lost; exiting lets Kubernetes restart this replica as a follower.
    #[error(transparent)]
    Leadership(#[from] LeaderError),
}

/// Runs the operator until a shutdown signal (Ok) or lost leadership (Err).
pub async fn run(config: OperatorConfig) -> Result<(), RunError> {
    let client = Client::try_default().await.map_err(RunError::Connect)?;
    run_with(client, config, signal::shutdown()).await
}

/// [`run`] with a client of the caller's and a shutdown of the caller's: what tests use.
pub async fn run_with(
    client: Client,
    config: OperatorConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    tokio::pin!(shutdown);
    let listener = tokio::net::TcpListener::bind(config.metrics_addr)
        .await
        .map_err(|source| RunError::Bind {
            addr: config.metrics_addr,
            source,
        })?;
    let bound = listener.local_addr().unwrap_or(config.metrics_addr);
    let ctx = Arc::new(Context::new(
        client.clone(),
        Some(config.identity.clone()),
        Arc::new(KafkaTopicAdmin::new()),
        Arc::new(PostgresConnector),
        config.resync,
    ));
    let elector = config.leader_election.then(|| {
        let namespace = config
            .lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        let leases: Api<Lease> = Api::namespaced(client.clone(), &namespace);
        tracing::info!(lease = %config.lease_name, %namespace, identity = %config.identity, "leader election on");
        LeaderElector::new(
            leases,
            &config.lease_name,
            &config.identity,
            config.lease_duration,
        )
    });
    let standing = match &elector {
        Some(elector) => elector.standing(),
        None => {
            tracing::info!("leader election off: this replica reconciles");
            watch::Sender::new(Standing::Leading).subscribe()
        }
    };
    let (ops_stop, ops_stopped) = tokio::sync::oneshot::channel::<()>();
    let health = Health {
        standing,
        watches: ctx.watches.clone(),
    };
    let server = tokio::spawn(async move {
        let stopped = async {
            let _ = ops_stopped.await;
        };
        if let Err(e) = ops::serve(listener, health, stopped).await {
            tracing::warn!(error = %e, "the metrics and health server stopped");
        }
    });
    tracing::info!(metrics = %format!("http://{bound}/metrics"), ready = %format!("http://{bound}/health/ready"), "ops endpoints up");

    let outcome = reconcile(ctx, &config, elector.as_ref(), &mut shutdown).await;
    let _ = ops_stop.send(());
    let _ = server.await;
    outcome
}

/// Leads (when electing), then runs the controllers until `shutdown` or lost leadership.
async fn reconcile(
    ctx: Arc<Context>,
    config: &OperatorConfig,
    elector: Option<&LeaderElector>,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<(), RunError> {
    if let Some(elector) = elector {
        tokio::select! {
            () = elector.acquire() => {}
            () = shutdown.as_mut() => return Ok(()),
        }
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controllers = controller::run(ctx, config.namespace.clone(), async {
        let _ = stop_rx.await;
    });
    tokio::pin!(controllers);
    let hold = async {
        match elector {
            Some(elector) => elector.hold().await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        () = &mut controllers => Ok(()),
        lost = hold => Err(RunError::Leadership(lost)),
        () = shutdown.as_mut() => Ok(()),
    };
    // Let in-flight reconciles finish before giving the Lease up, so the next leader
    // does not start on an object this one is still writing.
    let _ = stop_tx.send(());
    if outcome.is_ok() {
        controllers.await;
        if let Some(elector) = elector {
            elector.release().await;
        }
    }
    outcome
}
