//! The Pipeline builder from YAML fixtures: what the operator would apply, checked field
//! by field, with no API server.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EnvVar, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sensorfleet_model::Pipeline;
use sensorfleet_operator::build::{
    CONFIG_HASH_ANNOTATION, DesiredObjects, Replicas, Worker, pipeline_objects,
};
use sensorfleet_operator::partitions;

fn fixture(name: &str) -> Pipeline {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn build(pipeline: &Pipeline, processor: i32) -> DesiredObjects {
    let replicas = Replicas {
        bridge: pipeline.spec.bridge.replicas,
        processor,
        api: pipeline.spec.api.replicas,
    };
    pipeline_objects(pipeline, replicas).expect("builds")
}

/// The pod templates of the bridge (StatefulSet), processor and api (Deployments), in
/// [`Worker::ALL`] order.
fn templates(desired: &DesiredObjects) -> Vec<&PodTemplateSpec> {
    std::iter::once(&desired.bridge.spec.template)
        .chain(desired.deployments.iter().map(|d| &d.spec.template))
        .collect()
}

/// The one container of `worker`'s pods.
fn container(desired: &DesiredObjects, worker: Worker) -> &Container {
    let index = Worker::ALL
        .iter()
        .position(|w| *w == worker)
        .expect("a worker");
    let pod = templates(desired)[index].spec.as_ref().expect("pod spec");
    assert_eq!(pod.containers.len(), 1);
    &pod.containers[0]
}

fn pod_of(desired: &DesiredObjects, worker: Worker) -> k8s_openapi::api::core::v1::PodSpec {
    let index = Worker::ALL
        .iter()
        .position(|w| *w == worker)
        .expect("a worker");
    templates(desired)[index].spec.clone().expect("pod spec")
}

fn env<'a>(container: &'a Container, name: &str) -> Option<&'a EnvVar> {
    container.env.iter().flatten().find(|e| e.name == name)
}

#[test]
fn the_full_pipeline_renders_every_object() {
    let pipeline = fixture("pipeline-full.yaml");
    let desired = build(&pipeline, 5);

    let names: Vec<_> = std::iter::once(&desired.bridge.metadata)
        .chain(desired.deployments.iter().map(|d| &d.metadata))
        .map(|m| m.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(names, ["main-bridge", "main-processor", "main-api"]);
    let service_names: Vec<_> = desired
        .services
        .iter()
        .map(|s| s.metadata.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(service_names, names);

    // Everything is owned by the Pipeline (garbage-collected with it) and labelled.
    let metas = std::iter::once(&desired.config_map.metadata)
        .chain(std::iter::once(&desired.bridge.metadata))
        .chain(desired.deployments.iter().map(|d| &d.metadata))
        .chain(desired.services.iter().map(|s| &s.metadata))
        .chain(desired.ingress.iter().map(|i| &i.metadata));
    for meta in metas {
        assert_eq!(meta.namespace.as_deref(), Some("iot"));
        let owners = meta.owner_references.as_ref().expect("owner");
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].kind, "Pipeline");
        assert_eq!(owners[0].name, "main");
        assert_eq!(owners[0].uid, "0b5f1c7e-6a55-4d43-9a59-0f3c1b2a9d10");
        assert_eq!(owners[0].controller, Some(true));
        let labels = meta.labels.as_ref().expect("labels");
        assert_eq!(labels["app.kubernetes.io/name"], "sensorfleet");
        assert_eq!(labels["app.kubernetes.io/instance"], "main");
        assert_eq!(
            labels["app.kubernetes.io/managed-by"],
            "sensorfleet-operator"
        );
    }

    // Replicas: the bridge's from the spec, the processor's as decided, the API's left to
    // its autoscaler.
    let replicas: Vec<_> = std::iter::once(desired.bridge.spec.replicas)
        .chain(desired.deployments.iter().map(|d| d.spec.replicas))
        .collect();
    assert_eq!(replicas, [Some(2), Some(5), None]);

    let selectors = std::iter::once(&desired.bridge.spec.selector)
        .chain(desired.deployments.iter().map(|d| &d.spec.selector));
    for ((template, selector), worker) in templates(&desired)
        .into_iter()
        .zip(selectors)
        .zip(Worker::ALL)
    {
        let c = container(&desired, worker);
        assert_eq!(c.args.as_deref(), Some(&[worker.role().to_owned()][..]));
        assert_eq!(c.image.as_deref(), Some("sensorfleet:0.1.0"));
        assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
        let (port_name, port) = worker.port();
        let ports = c.ports.as_ref().expect("ports");
        assert_eq!(ports[0].container_port, port);
        assert_eq!(ports[0].name.as_deref(), Some(port_name));
        let live = c
            .liveness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("liveness");
        assert_eq!(live.path.as_deref(), Some("/health/live"));
        assert_eq!(live.port, IntOrString::String("metrics".into()));
        let ready = c
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("readiness");
        assert_eq!(ready.path.as_deref(), Some("/health/ready"));
        // The selector is a subset of the pod labels (the API server refuses otherwise).
        let selector = selector.match_labels.as_ref().expect("selector");
        let pod_labels = template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref())
            .expect("pod labels");
        assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
        assert_eq!(selector["app.kubernetes.io/component"], worker.role());
        // PostgreSQL's URL comes from the Secret, never from the ConfigMap.
        let pg = env(c, "SENSORFLEET_POSTGRES_URL").expect("postgres env");
        let secret = pg
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .expect("secret ref");
        assert_eq!(
            (secret.name.as_str(), secret.key.as_str()),
            ("sensorfleet-postgres", "url")
        );
        let from = c.env_from.as_ref().expect("envFrom");
        assert_eq!(
            from[0].config_map_ref.as_ref().map(|r| r.name.as_str()),
            Some("main-config")
        );
        let redis = env(c, "SENSORFLEET_REDIS_URL").and_then(|e| e.value.as_deref());
        assert_eq!(
            redis,
            Some("redis://:$(SENSORFLEET_REDIS_PASSWORD)@redis:6379")
        );
    }

    // Only the bridge logs in to MQTT, with credentials from the Secret, referenced
    // after they are defined (Kubernetes expands $(VAR) only backwards).
    let bridge = container(&desired, Worker::Bridge);
    let env_names: Vec<_> = bridge
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    let user = env_names
        .iter()
        .position(|n| *n == "SENSORFLEET_MQTT_USERNAME")
        .expect("user");
    let url = env_names
        .iter()
        .position(|n| *n == "SENSORFLEET_MQTT_URL")
        .expect("url");
    assert!(user < url);
    assert_eq!(
        env(bridge, "SENSORFLEET_MQTT_URL").and_then(|e| e.value.as_deref()),
        Some("mqtt://$(SENSORFLEET_MQTT_USERNAME):$(SENSORFLEET_MQTT_PASSWORD)@mosquitto:1883")
    );
    assert!(
        env(
            container(&desired, Worker::Processor),
            "SENSORFLEET_MQTT_PASSWORD"
        )
        .is_none()
    );

    let resources = bridge.resources.as_ref().expect("resources");
    assert_eq!(
        resources.requests.as_ref().map(|r| r["cpu"].0.as_str()),
        Some("250m")
    );
    assert_eq!(resources.limits.as_ref().map(|r| r.len()), Some(1));
    // A worker the Pipeline gives no resources gets the defaults: requests and a memory
    // limit, no CPU limit.
    let defaults = container(&desired, Worker::Processor)
        .resources
        .as_ref()
        .expect("default resources");
    let requests = defaults.requests.as_ref().expect("requests");
    assert_eq!(
        (requests["cpu"].0.as_str(), requests["memory"].0.as_str()),
        ("100m", "128Mi")
    );
    let limits = defaults.limits.as_ref().expect("limits");
    assert_eq!(limits.keys().collect::<Vec<_>>(), ["memory"]);

    let config = desired.config_map.data.as_ref().expect("data");
    let expected: BTreeMap<&str, &str> = BTreeMap::from([
        ("SENSORFLEET_MQTT_URL", "mqtt://mosquitto:1883"),
        (
            "SENSORFLEET_KAFKA_URL",
            "kafka://kafka:9092?readings_topic=sensor-readings&dead_letter_topic=sensor-readings-dlq",
        ),
        (
            "SENSORFLEET_INFLUX_URL",
            "influxs://influxdb:8086?db=sensors",
        ),
        ("SENSORFLEET_REDIS_URL", "redis://redis:6379"),
        ("SENSORFLEET_WINDOW", "5m"),
        ("SENSORFLEET_MOVING_AVERAGE", "10"),
        ("SENSORFLEET_PROCESSOR_GROUP", "main-processor"),
        ("SENSORFLEET_METRICS_ADDR", "0.0.0.0:9090"),
        ("SENSORFLEET_HTTP_ADDR", "0.0.0.0:8080"),
    ]);
    for (key, value) in expected {
        assert_eq!(config.get(key).map(String::as_str), Some(value), "{key}");
    }
    assert!(
        config
            .values()
            .all(|v| !v.contains("s3cret") && !v.contains('@')),
        "no credentials in the ConfigMap"
    );

    let api_service = desired.services[2].spec.as_ref().expect("service spec");
    let port = &api_service.ports.as_ref().expect("ports")[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("http"), 8080));

    let ingress = desired
        .ingress
        .as_ref()
        .and_then(|i| i.spec.as_ref())
        .expect("ingress");
    assert_eq!(ingress.ingress_class_name.as_deref(), Some("nginx"));
    let rule = &ingress.rules.as_ref().expect("rules")[0];
    assert_eq!(rule.host.as_deref(), Some("iot.example.com"));
    let backend = rule.http.as_ref().expect("http").paths[0]
        .backend
        .service
        .as_ref()
        .expect("svc");
    assert_eq!(backend.name, "main-api");
    let tls = &ingress.tls.as_ref().expect("tls")[0];
    assert_eq!(tls.secret_name.as_deref(), Some("iot-tls"));
}

/// Every pod the operator makes, with what runs it: the three workers' templates and the
/// rollup CronJob's.
fn every_pod(desired: &DesiredObjects) -> Vec<(String, &PodTemplateSpec)> {
    let workers = templates(desired)
        .into_iter()
        .zip(Worker::ALL)
        .map(|(t, w)| (w.role().to_owned(), t));
    let rollup = desired
        .rollup
        .iter()
        .filter_map(|c| c.spec.job_template.spec.as_ref())
        .map(|j| ("rollup".to_owned(), &j.template));
    workers.chain(rollup).collect()
}

#[test]
fn every_pod_is_hardened_and_has_no_service_account_token() {
    for fixture_name in ["pipeline-full.yaml", "pipeline-minimal.yaml"] {
        let desired = build(&fixture(fixture_name), 3);
        let pods = every_pod(&desired);
        assert_eq!(
            pods.len(),
            4,
            "{fixture_name}: three workers and the rollup"
        );
        for (role, template) in pods {
            let pod = template.spec.as_ref().expect("pod spec");
            let what = format!("{fixture_name}: {role}");
            assert_eq!(pod.automount_service_account_token, Some(false), "{what}");
            let security = pod.security_context.as_ref().expect("pod security");
            assert_eq!(security.run_as_non_root, Some(true), "{what}");
            assert!(security.run_as_user.is_some_and(|uid| uid > 0), "{what}");
            assert_eq!(
                security.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
                Some("RuntimeDefault"),
                "{what}"
            );
            let c = &pod.containers[0];
            let security = c.security_context.as_ref().expect("container security");
            assert_eq!(security.allow_privilege_escalation, Some(false), "{what}");
            assert_eq!(security.read_only_root_filesystem, Some(true), "{what}");
            assert_eq!(
                security.capabilities.as_ref().and_then(|c| c.drop.clone()),
                Some(vec!["ALL".to_owned()]),
                "{what}"
            );
            // The one writable place is the emptyDir on /tmp (the dead-letter spool); a
            // private CA mounts read-only.
            let mounts = c.volume_mounts.as_ref().expect("mounts");
            assert_eq!(mounts[0].mount_path, "/tmp", "{what}");
            assert!(
                mounts[1..].iter().all(|m| m.read_only == Some(true)),
                "{what}: {mounts:?}"
            );
            let volume = pod
                .volumes
                .iter()
                .flatten()
                .find(|v| v.name == mounts[0].name)
                .expect("the mounted volume");
            assert!(volume.empty_dir.is_some(), "{what}");
            let resources = c.resources.as_ref().expect("resources");
            assert!(
                resources
                    .limits
                    .as_ref()
                    .is_some_and(|l| l.contains_key("memory")),
                "{what}: a memory limit"
            );
        }
    }
}

#[test]
fn the_rollup_runs_hourly_from_the_pipeline_and_can_be_turned_off() {
    let full = build(&fixture("pipeline-full.yaml"), 3);
    let cron = full.rollup.as_ref().expect("rollup");
    assert_eq!(cron.metadata.name.as_deref(), Some("main-rollup"));
    let spec = &cron.spec;
    assert_eq!(spec.schedule, "15 * * * *");
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    let pod = spec
        .job_template
        .spec
        .as_ref()
        .and_then(|j| j.template.spec.as_ref())
        .expect("pod");
    assert_eq!(pod.restart_policy.as_deref(), Some("OnFailure"));
    let c = &pod.containers[0];
    assert_eq!(
        c.args.as_deref(),
        Some(&["rollup".to_owned(), "--hours".to_owned(), "3".to_owned()][..])
    );
    assert_eq!(
        c.env_from
            .as_ref()
            .and_then(|f| f[0].config_map_ref.as_ref())
            .map(|r| r.name.as_str()),
        Some("main-config"),
        "the time series' URL from the shared config"
    );
    let secrets: Vec<_> = c
        .env
        .iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e.name.as_str(),
                e.value_from.as_ref()?.secret_key_ref.as_ref()?,
            ))
        })
        .map(|(name, from)| (name, from.name.as_str(), from.key.as_str()))
        .collect();
    assert_eq!(
        secrets,
        [("SENSORFLEET_INFLUX_TOKEN", "influx-token", "token")],
        "only the time series' token"
    );

    let minimal = build(&fixture("pipeline-minimal.yaml"), 3);
    let spec = &minimal.rollup.as_ref().expect("default").spec;
    assert_eq!(spec.schedule, "7 * * * *");

    let mut off = fixture("pipeline-minimal.yaml");
    off.spec.rollup.enabled = false;
    assert!(build(&off, 3).rollup.is_none());
}

#[test]
fn the_api_gets_its_token_rate_limit_and_autoscaler_and_no_other_role_does() {
    let desired = build(&fixture("pipeline-full.yaml"), 3);
    let api = container(&desired, Worker::Api);
    let token = env(api, "SENSORFLEET_API_TOKEN")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.secret_key_ref.as_ref())
        .expect("the token from its Secret");
    assert_eq!(
        (token.name.as_str(), token.key.as_str()),
        ("api-token", "token")
    );
    for (var, secret, key) in [
        ("SENSORFLEET_API_KEYS", "api-keys", "keys"),
        ("SENSORFLEET_JWT_SECRET", "api-jwt", "secret"),
    ] {
        let from = env(api, var)
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.secret_key_ref.as_ref())
            .unwrap_or_else(|| panic!("{var} from its Secret"));
        assert_eq!((from.name.as_str(), from.key.as_str()), (secret, key));
    }
    let plain_env = [
        ("SENSORFLEET_RATE_LIMIT", "50"),
        ("SENSORFLEET_JWT_JWKS_URL", "https://idp.example.com/jwks"),
        ("SENSORFLEET_JWT_ISSUER", "https://idp.example.com"),
        ("SENSORFLEET_JWT_AUDIENCE", "sensorfleet"),
        ("SENSORFLEET_JWT_ROLE_CLAIM", "groups"),
        (
            "SENSORFLEET_ALLOWED_ORIGINS",
            "https://grafana.example.com,https://ops.example.com",
        ),
        ("SENSORFLEET_CLIENT_IP_HEADER", "x-forwarded-for"),
    ];
    for (var, value) in plain_env {
        assert_eq!(
            env(api, var).and_then(|e| e.value.as_deref()),
            Some(value),
            "{var}"
        );
    }
    // The InfluxDB token goes to the roles that use the time series, and to them only.
    for worker in [Worker::Bridge, Worker::Api] {
        let from = env(container(&desired, worker), "SENSORFLEET_INFLUX_TOKEN")
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.secret_key_ref.as_ref())
            .map(|s| (s.name.as_str(), s.key.as_str()));
        assert_eq!(from, Some(("influx-token", "token")), "{worker:?}");
    }
    assert!(
        env(
            container(&desired, Worker::Processor),
            "SENSORFLEET_INFLUX_TOKEN"
        )
        .is_none()
    );
    let auth_vars = [
        "SENSORFLEET_API_TOKEN",
        "SENSORFLEET_API_KEYS",
        "SENSORFLEET_JWT_SECRET",
    ];
    for worker in [Worker::Bridge, Worker::Processor] {
        let c = container(&desired, worker);
        for var in auth_vars.iter().chain(plain_env.iter().map(|(v, _)| v)) {
            assert!(env(c, var).is_none(), "{worker:?} gets {var}");
        }
    }
    let config = desired.config_map.data.as_ref().expect("data");
    assert!(
        config.keys().all(|k| !auth_vars.contains(&k.as_str())),
        "no credential goes in the ConfigMap"
    );
    // The probes answer on the ops port, which needs no credential; the Service and the
    // Ingress keep the API's own port.
    let ports: Vec<_> = api
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.as_deref(), p.container_port))
        .collect();
    assert_eq!(ports, [(Some("http"), 8080), (Some("metrics"), 9090)]);
    for probe in [&api.liveness_probe, &api.readiness_probe] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("http probe");
        assert_eq!(get.port, IntOrString::String("metrics".into()));
    }

    let hpa = desired.autoscaler.as_ref().expect("autoscaler");
    let spec = &hpa.spec;
    assert_eq!(spec.scale_target_ref.kind, "Deployment");
    assert_eq!(spec.scale_target_ref.name, "main-api");
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 6));
    let metric = &spec.metrics.as_ref().expect("metrics")[0];
    let target = &metric.resource.as_ref().expect("resource").target;
    assert_eq!(target.average_utilization, Some(60));

    let minimal = build(&fixture("pipeline-minimal.yaml"), 3);
    assert!(minimal.autoscaler.is_none());
    assert!(env(container(&minimal, Worker::Api), "SENSORFLEET_API_TOKEN").is_none());
    assert!(env(container(&minimal, Worker::Api), "SENSORFLEET_RATE_LIMIT").is_none());
}

#[test]
fn autoscaling_and_rollup_settings_are_validated() {
    let mut pipeline = fixture("pipeline-full.yaml");
    let scaling = pipeline.spec.api.autoscaling.as_mut().expect("autoscaling");
    scaling.min_replicas = 7;
    pipeline.spec.rollup.schedule = "hourly".into();
    pipeline.spec.api.rate_limit = Some(f64::NAN);
    let problems = sensorfleet_operator::validate::pipeline(&pipeline.spec);
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.api.rateLimit",
            "spec.api.autoscaling.minReplicas",
            "spec.rollup.schedule"
        ],
        "{problems:?}"
    );
}

#[test]
fn the_minimal_pipeline_gets_defaults_and_no_ingress() {
    let pipeline = fixture("pipeline-minimal.yaml");
    assert!(sensorfleet_operator::validate::pipeline(&pipeline.spec).is_empty());
    let desired = build(&pipeline, 3);
    assert!(desired.ingress.is_none());
    let replicas: Vec<_> = std::iter::once(desired.bridge.spec.replicas)
        .chain(desired.deployments.iter().map(|d| d.spec.replicas))
        .collect();
    assert_eq!(replicas, [Some(1), Some(3), Some(1)]);
    let config = desired.config_map.data.as_ref().expect("data");
    assert_eq!(
        config["SENSORFLEET_INFLUX_URL"],
        "influx://influx:8086?db=sensors"
    );
    assert_eq!(
        config["SENSORFLEET_KAFKA_URL"],
        "kafka://kafka-0:9092,kafka-1:9092?readings_topic=sensor-readings&dead_letter_topic=sensor-readings-dlq"
    );
    let bridge = container(&desired, Worker::Bridge);
    assert!(env(bridge, "SENSORFLEET_MQTT_USERNAME").is_none());
    assert!(
        env(bridge, "SENSORFLEET_REDIS_URL").is_none(),
        "the ConfigMap's URL is used"
    );
    let pg = env(bridge, "SENSORFLEET_POSTGRES_URL")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.secret_key_ref.as_ref())
        .expect("secret ref");
    assert_eq!((pg.name.as_str(), pg.key.as_str()), ("pg", "dsn"));
    assert!(
        container(&desired, Worker::Bridge)
            .image_pull_policy
            .is_none()
    );
}

#[test]
fn a_config_change_rolls_the_workers_and_a_replica_change_does_not() {
    let pipeline = fixture("pipeline-full.yaml");
    // Every worker carries the same hash: a config change rolls all three.
    let hash = |d: &DesiredObjects| {
        let hashes: Vec<String> = templates(d)
            .iter()
            .map(|t| {
                t.metadata
                    .as_ref()
                    .and_then(|m| m.annotations.as_ref())
                    .map(|a| a[CONFIG_HASH_ANNOTATION].clone())
                    .expect("hash annotation")
            })
            .collect();
        assert_eq!(hashes.len(), 3);
        assert!(hashes.iter().all(|h| *h == hashes[0]), "{hashes:?}");
        hashes[0].clone()
    };
    let before = build(&pipeline, 5);
    assert_eq!(
        hash(&before),
        hash(&build(&pipeline, 9)),
        "scaling is not a config change"
    );
    assert_eq!(before, build(&pipeline, 5), "the builder is deterministic");
    let mut edited = pipeline.clone();
    edited.spec.processor.window = "10m".into();
    assert_ne!(hash(&before), hash(&build(&edited, 5)));
}

#[test]
fn a_pipeline_not_read_from_the_server_is_refused() {
    let mut pipeline = fixture("pipeline-minimal.yaml");
    pipeline.metadata.uid = None;
    let replicas = Replicas {
        bridge: 1,
        processor: 1,
        api: 1,
    };
    assert!(pipeline_objects(&pipeline, replicas).is_err());
}

#[test]
fn fleets_from_fixtures_drive_partitions_and_processors() {
    let pipeline = fixture("pipeline-full.yaml");
    let fleets: Vec<sensorfleet_model::SensorFleetSpec> = [
        "deviceType: t\ngenerate: {count: 5000, idPrefix: a-}",
        "deviceType: t\ngenerate: {count: 45000, idPrefix: b-}\ndevices: [{id: x}]",
    ]
    .iter()
    .map(|yaml| serde_yaml::from_str(yaml).expect("fleet"))
    .collect();
    let declared = partitions::declared_devices(&fleets);
    assert_eq!(declared, 50_001);
    let plan = partitions::plan(declared, &pipeline.spec.kafka, 3);
    assert_eq!(plan.target, 51);
    assert_eq!(
        partitions::processor_replicas(plan.target, &pipeline.spec.processor),
        16
    );
}

/// The bridge is a StatefulSet whose pods take their MQTT client id from their name
/// (`<pipeline>-bridge-<ordinal>`): the same id after every restart and rollout, so the
/// broker's persistent session and the messages queued in it are taken up again.
#[test]
fn the_bridge_is_a_stateful_set_and_its_client_id_is_the_stable_pod_name() {
    let pipeline = fixture("pipeline-full.yaml");
    let desired = build(&pipeline, 5);
    let bridge = &desired.bridge;
    assert_eq!(bridge.metadata.name.as_deref(), Some("main-bridge"));
    let spec = &bridge.spec;
    assert_eq!(spec.service_name.as_deref(), Some("main-bridge"));
    assert_eq!(
        desired.services[0].metadata.name.as_deref(),
        Some("main-bridge"),
        "the StatefulSet's serviceName is the bridge's Service"
    );
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    assert_eq!(
        spec.update_strategy
            .as_ref()
            .and_then(|u| u.type_.as_deref()),
        Some("RollingUpdate")
    );
    assert!(
        spec.volume_claim_templates.is_none(),
        "the bridge keeps no state on disk: its session is on the broker"
    );
    let id = env(
        container(&desired, Worker::Bridge),
        "SENSORFLEET_BRIDGE_CLIENT_ID",
    )
    .expect("the client id");
    assert_eq!(id.value, None);
    assert_eq!(
        id.value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str()),
        Some("metadata.name"),
        "a StatefulSet's pod name is <name>-<ordinal>, stable across restarts"
    );
    // The share group is the pipeline's, so all ordinals share the one stream.
    assert_eq!(
        desired.config_map.data.as_ref().expect("data")["SENSORFLEET_BRIDGE_GROUP"],
        "main-bridge"
    );
    // Only the bridge is a StatefulSet: the processor and the API keep no MQTT session.
    let kinds: Vec<_> = desired
        .deployments
        .iter()
        .map(|d| d.metadata.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(kinds, ["main-processor", "main-api"]);
    for worker in [Worker::Processor, Worker::Api] {
        assert!(env(container(&desired, worker), "SENSORFLEET_BRIDGE_CLIENT_ID").is_none());
    }
}

#[test]
fn a_private_ca_mounts_in_every_worker_and_the_rollup_and_ssl_cert_file_names_it() {
    let full = build(&fixture("pipeline-full.yaml"), 3);
    let mut pods: Vec<_> = Worker::ALL
        .iter()
        .map(|w| (w.role(), pod_of(&full, *w)))
        .collect();
    let rollup = full.rollup.as_ref().expect("rollup");
    let rollup_pod = rollup
        .spec
        .job_template
        .spec
        .as_ref()
        .and_then(|j| j.template.spec.clone())
        .expect("pod");
    pods.push(("rollup", rollup_pod));
    for (role, pod) in &pods {
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "ca")
            .unwrap_or_else(|| panic!("{role}: no ca volume"));
        let secret = volume.secret.as_ref().expect("from a Secret");
        assert_eq!(secret.secret_name.as_deref(), Some("private-ca"), "{role}");
        let c = &pod.containers[0];
        let mount = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == "ca")
            .unwrap_or_else(|| panic!("{role}: not mounted"));
        assert_eq!(mount.read_only, Some(true), "{role}");
        assert_eq!(
            env(c, "SSL_CERT_FILE").and_then(|e| e.value.as_deref()),
            Some("/etc/sensorfleet/ca/ca.crt"),
            "{role}"
        );
    }
    let minimal = build(&fixture("pipeline-minimal.yaml"), 3);
    let c = &pod_of(&minimal, Worker::Api).containers[0];
    assert!(
        env(c, "SSL_CERT_FILE").is_none(),
        "no CA: the image's bundle"
    );
}

#[test]
fn influxdb_credentials_reach_only_the_roles_that_use_the_time_series_in_the_url_they_read() {
    let mut pipeline = fixture("pipeline-full.yaml");
    pipeline.spec.influxdb.token_secret = None;
    pipeline.spec.influxdb.credentials_secret = Some("influx-user".into());
    assert!(sensorfleet_operator::validate::pipeline(&pipeline.spec).is_empty());
    let desired = build(&pipeline, 3);
    for worker in [Worker::Bridge, Worker::Api] {
        let c = container(&desired, worker);
        assert_eq!(
            env(c, "SENSORFLEET_INFLUX_URL").and_then(|e| e.value.as_deref()),
            Some(
                "influxs://$(SENSORFLEET_INFLUX_USERNAME):$(SENSORFLEET_INFLUX_PASSWORD)@influxdb:8086?db=sensors"
            ),
            "{worker:?}: TLS kept, credentials from the Secret"
        );
        let names: Vec<_> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
        let user = names
            .iter()
            .position(|n| *n == "SENSORFLEET_INFLUX_USERNAME");
        let url = names.iter().position(|n| *n == "SENSORFLEET_INFLUX_URL");
        assert!(user < url, "{worker:?}: $(VAR) refers back only");
    }
    assert!(
        env(
            container(&desired, Worker::Processor),
            "SENSORFLEET_INFLUX_PASSWORD"
        )
        .is_none()
    );
    let config = desired.config_map.data.as_ref().expect("data");
    assert!(
        !config["SENSORFLEET_INFLUX_URL"].contains('@'),
        "no credential in the ConfigMap"
    );

    pipeline.spec.influxdb.token_secret = Some("influx-token".into());
    let problems = sensorfleet_operator::validate::pipeline(&pipeline.spec);
    assert!(format!("{problems:?}").contains("not both"), "{problems:?}");
    pipeline.spec.influxdb.token_secret = None;
    pipeline.spec.influxdb.url = "https://svc:pw@influxdb:8086".into();
    let problems = sensorfleet_operator::validate::pipeline(&pipeline.spec);
    assert!(
        format!("{problems:?}").contains("credentialsSecret"),
        "{problems:?}"
    );
}
