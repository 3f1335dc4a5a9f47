//! The operator against a real Kubernetes API server (with the controller manager, so
//! Deployments get ReplicaSets and owned objects are garbage-collected).
//!
//! The API server comes from `scripts/testenv up kube`, which exports
//! `SENSORFLEET_TEST_KUBECONFIG`. Unset: skipped with a message, or a failure when `CI`
//! is set. The registry behind the mirror is the SQLite one in a temporary folder and the
//! Kafka topic admin an in-memory one (both behind the operator's traits); what is under
//! test here is the operator and the API server.
//!
//! Everything lives in a namespace of its own, deleted at the end, so runs do not
//! collide. The CRDs are cluster-wide: they are applied from `crds/`, which is what
//! every run shares anyway.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use sensorfleet_backends::sqlite::SqliteStore;
use sensorfleet_backends::{BackendError, Registry};
use sensorfleet_model::status::{ConditionStatus, READY, TOPIC_READY, find_condition};
use sensorfleet_model::{AlertRule, Pipeline, SensorFleet};
use sensorfleet_operator::controller::{self, Context};
use sensorfleet_operator::crdgen;
use sensorfleet_operator::mirror::RegistryConnector;
use sensorfleet_operator::topic::{PartitionCount, TopicAdmin, TopicError, TopicRequest};

const KUBECONFIG_VAR: &str = "SENSORFLEET_TEST_KUBECONFIG";
const WAIT: Duration = Duration::from_secs(60);

fn kubeconfig() -> Option<String> {
    match std::env::var(KUBECONFIG_VAR) {
        Ok(path) if !path.is_empty() => Some(path),
        _ if std::env::var_os("CI").is_some() => panic!(
            "{KUBECONFIG_VAR} is not set, and CI is: the operator's API-server tests must run in CI. \
             Start the control plane with `scripts/testenv up kube` and `eval \"$(scripts/testenv env)\"`."
        ),
        _ => {
            eprintln!(
                "skipped: {KUBECONFIG_VAR} is not set (scripts/testenv up kube; eval \"$(scripts/testenv env)\")"
            );
            None
        }
    }
}

async fn client(path: &str) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("kubeconfig readable");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig valid");
    Client::try_from(config).expect("client")
}

/// Kafka stand-in: topics that only grow, as the real admin must behave.
#[derive(Default)]
struct MemoryTopics {
    partitions: Mutex<HashMap<String, i32>>,
}

#[async_trait]
impl TopicAdmin for MemoryTopics {
    async fn ensure_partitions(
        &self,
        request: &TopicRequest,
    ) -> Result<PartitionCount, TopicError> {
        let mut topics = self.partitions.lock().expect("lock");
        let current = topics.entry(request.topic.clone()).or_insert(0);
        let changed = *current < request.partitions;
        *current = (*current).max(request.partitions);
        Ok(PartitionCount {
            current: *current,
            requested: request.partitions,
            changed,
        })
    }
}

/// Every pipeline URL leads to the one test registry.
struct OneRegistry(Arc<dyn Registry>);

#[async_trait]
impl RegistryConnector for OneRegistry {
    async fn connect(&self, _url: &str) -> Result<Arc<dyn Registry>, BackendError> {
        Ok(self.0.clone())
    }
}

/// Polls `check` until it returns Some or `WAIT` passes.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
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

async fn apply_crds(client: &Client) {
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

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_yaml::from_str(text).expect("test object parses")
}

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

fn start(
    client: &Client,
    namespace: &str,
    registry: Arc<dyn Registry>,
    topics: Arc<MemoryTopics>,
) -> Running {
    let ctx = Arc::new(Context::new(
        client.clone(),
        Some("operator-test".into()),
        topics,
        Arc::new(OneRegistry(registry)),
        Duration::from_secs(600),
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(controller::run(ctx, Some(namespace.to_owned()), async {
        let _ = stopped.await;
    }));
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(WAIT, self.task).await;
    }
}

async fn pipeline_status<T>(
    pipelines: &Api<Pipeline>,
    what: &str,
    check: impl Fn(&sensorfleet_model::status::PipelineStatus) -> Option<T>,
) -> T {
    eventually(what, || async {
        let status = pipelines.get("main").await.ok()?.status?;
        check(&status)
    })
    .await
}

async fn set_fleet_count(fleets: &Api<SensorFleet>, name: &str, count: u32) {
    let patch =
        serde_json::json!({"spec": {"generate": {"count": count, "idPrefix": format!("{name}-")}}});
    fleets
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("fleet edited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_reconciles_against_a_real_api_server() {
    let Some(path) = kubeconfig() else { return };
    let client = client(&path).await;
    apply_crds(&client).await;

    let ns = format!(
        "sf-operator-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() % 1_000_000)
            .unwrap_or_default()
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &yaml(&format!("metadata: {{name: {ns}}}")),
        )
        .await
        .expect("namespace");

    let data = tempfile::tempdir().expect("tempdir");
    let registry: Arc<dyn Registry> =
        Arc::new(SqliteStore::open(data.path()).await.expect("sqlite"));
    let topics = Arc::new(MemoryTopics::default());
    let running = start(&client, &ns, registry.clone(), topics.clone());

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(
            &PostParams::default(),
            &yaml("metadata: {name: pg}\nstringData: {url: 'postgres://sf:pw@pg:5432/sf'}"),
        )
        .await
        .expect("secret");
    let pipelines: Api<Pipeline> = Api::namespaced(client.clone(), &ns);
    pipelines
        .create(
            &PostParams::default(),
            &yaml(
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
  api: {replicas: 1, ingress: {host: iot.example.com}}
"#,
            ),
        )
        .await
        .expect("pipeline");

    // The Pipeline's objects exist with the expected spec, and the controller manager
    // makes ReplicaSets of the Deployments.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    for name in ["main-bridge", "main-processor", "main-api"] {
        let d = eventually(name, || async { deployments.get(name).await.ok() }).await;
        assert_eq!(
            d.spec
                .template
                .spec
                .as_ref()
                .and_then(|p| p.containers[0].args.clone())
                .and_then(|a| a.first().cloned())
                .as_deref(),
            name.strip_prefix("main-")
        );
    }
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    assert_eq!(
        services
            .list(&ListParams::default())
            .await
            .expect("services")
            .items
            .len(),
        3
    );
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let config = config_maps.get("main-config").await.expect("configmap");
    assert_eq!(
        config
            .data
            .as_ref()
            .and_then(|d| d.get("SENSORFLEET_KAFKA_URL"))
            .map(String::as_str),
        Some("kafka://kafka:9092")
    );
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), &ns);
    eventually("ingress", || async { ingresses.get("main-api").await.ok() }).await;
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    eventually("ReplicaSets from the controller manager", || async {
        (replica_sets
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .len()
            >= 3)
            .then_some(())
    })
    .await;
    pipeline_status(&pipelines, "pipeline ready with min partitions", |s| {
        (find_condition(&s.conditions, READY)?.status == ConditionStatus::True && s.partitions == 3)
            .then_some(())
    })
    .await;

    // Fleets drive partitions and processors: 5,000 then 50,000 devices.
    let fleets: Api<SensorFleet> = Api::namespaced(client.clone(), &ns);
    fleets
        .create(
            &PostParams::default(),
            &yaml("apiVersion: iot.sensorfleet.dev/v1alpha1\nkind: SensorFleet\nmetadata: {name: big}\nspec: {pipeline: main, deviceType: temperature_sensor, generate: {count: 5000, idPrefix: big-}}"),
        )
        .await
        .expect("fleet");
    pipeline_status(&pipelines, "5 partitions for 5,000 devices", |s| {
        (s.partitions == 5 && s.replicas.processor == 5 && s.declared_devices == 5000).then_some(())
    })
    .await;
    eventually("5,000 devices mirrored", || async {
        let n = registry.devices().await.ok()?.len();
        (n == 5000).then_some(())
    })
    .await;
    set_fleet_count(&fleets, "big", 50_000).await;
    pipeline_status(&pipelines, "50 partitions, 16 processors", |s| {
        (s.partitions == 50 && s.replicas.processor == 16).then_some(())
    })
    .await;
    eventually("processor deployment follows", || async {
        (deployments.get("main-processor").await.ok()?.spec.replicas == Some(16)).then_some(())
    })
    .await;
    eventually("50,000 devices mirrored", || async {
        (registry.devices().await.ok()?.len() == 50_000).then_some(())
    })
    .await;
    // Shrinking keeps the partitions and says so.
    set_fleet_count(&fleets, "big", 5000).await;
    let kept = pipeline_status(&pipelines, "partitions kept after shrink", |s| {
        let topic = find_condition(&s.conditions, TOPIC_READY)?;
        (s.wanted_partitions == 5 && topic.reason == "PartitionsKept").then_some(s.partitions)
    })
    .await;
    assert_eq!(kept, 50);

    // An AlertRule is mirrored; an invalid one gets its condition and blocks nothing.
    let rules: Api<AlertRule> = Api::namespaced(client.clone(), &ns);
    rules
        .create(
            &PostParams::default(),
            &yaml("apiVersion: iot.sensorfleet.dev/v1alpha1\nkind: AlertRule\nmetadata: {name: broken}\nspec: {deviceType: temperature_sensor, metric: temperature_celsius, min: 40, max: 30}"),
        )
        .await
        .expect("broken rule accepted by the schema");
    rules
        .create(
            &PostParams::default(),
            &yaml("apiVersion: iot.sensorfleet.dev/v1alpha1\nkind: AlertRule\nmetadata: {name: too-hot}\nspec: {fleet: big, metric: temperature_celsius, max: 30, for: 30s, severity: critical}"),
        )
        .await
        .expect("rule");
    let broken = eventually("InvalidSpec condition", || async {
        let status = rules.get("broken").await.ok()?.status?;
        let ready = find_condition(&status.conditions, READY)?.clone();
        (ready.reason == "InvalidSpec").then_some(ready)
    })
    .await;
    assert_eq!(broken.status, ConditionStatus::False);
    assert!(broken.message.contains("spec.min"), "{}", broken.message);
    // Notable changes are Kubernetes Events on the object.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
    let reasons = eventually("events published", || async {
        let reasons: Vec<(String, String)> = events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .map(|e| {
                let regarding = e.regarding.and_then(|r| r.name).unwrap_or_default();
                (regarding, e.reason.unwrap_or_default())
            })
            .collect();
        let has = |name: &str, reason: &str| reasons.iter().any(|(n, r)| n == name && r == reason);
        (has("broken", "InvalidSpec") && has("main", "PartitionsGrown") && has("big", "Mirrored"))
            .then_some(reasons)
    })
    .await;
    assert!(!reasons.is_empty());
    eventually("rule mirrored", || async {
        let rules = registry.rules().await.ok()?;
        rules
            .iter()
            .any(|r| r.name == "too-hot" && r.threshold.max == Some(30.0))
            .then_some(())
    })
    .await;

    // A restarted operator writes nothing: resourceVersions stay as they are.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let versions = |items: Vec<(String, Option<String>)>| items;
    let snapshot = || async {
        let mut all = Vec::new();
        for d in deployments
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
        {
            all.push((format!("Deployment/{}", d.name_any()), d.resource_version()));
        }
        for p in pipelines
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
        {
            all.push((format!("Pipeline/{}", p.name_any()), p.resource_version()));
        }
        for f in fleets
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
        {
            all.push((
                format!("SensorFleet/{}", f.name_any()),
                f.resource_version(),
            ));
        }
        for r in rules
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
        {
            all.push((format!("AlertRule/{}", r.name_any()), r.resource_version()));
        }
        versions(all)
    };
    let before = snapshot().await;
    running.stop().await;
    let running = start(&client, &ns, registry.clone(), topics.clone());
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        snapshot().await,
        before,
        "a restarted operator changed objects"
    );

    // Deleting a fleet and a rule removes their mirror rows and releases the finalizer.
    fleets
        .delete("big", &DeleteParams::default())
        .await
        .expect("delete fleet");
    eventually("fleet gone", || async {
        fleets.get_opt("big").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(registry.devices().await.expect("devices").is_empty());
    rules
        .delete("too-hot", &DeleteParams::default())
        .await
        .expect("delete rule");
    eventually("rule gone", || async {
        rules.get_opt("too-hot").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(
        !registry
            .rules()
            .await
            .expect("rules")
            .iter()
            .any(|r| r.name == "too-hot")
    );

    // Deleting the Pipeline garbage-collects what it owns.
    pipelines
        .delete("main", &DeleteParams::default())
        .await
        .expect("delete pipeline");
    eventually("owned Deployments collected", || async {
        deployments
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;

    running.stop().await;
    // The invalid rule still holds the finalizer; the namespace deletion below waits for
    // no operator, so drop the finalizer first.
    let _ = rules
        .patch(
            "broken",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"metadata": {"finalizers": null}})),
        )
        .await;
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_candidates_one_leader_through_a_real_lease() {
    use k8s_openapi::api::coordination::v1::Lease;
    use sensorfleet_operator::leader::LeaderElector;

    let Some(path) = kubeconfig() else { return };
    let client = client(&path).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let name = format!(
        "sf-operator-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() % 1_000_000)
            .unwrap_or_default()
    );
    let duration = Duration::from_secs(15);
    let a = LeaderElector::new(leases.clone(), &name, "replica-a", duration);
    let b = LeaderElector::new(leases.clone(), &name, "replica-b", duration);

    assert_eq!(
        a.try_lead().await.expect("api"),
        Ok(()),
        "a takes the free Lease"
    );
    assert_eq!(
        b.try_lead().await.expect("api"),
        Err("replica-a".to_owned())
    );
    assert_eq!(a.try_lead().await.expect("api"), Ok(()), "a renews");
    let lease = leases.get(&name).await.expect("lease");
    assert_eq!(
        lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref()),
        Some("replica-a")
    );
    a.release().await;
    assert_eq!(
        b.try_lead().await.expect("api"),
        Ok(()),
        "b takes the released Lease"
    );
    let spec = leases.get(&name).await.expect("lease").spec.expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("replica-b"));
    assert_eq!(spec.lease_transitions, Some(1));
    assert_eq!(
        a.try_lead().await.expect("api"),
        Err("replica-b".to_owned())
    );
    let _ = leases.delete(&name, &DeleteParams::default()).await;
}
