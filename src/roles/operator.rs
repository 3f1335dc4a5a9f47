//! `sensorfleet operator`: the Kubernetes operator (reconciles Pipelines, SensorFleets
//! and AlertRules; the controllers live in the `sensorfleet-operator` crate).

use std::time::Duration;

use sensorfleet_operator::run::{self as operator, OperatorConfig};

use super::{OpsArgs, parse_duration};

// The flags of `sensorfleet operator` (its help text is the subcommand's doc in main.rs).
#[derive(clap::Args)]
#[command(mut_arg("metrics_addr", OpsArgs::default_at("127.0.0.1:9103")))]
pub struct OperatorArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "SENSORFLEET_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Elect one active replica through a Lease before reconciling (`false`: no Lease;
    /// this replica reconciles at once, so run exactly one).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "SENSORFLEET_LEADER_ELECTION")]
    pub leader_election: bool,
    /// Namespace of the leader-election Lease (default: the operator's own, from its
    /// in-cluster config or kubeconfig context).
    #[arg(long, env = "SENSORFLEET_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        default_value = "sensorfleet-operator",
        env = "SENSORFLEET_LEASE_NAME"
    )]
    pub lease_name: String,
    /// This replica's identity in the Lease and in Events (default: the host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// A leader that has not renewed its Lease for this long is replaced.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// How often an unchanged object is checked again: drift is repaired and the live
    /// status (a fleet's online count, a rule's firing count) refreshed, one aggregate
    /// registry query per object.
    #[arg(long, default_value = "1m", value_parser = parse_duration, env = "SENSORFLEET_RESYNC")]
    pub resync: Duration,
    #[command(flatten)]
    pub ops: OpsArgs,
}

/// Runs the operator until it is signalled.
pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    let identity = args
        .identity
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("sensorfleet-operator-{}", std::process::id()));
    operator::run(OperatorConfig {
        namespace: args.namespace,
        leader_election: args.leader_election,
        lease_namespace: args.lease_namespace,
        lease_name: args.lease_name,
        identity,
        lease_duration: args.lease_duration,
        resync: args.resync,
        metrics_addr: args.ops.metrics_addr,
    })
    .await?;
    Ok(())
}
