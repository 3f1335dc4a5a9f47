//! `sensorfleet operator` as the chart runs it, against the real API server of
//! `scripts/testenv up kube` (`SENSORFLEET_TEST_KUBECONFIG`; unset: skipped with a
//! message, or a failure under `CI`): its `/health/live`, `/health/ready` and `/metrics`
//! on `--metrics-addr`, and the settings the chart renders — a custom Lease name is the
//! Lease used; with leader election off no Lease is read or written.
//!
//! One test in a binary of its own: the metrics registry is the process's, so the
//! counts read here are this operator's alone.

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use sensorfleet_backends::conformance::service_url;
use sensorfleet_model::SensorFleet;
use sensorfleet_model::crd::status::{ConditionStatus, READY, find_condition};
use sensorfleet_operator::leader::LeaderElector;
use sensorfleet_operator::run::{OperatorConfig, RunError, run_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

mod support;

use support::{WAIT, apply_crds, client, eventually, unique};

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// `GET path` on a connection of its own: `(status, body)`, or None while nothing answers.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// The value of the sample `name{labels…}` in a Prometheus text exposition.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

async fn create_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("object");
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .expect("namespace");
}

/// A SensorFleet that names no existing Pipeline: reconciled to Ready=False
/// (PipelineNotFound) without Kafka or PostgreSQL.
async fn create_fleet(client: &Client, ns: &str, name: &str) -> Api<SensorFleet> {
    let fleets: Api<SensorFleet> = Api::namespaced(client.clone(), ns);
    let fleet: SensorFleet = serde_yaml::from_str(&format!(
        "apiVersion: iot.sensorfleet.dev/v1alpha1\nkind: SensorFleet\nmetadata: {{name: {name}}}\n\
         spec: {{pipeline: nowhere, deviceType: temperature_sensor, generate: {{count: 3, idPrefix: {name}-}}}}"
    ))
    .expect("fleet parses");
    fleets
        .create(&PostParams::default(), &fleet)
        .await
        .expect("fleet");
    fleets
}

async fn ready_condition(fleets: &Api<SensorFleet>, name: &str) -> Option<ConditionStatus> {
    let status = fleets.get(name).await.ok()?.status?;
    Some(find_condition(&status.conditions, READY)?.status)
}

/// Drops the finalizers the operator put on, so the namespace can go without it.
async fn remove(client: &Client, fleets: &Api<SensorFleet>, fleet: &str, ns: &str) {
    let _ = fleets
        .patch(
            fleet,
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"metadata": {"finalizers": null}})),
        )
        .await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(ns, &DeleteParams::default()).await;
}

struct Operator {
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<Result<(), RunError>>,
    addr: SocketAddr,
}

fn start(client: &Client, config: OperatorConfig) -> Operator {
    let addr = config.metrics_addr;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run_with(client.clone(), config, async {
        let _ = stopped.await;
    }));
    Operator { stop, task, addr }
}

impl Operator {
    async fn stop(self) {
        let _ = self.stop.send(());
        let result = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the operator stops within a minute")
            .expect("the operator task");
        assert!(result.is_ok(), "a clean stop: {result:?}");
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        get(self.addr, path).await
    }

    async fn metrics(&self) -> String {
        let (status, body) = self.get("/metrics").await.expect("/metrics answers");
        assert_eq!(status, 200);
        body
    }
}

fn config(ns: &str, lease_name: &str, leader_election: bool) -> OperatorConfig {
    OperatorConfig {
        namespace: Some(ns.to_owned()),
        leader_election,
        lease_namespace: Some(ns.to_owned()),
        lease_name: lease_name.to_owned(),
        identity: "serve-test".to_owned(),
        // Short, so the test waits a second per election round, not five.
        lease_duration: Duration::from_secs(3),
        resync: Duration::from_secs(600),
        metrics_addr: free_addr(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_metrics_and_lease_settings_against_a_real_api_server() {
    let Some(path) = service_url("SENSORFLEET_TEST_KUBECONFIG", "kube") else {
        return;
    };
    let client = client(&path).await;
    apply_crds(&client).await;

    // A taken metrics port is refused with the flag to change.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut refused = config("unused", "unused", false);
    refused.metrics_addr = taken.local_addr().expect("addr");
    let error = run_with(client.clone(), refused, std::future::pending())
        .await
        .expect_err("the port is taken");
    assert!(error.to_string().contains("--metrics-addr"), "{error}");
    drop(taken);

    // Leader election on, with a Lease name of our own that another replica holds.
    let ns = unique("sf-serve");
    create_namespace(&client, &ns).await;
    let lease_name = unique("sf-custom-lease");
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let other = LeaderElector::new(
        leases.clone(),
        &lease_name,
        "other-replica",
        Duration::from_secs(300),
    );
    assert_eq!(other.try_lead().await.expect("api"), Ok(()));
    let fleets = create_fleet(&client, &ns, "waiting").await;
    let operator = start(&client, config(&ns, &lease_name, true));

    let (status, _) = eventually("/health/live", || operator.get("/health/live")).await;
    assert_eq!(status, 200);
    // Standing by for the other replica is ready (a rollout of two operators proceeds),
    // and a standby reconciles nothing.
    let standby = eventually("ready as a standby", || async {
        let (status, body) = operator.get("/health/ready").await?;
        (status == 200).then_some(body)
    })
    .await;
    assert!(standby.contains("\"role\":\"standby\""), "{standby}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        ready_condition(&fleets, "waiting").await,
        None,
        "a standby wrote a status"
    );
    let text = operator.metrics().await;
    assert_eq!(
        sample(&text, "sensorfleet_operator_leader", &[]),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "sensorfleet_operator_reconciles_total",
            &[("kind", "SensorFleet")]
        ),
        None,
        "a standby reconciled: {text}"
    );

    // The other replica steps down: this one takes the custom-named Lease, and is ready
    // as the leader once its watches have synced.
    other.release().await;
    let leading = eventually("ready as the leader", || async {
        let (status, body) = operator.get("/health/ready").await?;
        (status == 200 && body.contains("\"role\":\"leader\"")).then_some(body)
    })
    .await;
    assert!(leading.contains("\"watchesSynced\":true"), "{leading}");
    let lease = leases.get(&lease_name).await.expect("the custom Lease");
    assert_eq!(
        lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref()),
        Some("serve-test")
    );
    assert!(
        leases
            .get_opt("sensorfleet-operator")
            .await
            .expect("api")
            .is_none(),
        "the default Lease name was used"
    );

    // The leader reconciles the fleet, and /metrics says so.
    eventually("the fleet reconciled", || async {
        (ready_condition(&fleets, "waiting").await? == ConditionStatus::False).then_some(())
    })
    .await;
    let text = eventually("the reconcile counted", || async {
        let text = operator.metrics().await;
        let n = sample(
            &text,
            "sensorfleet_operator_reconciles_total",
            &[("kind", "SensorFleet"), ("result", "success")],
        )?;
        (n >= 1.0).then_some(text)
    })
    .await;
    assert_eq!(sample(&text, "sensorfleet_operator_leader", &[]), Some(1.0));
    assert!(
        sample(
            &text,
            "sensorfleet_operator_reconcile_duration_seconds_count",
            &[("kind", "SensorFleet")]
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    let fleets_by_state = |text: &str, state: &str| {
        sample(
            text,
            "sensorfleet_operator_objects",
            &[("kind", "SensorFleet"), ("state", state)],
        )
    };
    assert_eq!(fleets_by_state(&text, "not_ready"), Some(1.0), "{text}");
    assert_eq!(fleets_by_state(&text, "ready"), Some(0.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "sensorfleet_operator_objects",
            &[("kind", "Pipeline"), ("state", "ready")]
        ),
        Some(0.0),
        "every kind is reported: {text}"
    );

    // A clean stop gives the Lease back.
    operator.stop().await;
    let holder = leases
        .get(&lease_name)
        .await
        .expect("lease")
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(holder, None, "released on shutdown");
    remove(&client, &fleets, "waiting", &ns).await;

    // Leader election off: no Lease is read or written, the replica reconciles at once.
    let ns = unique("sf-serve-solo");
    create_namespace(&client, &ns).await;
    let fleets = create_fleet(&client, &ns, "solo").await;
    let lease_name = unique("sf-unused-lease");
    let operator = start(&client, config(&ns, &lease_name, false));
    let leading = eventually("ready without an election", || async {
        let (status, body) = operator.get("/health/ready").await?;
        (status == 200).then_some(body)
    })
    .await;
    assert!(leading.contains("\"role\":\"leader\""), "{leading}");
    eventually("the fleet reconciled without a Lease", || async {
        (ready_condition(&fleets, "solo").await? == ConditionStatus::False).then_some(())
    })
    .await;
    let text = operator.metrics().await;
    assert_eq!(sample(&text, "sensorfleet_operator_leader", &[]), Some(1.0));
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let names: Vec<String> = leases
        .list(&Default::default())
        .await
        .expect("leases")
        .items
        .into_iter()
        .filter_map(|l| l.metadata.name)
        .collect();
    assert!(
        names.is_empty(),
        "leader election off made Leases: {names:?}"
    );
    operator.stop().await;
    remove(&client, &fleets, "solo", &ns).await;
}
