//! Build: the Kubernetes objects a Pipeline wants, as pure functions of the Pipeline and
//! the partition plan. Nothing here talks to a server; the reconciler applies what these
//! return with server-side apply.
//!
//! Every worker pod is hardened the same way (non-root, read-only root filesystem with
//! an emptyDir on `/tmp`, no capabilities, RuntimeDefault seccomp, no service-account
//! token) and gets requests and a memory limit unless the Pipeline gives its own.
//!
//! The bridge is a StatefulSet, the processor and the API are Deployments. The bridge's
//! MQTT client id is its pod name, and a StatefulSet's pod names are stable
//! (`<pipeline>-bridge-<ordinal>`): a restarted or rolled bridge comes back under the id
//! whose persistent session the broker kept, and takes the QoS 1 messages the shared
//! subscription dealt to it while it was away. A Deployment's pods get new names, so
//! every rollout would leave sessions nobody reads, with their messages queued for ever.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec,
    Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use sensorfleet_model::Pipeline;
use sensorfleet_model::crd::pipeline::{
    AutoscalingSpec, PipelineSpec, ResourceAmounts, ResourcesSpec,
};

use crate::Error;

/// Port of `/metrics` and `/health/*` on the bridge and processor.
pub const METRICS_PORT: i32 = 9090;
/// Port of the API (which serves `/metrics` and `/health/*` too).
pub const API_PORT: i32 = 8080;
/// Pod-template annotation carrying a hash of the rendered config, so a changed
/// ConfigMap rolls the workers (env from a ConfigMap is read only at start).
pub const CONFIG_HASH_ANNOTATION: &str = "iot.sensorfleet.dev/config-hash";
/// `app.kubernetes.io/managed-by` of everything the operator creates.
pub const MANAGED_BY: &str = "sensorfleet-operator";
/// The user and group every worker runs as (the operator's own, in the chart): not root,
/// whatever user the image names.
pub const WORKER_UID: i64 = 10001;
/// The one writable place of a worker (its root filesystem is read-only): an emptyDir
/// for the bridge's dead-letter spool (`SENSORFLEET_SPOOL_DIR` unset: the temporary
/// directory). It lives as long as the pod, across container restarts.
pub const SCRATCH_DIR: &str = "/tmp";
/// Where `spec.caSecret` mounts in every worker (read-only); `SSL_CERT_FILE` names its
/// `ca.crt`.
pub const CA_DIR: &str = "/etc/sensorfleet/ca";

/// One kind of worker: a workload (the bridge's a StatefulSet, the others' a Deployment)
/// and a Service of the one image, `args: [role]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worker {
    /// `sensorfleet bridge`.
    Bridge,
    /// `sensorfleet processor`.
    Processor,
    /// `sensorfleet api`.
    Api,
}

impl Worker {
    /// All three, in the order they are applied.
    pub const ALL: [Worker; 3] = [Worker::Bridge, Worker::Processor, Worker::Api];

    /// The role argument and the `app.kubernetes.io/component` label.
    pub fn role(self) -> &'static str {
        match self {
            Self::Bridge => "bridge",
            Self::Processor => "processor",
            Self::Api => "api",
        }
    }

    /// Name and number of the port its Service exposes: the API's own for the API,
    /// `/metrics` and `/health/*` for the others.
    pub fn port(self) -> (&'static str, i32) {
        match self {
            Self::Api => ("http", API_PORT),
            _ => ("metrics", METRICS_PORT),
        }
    }

    /// The ports of its container: the Service's and, for the API, the ops port that
    /// answers `/metrics` and the probes without the API's credentials.
    pub fn container_ports(self) -> Vec<(&'static str, i32)> {
        match self {
            Self::Api => vec![("http", API_PORT), ("metrics", METRICS_PORT)],
            _ => vec![("metrics", METRICS_PORT)],
        }
    }

    /// Name of its StatefulSet or Deployment, and of its Service: `<pipeline>-<role>`.
    pub fn object_name(self, pipeline: &str) -> String {
        format!("{pipeline}-{}", self.role())
    }
}

/// Name of the Pipeline's ConfigMap.
pub fn config_map_name(pipeline: &str) -> String {
    format!("{pipeline}-config")
}

/// Everything a Pipeline wants to exist, for one apply.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredObjects {
    /// The rendered worker config.
    pub config_map: ConfigMap,
    /// The bridge: a StatefulSet, so each replica keeps its MQTT client id.
    pub bridge: StatefulSet,
    /// Processor and api, in [`Worker::ALL`] order.
    pub deployments: Vec<Deployment>,
    /// One Service per worker, in [`Worker::ALL`] order.
    pub services: Vec<Service>,
    /// The API's Ingress, when `spec.api.ingress` is set.
    pub ingress: Option<Ingress>,
    /// The API's HorizontalPodAutoscaler, when `spec.api.autoscaling` is set.
    pub autoscaler: Option<HorizontalPodAutoscaler>,
    /// The hourly rollup, unless `spec.rollup.enabled` is false.
    pub rollup: Option<CronJob>,
}

/// Replicas of each worker, decided by the reconciler (the processor's follow the
/// partitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replicas {
    /// Bridge replicas.
    pub bridge: i32,
    /// Processor replicas.
    pub processor: i32,
    /// API replicas.
    pub api: i32,
}

impl Replicas {
    /// Replicas of one worker.
    pub fn of(&self, worker: Worker) -> i32 {
        match worker {
            Worker::Bridge => self.bridge,
            Worker::Processor => self.processor,
            Worker::Api => self.api,
        }
    }
}

/// The labels Kubernetes recommends, for one component of one pipeline.
pub fn labels(pipeline: &str, component: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(pipeline, component);
    labels.insert("app.kubernetes.io/part-of".into(), "sensorfleet".into());
    labels.insert("app.kubernetes.io/managed-by".into(), MANAGED_BY.into());
    labels
}

/// The subset of [`labels`] a selector matches on; it never changes for a Deployment,
/// since a Deployment's selector is immutable.
pub fn selector_labels(pipeline: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "sensorfleet".into()),
        ("app.kubernetes.io/instance".into(), pipeline.into()),
        ("app.kubernetes.io/component".into(), component.into()),
    ])
}

/// The worker settings every role reads from its environment (`SENSORFLEET_*`), without
/// secrets: those come from Secrets in [`secret_env`].
pub fn worker_config(name: &str, spec: &PipelineSpec) -> BTreeMap<String, String> {
    let kafka = &spec.kafka;
    BTreeMap::from([
        ("SENSORFLEET_MQTT_URL".into(), spec.mqtt.url.clone()),
        (
            "SENSORFLEET_KAFKA_URL".into(),
            format!(
                "kafka://{}?readings_topic={topic}&dead_letter_topic={topic}-dlq",
                kafka.bootstrap_servers,
                topic = kafka.topic
            ),
        ),
        (
            "SENSORFLEET_INFLUX_URL".into(),
            influx_url(&spec.influxdb.url, &spec.influxdb.database),
        ),
        ("SENSORFLEET_REDIS_URL".into(), spec.redis.url.clone()),
        ("SENSORFLEET_WINDOW".into(), spec.processor.window.clone()),
        (
            "SENSORFLEET_MOVING_AVERAGE".into(),
            spec.processor.moving_average.to_string(),
        ),
        // One consumer group and one shared subscription per pipeline, so two pipelines
        // on one Kafka or broker do not steal each other's messages.
        (
            "SENSORFLEET_PROCESSOR_GROUP".into(),
            format!("{name}-processor"),
        ),
        ("SENSORFLEET_BRIDGE_GROUP".into(), format!("{name}-bridge")),
        (
            "SENSORFLEET_METRICS_ADDR".into(),
            format!("0.0.0.0:{METRICS_PORT}"),
        ),
        (
            "SENSORFLEET_HTTP_ADDR".into(),
            format!("0.0.0.0:{API_PORT}"),
        ),
        ("SENSORFLEET_LOG_FORMAT".into(), "json".into()),
    ])
}

/// `http://host:8086[/]` and a database → `influx://host:8086?db=<database>`, the URL the
/// workers take; `https://` becomes `influxs://` (TLS), never plain text.
pub fn influx_url(http_url: &str, database: &str) -> String {
    let (scheme, rest) = http_url.split_once("://").unwrap_or(("http", http_url));
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let scheme = if scheme.eq_ignore_ascii_case("https") {
        "influxs"
    } else {
        "influx"
    };
    format!("{scheme}://{authority}?db={database}")
}

/// Container env that comes from Secrets, in an order where `$(VAR)` references only
/// point backwards (Kubernetes expands them only then): the credentials first, then the
/// URLs built from them, which override the ConfigMap's credential-free URLs.
pub fn secret_env(worker: Worker, spec: &PipelineSpec) -> Vec<EnvVar> {
    let mut env = vec![from_secret(
        "SENSORFLEET_POSTGRES_URL",
        &spec.postgres.url_secret,
        &spec.postgres.url_key,
    )];
    if let Some(secret) = &spec.redis.password_secret {
        env.push(from_secret(
            "SENSORFLEET_REDIS_PASSWORD",
            secret,
            "password",
        ));
        env.push(plain(
            "SENSORFLEET_REDIS_URL",
            &with_userinfo(&spec.redis.url, ":$(SENSORFLEET_REDIS_PASSWORD)"),
        ));
    }
    if worker != Worker::Processor {
        env.extend(influx_auth(spec));
    }
    if worker == Worker::Api {
        let auth = spec.api.auth.clone().unwrap_or_default();
        let jwt = auth.jwt.unwrap_or_default();
        for (var, secret, key) in [
            ("SENSORFLEET_API_TOKEN", &spec.api.token_secret, "token"),
            ("SENSORFLEET_API_KEYS", &auth.api_keys_secret, "keys"),
            ("SENSORFLEET_JWT_SECRET", &jwt.secret, "secret"),
        ] {
            if let Some(secret) = secret {
                env.push(from_secret(var, secret, key));
            }
        }
    }
    if worker == Worker::Bridge {
        if let Some(secret) = &spec.mqtt.credentials_secret {
            env.push(from_secret("SENSORFLEET_MQTT_USERNAME", secret, "username"));
            env.push(from_secret("SENSORFLEET_MQTT_PASSWORD", secret, "password"));
            env.push(plain(
                "SENSORFLEET_MQTT_URL",
                &with_userinfo(
                    &spec.mqtt.url,
                    "$(SENSORFLEET_MQTT_USERNAME):$(SENSORFLEET_MQTT_PASSWORD)",
                ),
            ));
        }
        // Each replica needs its own MQTT client id (the broker keeps one session per
        // id), the same one after every restart and rollout: the pod name of a
        // StatefulSet, `<pipeline>-bridge-<ordinal>`, is both.
        env.push(EnvVar {
            name: "SENSORFLEET_BRIDGE_CLIENT_ID".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    env
}

/// InfluxDB's credentials, for the roles that read or write the time series (the
/// bridge, the API, a rollup run; the processor never does): a token, or a user and
/// password in the URL's user part (InfluxDB 1.x Basic auth).
fn influx_auth(spec: &PipelineSpec) -> Vec<EnvVar> {
    let influx = &spec.influxdb;
    let mut env = Vec::new();
    if let Some(secret) = &influx.token_secret {
        env.push(from_secret("SENSORFLEET_INFLUX_TOKEN", secret, "token"));
    }
    if let Some(secret) = &influx.credentials_secret {
        env.push(from_secret(
            "SENSORFLEET_INFLUX_USERNAME",
            secret,
            "username",
        ));
        env.push(from_secret(
            "SENSORFLEET_INFLUX_PASSWORD",
            secret,
            "password",
        ));
        env.push(plain(
            "SENSORFLEET_INFLUX_URL",
            &with_userinfo(
                &influx_url(&influx.url, &influx.database),
                "$(SENSORFLEET_INFLUX_USERNAME):$(SENSORFLEET_INFLUX_PASSWORD)",
            ),
        ));
    }
    env
}

fn with_userinfo(url: &str, userinfo: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{userinfo}@{rest}"),
        None => url.to_owned(),
    }
}

fn plain(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// FNV-1a over the config: stable across Rust versions and operator restarts (unlike
/// `DefaultHasher`), so a restarted operator does not roll every worker.
pub fn config_hash(config: &BTreeMap<String, String>, spec: &PipelineSpec) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes.iter().chain(&[0]) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (key, value) in config {
        feed(key.as_bytes());
        feed(value.as_bytes());
    }
    // Which Secrets are referenced is config too (their contents are not read here).
    feed(spec.postgres.url_secret.as_bytes());
    feed(spec.postgres.url_key.as_bytes());
    for secret in [
        &spec.mqtt.credentials_secret,
        &spec.redis.password_secret,
        &spec.api.token_secret,
    ] {
        feed(secret.as_deref().unwrap_or_default().as_bytes());
    }
    format!("{hash:016x}")
}

/// What a worker gets when its Pipeline says nothing: a request the scheduler can plan
/// with (and the API's autoscaler needs, as it scales on CPU use over the request) and a
/// memory limit, so a leak is a restarted pod rather than a starved node. No CPU limit:
/// throttling a worker that has the CPU to spare only adds latency.
fn default_resources() -> ResourcesSpec {
    let amounts = |cpu: Option<&str>, memory: &str| ResourceAmounts {
        cpu: cpu.map(str::to_owned),
        memory: Some(memory.to_owned()),
    };
    ResourcesSpec {
        requests: Some(amounts(Some("100m"), "128Mi")),
        limits: Some(amounts(None, "1Gi")),
    }
}

/// The Pipeline's resources of a worker, or [`default_resources`] when it gives none.
fn resources(spec: Option<&ResourcesSpec>) -> ResourceRequirements {
    let amounts = |a: Option<&ResourceAmounts>| {
        let a = a?;
        let map: BTreeMap<String, Quantity> = [("cpu", &a.cpu), ("memory", &a.memory)]
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_owned(), Quantity(v.clone()))))
            .collect();
        (!map.is_empty()).then_some(map)
    };
    let spec = spec.cloned().unwrap_or_else(default_resources);
    ResourceRequirements {
        requests: amounts(spec.requests.as_ref()),
        limits: amounts(spec.limits.as_ref()),
        ..Default::default()
    }
}

/// Non-root, no capabilities, no privilege escalation, a read-only root filesystem and
/// the runtime's default seccomp profile: what the `restricted` Pod Security Standard
/// asks, for the container.
fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The pod's half of [`container_security`].
fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(WORKER_UID),
        run_as_group: Some(WORKER_UID),
        fs_group: Some(WORKER_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A worker's pod: hardened, without the service-account token (no worker talks to the
/// API server), with the scratch emptyDir.
fn hardened_pod(
    mut container: Container,
    restart_policy: Option<&str>,
    ca_secret: Option<&str>,
) -> PodSpec {
    let mut mounts = vec![VolumeMount {
        name: "scratch".into(),
        mount_path: SCRATCH_DIR.into(),
        ..Default::default()
    }];
    let mut volumes = vec![Volume {
        name: "scratch".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            // The spool's own cap is 64 MiB.
            size_limit: Some(Quantity("128Mi".into())),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let mut env = container.env.take().unwrap_or_default();
    if let Some(secret) = ca_secret {
        mounts.push(VolumeMount {
            name: "ca".into(),
            mount_path: CA_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
        volumes.push(Volume {
            name: "ca".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.into()),
                items: Some(vec![KeyToPath {
                    key: "ca.crt".into(),
                    path: "ca.crt".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
        env.push(plain("SSL_CERT_FILE", &format!("{CA_DIR}/ca.crt")));
    }
    let container = Container {
        security_context: Some(container_security()),
        volume_mounts: Some(mounts),
        env: Some(env),
        ..container
    };
    PodSpec {
        containers: vec![container],
        automount_service_account_token: Some(false),
        security_context: Some(pod_security()),
        restart_policy: restart_policy.map(str::to_owned),
        volumes: Some(volumes),
        ..Default::default()
    }
}

fn probe(path: &str, port: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(port.into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        timeout_seconds: Some(2),
        ..Default::default()
    }
}

/// Identity of the Pipeline the objects belong to.
struct Owner {
    name: String,
    namespace: String,
    reference: OwnerReference,
}

fn owner(pipeline: &Pipeline) -> Result<Owner, Error> {
    let name = pipeline
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingObjectKey("metadata.name"))?;
    let namespace = pipeline
        .meta()
        .namespace
        .clone()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let reference = pipeline
        .controller_owner_ref(&())
        .ok_or(Error::MissingObjectKey("metadata.uid"))?;
    Ok(Owner {
        name,
        namespace,
        reference,
    })
}

impl Owner {
    fn meta(&self, name: String, component: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels(&self.name, component)),
            owner_references: Some(vec![self.reference.clone()]),
            ..Default::default()
        }
    }
}

/// Every object a Pipeline wants, given the replicas the reconciler decided.
///
/// Fails only when the Pipeline lacks a name, namespace or uid (it was not read from
/// the API server): owner references need the uid.
pub fn pipeline_objects(pipeline: &Pipeline, replicas: Replicas) -> Result<DesiredObjects, Error> {
    let owner = owner(pipeline)?;
    let spec = &pipeline.spec;
    let config = worker_config(&owner.name, spec);
    let hash = config_hash(&config, spec);
    let config_map = ConfigMap {
        metadata: owner.meta(config_map_name(&owner.name), "config"),
        data: Some(config),
        ..Default::default()
    };
    let bridge = bridge_stateful_set(&owner, spec, replicas.bridge, &hash);
    let deployments = [Worker::Processor, Worker::Api]
        .iter()
        .map(|&worker| deployment(&owner, spec, worker, replicas.of(worker), &hash))
        .collect();
    let services = Worker::ALL
        .iter()
        .map(|&worker| service(&owner, worker))
        .collect();
    let ingress = spec
        .api
        .ingress
        .as_ref()
        .map(|ingress| api_ingress(&owner, ingress));
    let autoscaler = spec
        .api
        .autoscaling
        .as_ref()
        .map(|scaling| api_autoscaler(&owner, scaling));
    let rollup = spec
        .rollup
        .enabled
        .then(|| rollup_cron_job(&owner, spec, &hash));
    Ok(DesiredObjects {
        config_map,
        bridge,
        deployments,
        services,
        ingress,
        autoscaler,
        rollup,
    })
}

/// Settings only one role reads, as its container's env (the ConfigMap holds what every
/// role shares).
pub fn role_env(worker: Worker, spec: &PipelineSpec) -> Vec<EnvVar> {
    if worker != Worker::Api {
        return Vec::new();
    }
    let auth = spec.api.auth.clone().unwrap_or_default();
    let jwt = auth.jwt.unwrap_or_default();
    let origins = (!auth.allowed_origins.is_empty()).then(|| auth.allowed_origins.join(","));
    let rate = spec
        .api
        .rate_limit
        .filter(|rate| *rate > 0.0)
        .map(|r| r.to_string());
    [
        ("SENSORFLEET_RATE_LIMIT", rate),
        ("SENSORFLEET_JWT_JWKS_URL", jwt.jwks_url),
        ("SENSORFLEET_JWT_ISSUER", jwt.issuer),
        ("SENSORFLEET_JWT_AUDIENCE", jwt.audience),
        ("SENSORFLEET_JWT_ROLE_CLAIM", jwt.role_claim),
        ("SENSORFLEET_ALLOWED_ORIGINS", origins),
        ("SENSORFLEET_CLIENT_IP_HEADER", auth.client_ip_header),
    ]
    .into_iter()
    .filter_map(|(var, value)| Some(plain(var, &value?)))
    .collect()
}

/// The one container of a worker's pods, running `args` (the role and its flags).
fn worker_container(
    owner: &Owner,
    spec: &PipelineSpec,
    name: &str,
    args: Vec<String>,
    env: Vec<EnvVar>,
    wanted: Option<&ResourcesSpec>,
) -> Container {
    Container {
        name: name.into(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_owned()),
        args: Some(args),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: config_map_name(&owner.name),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        env: Some(env),
        resources: Some(resources(wanted)),
        ..Default::default()
    }
}

/// The pod template of one worker: its one container and the labels and config hash.
fn pod_template(
    owner: &Owner,
    spec: &PipelineSpec,
    worker: Worker,
    config_hash: &str,
) -> PodTemplateSpec {
    let wanted = match worker {
        Worker::Bridge => spec.bridge.resources.as_ref(),
        Worker::Processor => spec.processor.resources.as_ref(),
        Worker::Api => spec.api.resources.as_ref(),
    };
    let mut env = secret_env(worker, spec);
    env.extend(role_env(worker, spec));
    let container = Container {
        ports: Some(
            worker
                .container_ports()
                .into_iter()
                .map(|(name, port)| ContainerPort {
                    name: Some(name.into()),
                    container_port: port,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                })
                .collect(),
        ),
        liveness_probe: Some(probe("/health/live", "metrics", 10)),
        readiness_probe: Some(probe("/health/ready", "metrics", 5)),
        ..worker_container(
            owner,
            spec,
            worker.role(),
            vec![worker.role().into()],
            env,
            wanted,
        )
    };
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(&owner.name, worker.role())),
            annotations: Some(BTreeMap::from([(
                CONFIG_HASH_ANNOTATION.to_owned(),
                config_hash.to_owned(),
            )])),
            ..Default::default()
        }),
        spec: Some(hardened_pod(container, None, spec.ca_secret.as_deref())),
    }
}

/// Name of the rollup CronJob: `<pipeline>-rollup`.
pub fn rollup_name(pipeline: &str) -> String {
    format!("{pipeline}-rollup")
}

/// The hourly rollup: `sensorfleet rollup --hours N` on the schedule, one run at a time
/// (`Forbid`: a slow run is not doubled), a failed run retried twice. It reads and
/// writes the time series only: the shared config, no Secret.
fn rollup_cron_job(owner: &Owner, spec: &PipelineSpec, config_hash: &str) -> CronJob {
    let component = "rollup";
    let rollup = &spec.rollup;
    let container = worker_container(
        owner,
        spec,
        component,
        vec![component.into(), "--hours".into(), rollup.hours.to_string()],
        influx_auth(spec),
        None,
    );
    let pod = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(&owner.name, component)),
            annotations: Some(BTreeMap::from([(
                CONFIG_HASH_ANNOTATION.to_owned(),
                config_hash.to_owned(),
            )])),
            ..Default::default()
        }),
        spec: Some(hardened_pod(
            container,
            Some("OnFailure"),
            spec.ca_secret.as_deref(),
        )),
    };
    CronJob {
        metadata: owner.meta(rollup_name(&owner.name), component),
        spec: CronJobSpec {
            schedule: rollup.schedule.clone(),
            concurrency_policy: Some("Forbid".into()),
            successful_jobs_history_limit: Some(1),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: None,
                spec: Some(JobSpec {
                    backoff_limit: Some(2),
                    // A run that hangs (InfluxDB gone) ends before the next is due.
                    active_deadline_seconds: Some(50 * 60),
                    template: pod,
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The API's autoscaler: average CPU over the pods' requests, between min and max.
fn api_autoscaler(owner: &Owner, scaling: &AutoscalingSpec) -> HorizontalPodAutoscaler {
    let name = Worker::Api.object_name(&owner.name);
    HorizontalPodAutoscaler {
        metadata: owner.meta(name.clone(), Worker::Api.role()),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name,
            },
            min_replicas: Some(scaling.min_replicas),
            max_replicas: scaling.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(scaling.target_cpu_percent),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn deployment(
    owner: &Owner,
    spec: &PipelineSpec,
    worker: Worker,
    replicas: i32,
    config_hash: &str,
) -> Deployment {
    let component = worker.role();
    // Under an autoscaler the replicas are its to set: an applied count would fight it.
    let scaled = worker == Worker::Api && spec.api.autoscaling.is_some();
    Deployment {
        metadata: owner.meta(worker.object_name(&owner.name), component),
        spec: DeploymentSpec {
            replicas: (!scaled).then_some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&owner.name, component)),
                ..Default::default()
            },
            template: pod_template(owner, spec, worker, config_hash),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The bridge's StatefulSet. `Parallel`: replicas start and stop together when scaled
/// (one that cannot start does not hold the others back); a rollout still replaces one
/// pod at a time, each coming back under its name and so its MQTT session.
fn bridge_stateful_set(
    owner: &Owner,
    spec: &PipelineSpec,
    replicas: i32,
    config_hash: &str,
) -> StatefulSet {
    let worker = Worker::Bridge;
    let name = worker.object_name(&owner.name);
    StatefulSet {
        metadata: owner.meta(name.clone(), worker.role()),
        spec: StatefulSetSpec {
            replicas: Some(replicas),
            // The bridge's Service; the pods need no DNS names of their own.
            service_name: Some(name),
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                ..Default::default()
            }),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&owner.name, worker.role())),
                ..Default::default()
            },
            template: pod_template(owner, spec, worker, config_hash),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn service(owner: &Owner, worker: Worker) -> Service {
    let (port_name, port) = worker.port();
    Service {
        metadata: owner.meta(worker.object_name(&owner.name), worker.role()),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(&owner.name, worker.role())),
            ports: Some(vec![ServicePort {
                name: Some(port_name.into()),
                port,
                target_port: Some(IntOrString::String(port_name.into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn api_ingress(owner: &Owner, ingress: &sensorfleet_model::crd::pipeline::IngressSpec) -> Ingress {
    let service = Worker::Api.object_name(&owner.name);
    Ingress {
        metadata: owner.meta(service.clone(), "api"),
        spec: Some(IngressSpec {
            ingress_class_name: ingress.class_name.clone(),
            rules: Some(vec![IngressRule {
                host: Some(ingress.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: service,
                                port: Some(ServiceBackendPort {
                                    name: Some("http".into()),
                                    ..Default::default()
                                }),
                            }),
                            ..Default::default()
                        },
                    }],
                }),
            }]),
            tls: ingress.tls_secret.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: Some(vec![ingress.host.clone()]),
                    secret_name: Some(secret.clone()),
                }]
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
