//! The operator against a real Kubernetes API server (with the controller manager, so
//! Deployments get ReplicaSets, the bridge's StatefulSet gets its pods and owned objects
//! are garbage-collected).
//!
//! The API server comes from `scripts/testenv up kube`, which exports
//! `SENSORFLEET_TEST_KUBECONFIG`; the reconcile test also drives the real Kafka
//! (`SENSORFLEET_TEST_KAFKA_URL`, through the operator's [`KafkaTopicAdmin`]) and the
//! real PostgreSQL registry (`SENSORFLEET_TEST_POSTGRES_URL`, through the operator's
//! [`PostgresConnector`], reached by the URL in the Pipeline's Secret). Any of them
//! unset: skipped with a message, or a failure when `CI` is set.
//!
//! Everything lives in a namespace, a Kafka topic and a PostgreSQL database of its own,
//! removed at the end, so runs do not collide (a failed run leaves them behind; they
//! only cost space). The CRDs are cluster-wide: they are applied from `crds/`, which is
//! what every run shares anyway.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use sensorfleet_backends::Registry;
use sensorfleet_backends::conformance::service_url;
use sensorfleet_backends::event_log::kafka::{KafkaAdmin, KafkaOptions};
use sensorfleet_backends::registry::postgres::PostgresRegistry;
use sensorfleet_model::crd::status::{ConditionStatus, READY, TOPIC_READY, find_condition};
use sensorfleet_model::{Alert, AlertKind, AlertPhase, AlertRule, Pipeline, SensorFleet, Severity};
use sensorfleet_operator::topic::{KafkaTopicAdmin, TopicAdmin, TopicRequest};

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_reconciles_against_a_real_api_server() {
    // Each looked up before any return: under CI a missing one fails, never skips.
    let (kube, kafka_url, postgres_url) = (
        kubeconfig(),
        service_url(KAFKA_VAR, "kafka"),
        service_url(POSTGRES_VAR, "postgres"),
    );
    let (Some(path), Some(kafka_url), Some(postgres_url)) = (kube, kafka_url, postgres_url) else {
        return;
    };
    let client = client(&path).await;
    apply_crds(&client).await;

    let ns = unique("sf-operator");
    let topic = format!("{ns}-readings");
    let bootstrap = bootstrap_servers(&kafka_url);
    let kafka = KafkaAdmin::connect(&kafka_url, &KafkaOptions::default())
        .unwrap_or_else(|e| panic!("Kafka admin for {kafka_url}: {e}"));
    let database = TestDatabase::create(&postgres_url, &ns.replace('-', "_")).await;
    // The test's own connection to the database the operator mirrors into.
    let registry: Arc<dyn Registry> = Arc::new(
        PostgresRegistry::connect(&database.url, 2)
            .await
            .unwrap_or_else(|e| panic!("registry in the test database: {e}")),
    );
    let pipelines =
        namespace_with_pipeline(&client, &ns, &database.url, &bootstrap, &topic, |_| {}).await;
    let namespace = DeletedOnDrop(client.clone(), ns.clone());
    let running = start(&client, &ns, LIVE_RESYNC);

    // The Pipeline's objects exist with the expected spec, and the controller manager
    // makes ReplicaSets of the Deployments and the bridge's pod of its StatefulSet.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let stateful_sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let bridge = eventually("main-bridge", || async {
        stateful_sets.get("main-bridge").await.ok()
    })
    .await;
    let mut templates = vec![("main-bridge", bridge.spec.template)];
    for name in ["main-processor", "main-api"] {
        let d = eventually(name, || async { deployments.get(name).await.ok() }).await;
        templates.push((name, d.spec.template));
    }
    for (name, template) in templates {
        assert_eq!(
            template
                .spec
                .as_ref()
                .and_then(|p| p.containers[0].args.clone())
                .and_then(|a| a.first().cloned())
                .as_deref(),
            name.strip_prefix("main-")
        );
    }
    // Services are applied after the Deployments: seeing the Deployments does not mean
    // the reconcile has got that far yet.
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    eventually("3 services", || async {
        (services
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .len()
            == 3)
            .then_some(())
    })
    .await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let config = config_maps.get("main-config").await.expect("configmap");
    assert_eq!(
        config
            .data
            .as_ref()
            .and_then(|d| d.get("SENSORFLEET_KAFKA_URL"))
            .map(String::as_str),
        Some(
            format!("kafka://{bootstrap}?readings_topic={topic}&dead_letter_topic={topic}-dlq")
                .as_str()
        )
    );
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), &ns);
    eventually("ingress", || async { ingresses.get("main-api").await.ok() }).await;
    // The rollup CronJob and the API's autoscaler passed the API server's validation.
    let cron_jobs: Api<CronJob> = Api::namespaced(client.clone(), &ns);
    let rollup = eventually("the rollup CronJob", || async {
        cron_jobs.get("main-rollup").await.ok()
    })
    .await;
    assert_eq!(rollup.spec.schedule, "7 * * * *");
    let autoscalers: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
    let autoscaler = eventually("the API's autoscaler", || async {
        autoscalers.get("main-api").await.ok()
    })
    .await;
    assert_eq!(autoscaler.spec.max_replicas, 3);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    eventually("ReplicaSets from the controller manager", || async {
        (replica_sets
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .len()
            >= 2)
            .then_some(())
    })
    .await;
    // The StatefulSet controller names the bridge's pod by its ordinal; that name is the
    // pod's MQTT client id, the same after every restart.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let bridge_pod = eventually("the bridge's pod main-bridge-0", || async {
        pods.get("main-bridge-0").await.ok()
    })
    .await;
    let client_id = bridge_pod
        .spec
        .as_ref()
        .and_then(|p| p.containers[0].env.as_ref())
        .and_then(|env| {
            env.iter()
                .find(|e| e.name == "SENSORFLEET_BRIDGE_CLIENT_ID")
        })
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.clone());
    assert_eq!(client_id.as_deref(), Some("metadata.name"));
    pipeline_status(&pipelines, "pipeline ready with min partitions", |s| {
        (find_condition(&s.conditions, READY)?.status == ConditionStatus::True && s.partitions == 3)
            .then_some(())
    })
    .await;
    // The status reports what Kafka has: ask the broker's metadata directly.
    let in_kafka = || async {
        kafka
            .partitions(&topic)
            .await
            .unwrap_or_else(|e| panic!("metadata of {topic}: {e}"))
    };
    assert_eq!(
        in_kafka().await,
        Some(3),
        "topic created with minPartitions"
    );

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
    assert_eq!(in_kafka().await, Some(5), "topic grown for 5,000 devices");
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
    assert_eq!(in_kafka().await, Some(50), "topic grown for 50,000 devices");
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
    assert_eq!(in_kafka().await, Some(50), "partitions kept in Kafka");
    // The operator asks for max(wanted, status) and so never asks for fewer; a status
    // lost or edited would. Ask for 5 directly: the admin keeps the 50.
    let fewer = KafkaTopicAdmin::new()
        .ensure_partitions(&TopicRequest {
            bootstrap_servers: bootstrap.clone(),
            topic: topic.clone(),
            partitions: 5,
            replication_factor: 1,
        })
        .await
        .expect("ensure 5 partitions");
    assert_eq!(
        (fewer.current, fewer.requested, fewer.changed),
        (50, 5, false)
    );
    assert_eq!(in_kafka().await, Some(50), "Kafka never shrinks");

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

    // Live status: presence as the processors record it and the rule's alerts in the
    // history, recounted at every resync (one aggregate query per object). The shrink to
    // 5,000 renamed every device (ids are padded to the count's digits): wait until the
    // old rows are pruned, or the presence would be written to rows about to go.
    eventually("the shrunk fleet mirrored", || async {
        (registry.devices().await.ok()?.len() == 5000).then_some(())
    })
    .await;
    let big: Vec<String> = registry
        .devices()
        .await
        .expect("devices")
        .into_iter()
        .filter(|d| d.fleet.as_deref() == Some("big"))
        .take(3)
        .map(|d| d.device_id)
        .collect();
    registry
        .set_presence(&[
            (big[0].clone(), true),
            (big[1].clone(), true),
            (big[2].clone(), false),
        ])
        .await
        .expect("presence");
    let fired = "2026-12-03T06:00:00.000Z";
    registry
        .record_alerts(&[Alert {
            id: format!("{}/rule:too-hot/1", big[0]),
            device_id: big[0].clone(),
            alert_type: AlertKind::Threshold,
            rule: "too-hot".to_owned(),
            metric: Some("temperature_celsius".to_owned()),
            severity: Severity::Critical,
            state: AlertPhase::Firing,
            value: 31.0,
            threshold: "> 30".to_owned(),
            timestamp: fired.to_owned(),
            started_at: "2026-12-03T05:59:30.000Z".to_owned(),
            message: "too hot".to_owned(),
        }])
        .await
        .expect("alert");
    eventually("onlineCount 2, firingCount 1", || async {
        let fleet = fleets.get("big").await.ok()?.status?;
        let rule = rules.get("too-hot").await.ok()?.status?;
        (fleet.online_count == 2
            && rule.firing_count == 1
            && rule.last_fired.as_deref() == Some(fired))
        .then_some(())
    })
    .await;

    // A restarted operator writes nothing: resourceVersions stay as they are.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The operator's own objects; Events are not compared here.
    let snapshot = || async {
        let mut all = versions(&client, &ns).await;
        all.retain(|key, _| !key.starts_with("Event/"));
        all
    };
    let before = snapshot().await;
    running.stop().await;
    let running = start(&client, &ns, LIVE_RESYNC);
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
    eventually("the owned StatefulSet collected", || async {
        stateful_sets
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
    drop(namespace);
    if let Err(e) = kafka.delete_topics(&[&topic]).await {
        eprintln!("could not delete the test topic {topic}: {e}");
    }
    drop(registry);
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_candidates_one_leader_through_a_real_lease() {
    use k8s_openapi::api::coordination::v1::Lease;
    use sensorfleet_operator::leader::LeaderElector;

    let Some(path) = kubeconfig() else { return };
    let client = client(&path).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let name = unique("sf-operator-test");
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

/// Peak and current resident memory of this process (the operator's controllers run in
/// it), in MiB.
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Every object's resourceVersion in the namespace's kinds the operator writes.
async fn versions(client: &Client, ns: &str) -> std::collections::BTreeMap<String, String> {
    let mut all = std::collections::BTreeMap::new();
    let lp = ListParams::default();
    let fleets: Api<SensorFleet> = Api::namespaced(client.clone(), ns);
    let rules: Api<AlertRule> = Api::namespaced(client.clone(), ns);
    let pipelines: Api<Pipeline> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let stateful_sets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), ns);
    for (kind, items) in [
        (
            "SensorFleet",
            fleets.list(&lp).await.map(|l| names(l.items)),
        ),
        ("AlertRule", rules.list(&lp).await.map(|l| names(l.items))),
        (
            "Pipeline",
            pipelines.list(&lp).await.map(|l| names(l.items)),
        ),
        (
            "Deployment",
            deployments.list(&lp).await.map(|l| names(l.items)),
        ),
        (
            "StatefulSet",
            stateful_sets.list(&lp).await.map(|l| names(l.items)),
        ),
        ("Event", events.list(&lp).await.map(|l| names(l.items))),
    ] {
        for (name, version) in items.expect("list") {
            all.insert(format!("{kind}/{name}"), version);
        }
    }
    all
}

fn names<K: ResourceExt>(items: Vec<K>) -> Vec<(String, String)> {
    items
        .iter()
        .map(|o| (o.name_any(), o.resource_version().unwrap_or_default()))
        .collect()
}

/// The converge benchmark of issue #4 (BENCHMARKS.md): 1,000 SensorFleets (10 devices
/// each) and 200 AlertRules created at once against the real API server, Kafka and
/// PostgreSQL; prints the time until every one is Ready, the writes during a minute in
/// which nothing changes, and this process's memory. Run it with
/// `cargo test --release -p sensorfleet-operator --test kube converge -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test: run with --ignored --nocapture"]
async fn converge_1000_fleets_and_200_rules() {
    use futures_util::StreamExt;
    let (kube, kafka_url, postgres_url) = (
        kubeconfig(),
        service_url(KAFKA_VAR, "kafka"),
        service_url(POSTGRES_VAR, "postgres"),
    );
    let (Some(path), Some(kafka_url), Some(postgres_url)) = (kube, kafka_url, postgres_url) else {
        return;
    };
    const FLEETS: usize = 1000;
    const RULES: usize = 200;
    let idle = Duration::from_secs(
        std::env::var("SENSORFLEET_IDLE_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    );
    let client = client(&path).await;
    apply_crds(&client).await;
    let ns = unique("sf-converge");
    let topic = format!("{ns}-readings");
    let database = TestDatabase::create(&postgres_url, &ns.replace('-', "_")).await;
    let pipelines = namespace_with_pipeline(
        &client,
        &ns,
        &database.url,
        &bootstrap_servers(&kafka_url),
        &topic,
        |_| {},
    )
    .await;
    let before = memory_mib();
    let running = start(&client, &ns, Duration::from_secs(600));
    pipeline_status(&pipelines, "the Pipeline ready", |s| {
        find_condition(&s.conditions, READY)
            .filter(|c| c.status == ConditionStatus::True)
            .map(|_| ())
    })
    .await;

    let fleets: Api<SensorFleet> = Api::namespaced(client.clone(), &ns);
    let rules: Api<AlertRule> = Api::namespaced(client.clone(), &ns);
    let started = Instant::now();
    let creates = (0..FLEETS + RULES).map(|n| {
        let (fleets, rules) = (fleets.clone(), rules.clone());
        async move {
            let pp = PostParams::default();
            if n < FLEETS {
                let fleet: SensorFleet = yaml(&format!(
                    "apiVersion: iot.sensorfleet.dev/v1alpha1\nkind: SensorFleet\n\
                     metadata: {{name: f{n}}}\nspec: {{deviceType: temperature_sensor, \
                     generate: {{count: 10, idPrefix: f{n}-}}}}\n"
                ));
                fleets.create(&pp, &fleet).await.map(|_| ())
            } else {
                let i = n - FLEETS;
                let rule: AlertRule = yaml(&format!(
                    "apiVersion: iot.sensorfleet.dev/v1alpha1\nkind: AlertRule\n\
                     metadata: {{name: r{i}}}\nspec: {{fleet: f{i}, metric: temperature_celsius, \
                     max: {}, severity: warning}}\n",
                    30 + i % 10
                ));
                rules.create(&pp, &rule).await.map(|_| ())
            }
        }
    });
    let created: Vec<_> = futures_util::stream::iter(creates)
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(created.iter().all(Result::is_ok), "every object created");
    let created_in = started.elapsed();
    let ready = |conditions: &[sensorfleet_model::crd::status::Condition]| {
        find_condition(conditions, READY).is_some_and(|c| c.status == ConditionStatus::True)
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let lp = ListParams::default();
        let fleets_ready = fleets
            .list(&lp)
            .await
            .map(|l| {
                l.items
                    .iter()
                    .filter(|f| f.status.as_ref().is_some_and(|s| ready(&s.conditions)))
                    .count()
            })
            .unwrap_or(0);
        let rules_ready = rules
            .list(&lp)
            .await
            .map(|l| {
                l.items
                    .iter()
                    .filter(|r| r.status.as_ref().is_some_and(|s| ready(&s.conditions)))
                    .count()
            })
            .unwrap_or(0);
        if fleets_ready == FLEETS && rules_ready == RULES {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not converged in 600 s: {fleets_ready} fleets, {rules_ready} rules ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let converged_in = started.elapsed();
    let after_converge = memory_mib();

    let quiet_from = versions(&client, &ns).await;
    tokio::time::sleep(idle).await;
    let quiet_to = versions(&client, &ns).await;
    let writes = quiet_to
        .iter()
        .filter(|(key, version)| quiet_from.get(*key) != Some(*version))
        .count();
    let after_idle = memory_mib();

    println!(
        "converge: {FLEETS} SensorFleets ({} devices) + {RULES} AlertRules",
        FLEETS * 10
    );
    println!(
        "  created (32 at a time)          {:.1} s",
        created_in.as_secs_f64()
    );
    println!(
        "  all Ready after                 {:.1} s",
        converged_in.as_secs_f64()
    );
    println!(
        "  objects changed in {} s idle      {writes} (of {} watched)",
        idle.as_secs(),
        quiet_to.len()
    );
    println!(
        "  memory of the process (MiB)     before {:.1} rss; converged {:.1} rss, {:.1} peak; after idle {:.1} rss",
        before.1, after_converge.1, after_converge.0, after_idle.1
    );

    // Delete everything while the operator runs, so every finalizer is released.
    let _ = fleets
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await;
    let _ = rules
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await;
    eventually("fleets and rules deleted", || async {
        let none = fleets
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .is_empty()
            && rules
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .is_empty();
        none.then_some(())
    })
    .await;
    running.stop().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
    if let Ok(kafka) = KafkaAdmin::connect(&kafka_url, &KafkaOptions::default()) {
        let _ = kafka.delete_topics(&[&topic]).await;
    }
    database.drop_database().await;
    assert_eq!(writes, 0, "nothing changed, so nothing should be written");
}
