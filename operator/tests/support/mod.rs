//! What the operator's tests against a real API server share: the clients, the CRDs,
//! a namespace with a Pipeline and a PostgreSQL database of its own, the controllers
//! running in the test, and polling with a bound.
#![allow(dead_code)] // each test file uses a part

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use sensorfleet_backends::conformance::service_url;
use sensorfleet_model::{Pipeline, SensorFleet};
use sensorfleet_operator::controller::{self, Context};
use sensorfleet_operator::crdgen;
use sensorfleet_operator::mirror::PostgresConnector;
use sensorfleet_operator::topic::KafkaTopicAdmin;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

pub const KUBECONFIG_VAR: &str = "SENSORFLEET_TEST_KUBECONFIG";
pub const KAFKA_VAR: &str = "SENSORFLEET_TEST_KAFKA_URL";
pub const POSTGRES_VAR: &str = "SENSORFLEET_TEST_POSTGRES_URL";
pub const WAIT: Duration = Duration::from_secs(60);
/// The resync of the reconcile test: the live status is recounted that often.
pub const LIVE_RESYNC: Duration = Duration::from_secs(3);

pub fn kubeconfig() -> Option<String> {
    service_url(KUBECONFIG_VAR, "kube")
}

/// A name no earlier run used: `<tag>-<pid>-<ms>`, legal for a namespace, a Lease and
/// a Kafka topic.
pub fn unique(tag: &str) -> String {
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() % 1_000_000)
            .unwrap_or_default()
    )
}

/// `host:port[,…]` of a `kafka://host:port[,…][?…]` URL: what a Pipeline's
/// `spec.kafka.bootstrapServers` takes.
pub fn bootstrap_servers(kafka_url: &str) -> String {
    let rest = kafka_url.strip_prefix("kafka://").unwrap_or(kafka_url);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    rest[..end].to_owned()
}

/// A PostgreSQL database of this run on the server at `admin_url`, dropped by
/// [`TestDatabase::drop_database`].
pub struct TestDatabase {
    admin_url: String,
    name: String,
    /// The URL of the new database, for the Pipeline's Secret.
    pub url: String,
}

impl TestDatabase {
    pub async fn create(admin_url: &str, name: &str) -> Self {
        let mut conn = PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("connecting to the test PostgreSQL: {e}"));
        // `name` is ours (letters, digits, `_`): no quoting needed.
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let _ = conn.close().await;
        let (base, _) = admin_url
            .split('?')
            .next()
            .and_then(|u| u.rsplit_once('/'))
            .expect("postgres URL with a database");
        Self {
            admin_url: admin_url.to_owned(),
            name: name.to_owned(),
            url: format!("{base}/{name}"),
        }
    }

    /// Best effort: a leftover database only costs space.
    pub async fn drop_database(self) {
        let Ok(mut conn) = PgConnection::connect(&self.admin_url).await else {
            return;
        };
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = sqlx::raw_sql(AssertSqlSafe(drop)).execute(&mut conn).await {
            eprintln!("could not drop the test database {}: {e}", self.name);
        }
        let _ = conn.close().await;
    }
}

pub async fn client(path: &str) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("kubeconfig readable");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig valid");
    Client::try_from(config).expect("client")
}

/// A test namespace, deleted when dropped: at the end of a run and when a check panics.
/// Its Deployments' pods land on the test node when `scripts/testenv up node` runs, and a
/// failed run must not leave them holding the node's CPU for the tests after it.
pub struct DeletedOnDrop(pub Client, pub String);

impl Drop for DeletedOnDrop {
    fn drop(&mut self) {
        let namespaces: Api<Namespace> = Api::all(self.0.clone());
        let name = self.1.clone();
        // The tests run on the multi-threaded runtime, where a blocking section may wait
        // for a future even while a panic unwinds.
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async move {
                let _ = namespaces.delete(&name, &DeleteParams::default()).await;
            })
        });
    }
}

/// Polls `check` until it returns Some or `WAIT` passes.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < WAIT, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub async fn apply_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crdgen::crds() {
        let name = crd.metadata.name.clone().expect("name");
        crds.patch(
            &name,
            &PatchParams::apply("sensorfleet-operator-test").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("{name} refused by the API server: {e}"));
        eventually(&format!("{name} established"), || async {
            let crd = crds.get(&name).await.ok()?;
            crd.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        })
        .await;
    }
}

pub fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_yaml::from_str(text).expect("test object parses")
}

pub struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// The operator's controllers as `sensorfleet operator` runs them: the real Kafka
/// admin, and the PostgreSQL registry named by each Pipeline's Secret; unchanged objects
/// are checked again every `resync`.
pub fn start(client: &Client, namespace: &str, resync: Duration) -> Running {
    let ctx = Arc::new(Context::new(
        client.clone(),
        Some("operator-test".into()),
        Arc::new(KafkaTopicAdmin::new()),
        Arc::new(PostgresConnector),
        resync,
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(controller::run(ctx, Some(namespace.to_owned()), async {
        let _ = stopped.await;
    }));
    Running { stop, task }
}

impl Running {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(WAIT, self.task).await;
    }
}

pub async fn pipeline_status<T>(
    pipelines: &Api<Pipeline>,
    what: &str,
    check: impl Fn(&sensorfleet_model::crd::status::PipelineStatus) -> Option<T>,
) -> T {
    eventually(what, || async {
        let status = pipelines.get("main").await.ok()?.status?;
        check(&status)
    })
    .await
}

pub async fn set_fleet_count(fleets: &Api<SensorFleet>, name: &str, count: u32) {
    let patch =
        serde_json::json!({"spec": {"generate": {"count": count, "idPrefix": format!("{name}-")}}});
    fleets
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("fleet edited");
}

/// Creates namespace `ns` with the Secret `pg` (the registry's URL) and the Pipeline
/// `main` on the given Kafka and topic, after `edit`.
pub async fn namespace_with_pipeline(
    client: &Client,
    ns: &str,
    database_url: &str,
    bootstrap: &str,
    topic: &str,
    edit: impl FnOnce(&mut Pipeline),
) -> Api<Pipeline> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &yaml(&format!("metadata: {{name: {ns}}}")),
        )
        .await
        .expect("namespace");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "pg"},
        "stringData": {"url": database_url},
    }))
    .expect("secret object");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    let pipelines: Api<Pipeline> = Api::namespaced(client.clone(), ns);
    let mut pipeline: Pipeline = yaml(
        r#"
apiVersion: iot.sensorfleet.dev/v1alpha1
kind: Pipeline
metadata: {name: main}
spec:
  image: sensorfleet:test
  mqtt: {url: "mqtt://mosquitto:1883"}
  kafka: {bootstrapServers: "kafka:9092", devicesPerPartition: 1000, minPartitions: 3, maxPartitions: 64}
  influxdb: {url: "http://influxdb:8086"}
  redis: {url: "redis://redis:6379"}
  postgres: {urlSecret: pg}
  bridge: {replicas: 1}
  processor: {maxReplicas: 16}
  api: {replicas: 1, ingress: {host: iot.example.com}, autoscaling: {maxReplicas: 3}}
"#,
    );
    pipeline.spec.kafka.bootstrap_servers = bootstrap.to_owned();
    pipeline.spec.kafka.topic = topic.to_owned();
    edit(&mut pipeline);
    pipelines
        .create(&PostParams::default(), &pipeline)
        .await
        .expect("pipeline");
    pipelines
}
