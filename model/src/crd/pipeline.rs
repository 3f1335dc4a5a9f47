//! The `Pipeline` custom resource: where the backends are, how the workers run, and the
//! Kafka topic policy. The operator turns one into a ConfigMap, the bridge's StatefulSet,
//! the processor's and the API's Deployments, a Service each, the rollup CronJob, an
//! optional Ingress and HorizontalPodAutoscaler for the API, and the readings topic.
//!
//! `sensorfleet up` runs its own embedded pipeline and skips these objects.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::PipelineStatus;
use super::{Problem, is_dns_label};
use crate::duration::{DURATION_PATTERN, parse_duration_ms};

/// Largest `kafka.maxPartitions`: beyond this a single topic is better split.
pub const MAX_PARTITIONS: i32 = 10_000;

/// How the backends are reached and the workers run.
#[allow(clippy::duplicated_attributes)] // each printcolumn(...) repeats type_ by design
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[kube(
    group = "iot.sensorfleet.dev",
    version = "v1alpha1",
    kind = "Pipeline",
    namespaced,
    status = "PipelineStatus",
    shortname = "pl",
    category = "sensorfleet",
    derive = "PartialEq",
    doc = "Where SensorFleet's backends are (MQTT, Kafka, InfluxDB, Redis, PostgreSQL), how its bridge, processor and api workers run, and the Kafka topic policy that grows partitions with the declared devices.",
    printcolumn(
        name = "Devices",
        type_ = "integer",
        json_path = ".status.declaredDevices"
    ),
    printcolumn(
        name = "Partitions",
        type_ = "integer",
        json_path = ".status.partitions"
    ),
    printcolumn(
        name = "Processors",
        type_ = "integer",
        json_path = ".status.replicas.processor"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Available",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"WorkersAvailable\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct PipelineSpec {
    /// Container image of every worker, e.g. `sensorfleet:0.1.0` (one image, the role
    /// chosen by its first argument).
    #[schemars(length(min = 1))]
    pub image: String,
    /// Image pull policy of the workers' containers; default: Kubernetes' own (`Always`
    /// for `:latest`, else `IfNotPresent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// The MQTT broker devices publish to.
    pub mqtt: MqttSpec,
    /// The Kafka cluster and the readings topic's partition policy.
    pub kafka: KafkaSpec,
    /// The InfluxDB that keeps the readings' history.
    pub influxdb: InfluxSpec,
    /// The Redis that keeps latest values, health scores and the alert feed.
    pub redis: RedisSpec,
    /// The PostgreSQL that keeps the device registry and alert rules (mirrored from the
    /// SensorFleets and AlertRules by the operator).
    pub postgres: PostgresSpec,
    /// Secret (same namespace) with key `ca.crt`: the CA bundle every worker trusts for
    /// its TLS links (InfluxDB over `https://`, PostgreSQL with `sslmode=verify-full`, a
    /// JWKS URL), for a private CA. Mounted read-only and named by `SSL_CERT_FILE`, it
    /// replaces the image's bundle: include public roots in it if a link needs them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<String>,
    /// The bridge: MQTT → Kafka, InfluxDB, Redis.
    #[serde(default)]
    pub bridge: BridgeSpec,
    /// The processor: windows, anomalies, health and alerts; one replica per partition at
    /// most.
    #[serde(default)]
    pub processor: ProcessorSpec,
    /// The REST + WebSocket API and dashboard.
    #[serde(default)]
    pub api: ApiSpec,
    /// Hourly rollups (min/mean/max per device and field) that history past 48 h reads:
    /// a CronJob running `sensorfleet rollup`.
    #[serde(default)]
    pub rollup: RollupSpec,
    /// While true the operator leaves this Pipeline and its workers as they are.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// When the kubelet pulls the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PullPolicy {
    /// Pull on every container start.
    Always,
    /// Pull only when the node does not have the image (e.g. kind with `kind load`).
    IfNotPresent,
    /// Never pull; the image must be on the node.
    Never,
}

impl PullPolicy {
    /// The name Kubernetes uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// The MQTT broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MqttSpec {
    /// Broker URL without credentials, e.g. `mqtt://mosquitto:1883`, or
    /// `mqtts://mosquitto:8883` for TLS (verified against the image's CA bundle or
    /// `caSecret`; never downgraded to plaintext).
    pub url: String,
    /// Secret (same namespace) with keys `username` and `password` the bridge logs in
    /// with; none: anonymous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// Device identity at the broker: the operator provisions Mosquitto's
    /// dynamic-security plugin from the SensorFleets (one client per declared device,
    /// allowed to publish to its own `sensors/<type>/<id>` only and to connect with its
    /// id as client id; the bridge's user from `credentialsSecret` may only subscribe)
    /// and writes each fleet's credentials to the Secret `<fleet>-device-credentials`.
    /// None: the broker's own configuration decides who may connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_auth: Option<DeviceAuthSpec>,
}

/// How the operator reaches the broker's dynamic-security plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceAuthSpec {
    /// Secret (same namespace) with keys `username` and `password` of a client allowed
    /// to use `$CONTROL/dynamic-security/v1` (the admin `mosquitto_ctrl dynsec init`
    /// made). Only the operator reads it; no worker receives it.
    pub admin_secret: String,
}

/// The Kafka cluster and the readings topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaSpec {
    /// Bootstrap servers, `host:port[,host:port…]`, e.g. `kafka:9092`.
    #[schemars(length(min = 1))]
    pub bootstrap_servers: String,
    /// The readings topic (default `sensor-readings`); alerts go to `sensor-alerts` and
    /// rejects to `<topic>-dlq`.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Declared devices per partition (default 1000): the partition count is
    /// `ceil(declared devices / devicesPerPartition)`, within min and max.
    #[serde(default = "default_devices_per_partition")]
    #[schemars(range(min = 1))]
    pub devices_per_partition: u32,
    /// Fewest partitions of the topic (default 3).
    #[serde(default = "default_min_partitions")]
    #[schemars(range(min = 1))]
    pub min_partitions: i32,
    /// Most partitions of the topic (default 64). Partitions only grow: lowering this
    /// never removes any.
    #[serde(default = "default_max_partitions")]
    #[schemars(range(min = 1, max = 10_000))]
    pub max_partitions: i32,
    /// Replicas of each partition when the topic is created (default 1).
    #[serde(default = "default_replication_factor")]
    #[schemars(range(min = 1))]
    pub replication_factor: i16,
}

/// The InfluxDB (v1 API: `/write`, `/query`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InfluxSpec {
    /// Base URL without credentials, e.g. `http://influxdb:8086`, or `https://…` for TLS
    /// (verified against the image's CA bundle).
    pub url: String,
    /// Database the readings are written to (default `sensors`).
    #[serde(default = "default_database")]
    pub database: String,
    /// Secret (same namespace) with key `token`: sent as `Authorization: Token <token>`
    /// (InfluxDB 1.8+ takes `username:password` there; 2.x an API token). Only the
    /// bridge, the API and the rollup runs get it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<String>,
    /// Secret (same namespace) with keys `username` and `password`, sent as HTTP Basic
    /// auth (InfluxDB 1.x with `auth-enabled`); to the same roles as the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
}

/// The Redis server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisSpec {
    /// URL without password, e.g. `redis://redis:6379`.
    pub url: String,
    /// Secret (same namespace) with key `password`; none: no AUTH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<String>,
}

/// The PostgreSQL database; its URL carries a password, so it comes from a Secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostgresSpec {
    /// Secret (same namespace) holding the URL, `postgres://user:pass@host:5432/db`.
    #[schemars(length(min = 1))]
    pub url_secret: String,
    /// Key of the URL in that Secret (default `url`).
    #[serde(default = "default_url_key")]
    pub url_key: String,
}

/// CPU and memory of one kind of worker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourcesSpec {
    /// What the scheduler reserves for each replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<ResourceAmounts>,
    /// The most each replica may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceAmounts>,
}

/// CPU and memory quantities, as Kubernetes writes them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceAmounts {
    /// CPU, e.g. `250m` or `1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Memory, e.g. `128Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

/// The bridge workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BridgeSpec {
    /// Replicas (default 1); they share the MQTT subscription.
    #[serde(default = "one")]
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// CPU and memory of each replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesSpec>,
}

impl Default for BridgeSpec {
    fn default() -> Self {
        Self {
            replicas: one(),
            resources: None,
        }
    }
}

/// The processor workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProcessorSpec {
    /// Most replicas (default 16): the operator runs one per partition up to this.
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Sliding window of the per-device statistics, e.g. `5m` (default).
    #[serde(default = "default_window")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub window: String,
    /// Readings in the moving average (default 10).
    #[serde(default = "default_moving_average")]
    #[schemars(range(min = 1, max = 10_000))]
    pub moving_average: u32,
    /// CPU and memory of each replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesSpec>,
    /// No processor replica runs while true (default false): set it, then `sensorfleet
    /// replay` can rewind their consumer group; unset it and they reprocess from there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

impl Default for ProcessorSpec {
    fn default() -> Self {
        Self {
            max_replicas: default_max_replicas(),
            window: default_window(),
            moving_average: default_moving_average(),
            resources: None,
            paused: false,
        }
    }
}

/// The API workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiSpec {
    /// Replicas (default 1).
    #[serde(default = "one")]
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// An Ingress for the API and dashboard; none: reach the `-api` Service in-cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
    /// CPU and memory of each replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesSpec>,
    /// Secret (same namespace) with key `token`: one bearer token with the admin role.
    /// It, or `auth`, turns auth on: every route then needs a credential but the
    /// dashboard's files, the OpenAPI document and the probes. None of both: the API is
    /// open to whoever reaches it, so set one before giving the API an Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<String>,
    /// API keys, JWTs and browser origins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<ApiAuthSpec>,
    /// Requests per second per principal, or per client address for anonymous calls
    /// (token bucket; none or 0: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub rate_limit: Option<f64>,
    /// Scale the API on CPU with a HorizontalPodAutoscaler; `replicas` is then ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
}

impl Default for ApiSpec {
    fn default() -> Self {
        Self {
            replicas: one(),
            ingress: None,
            resources: None,
            token_secret: None,
            auth: None,
            rate_limit: None,
            autoscaling: None,
        }
    }
}

/// Who may use the API. Secrets are read by the API pods only, as environment
/// variables; nothing here reaches a ConfigMap.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiAuthSpec {
    /// Secret (same namespace) with key `keys`: API keys as `name=role:key` lines, roles
    /// `viewer` (reads, live feed, /metrics), `operator` (also acknowledge and clear) and
    /// `admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys_secret: Option<String>,
    /// Bearer JWTs: HS256 with a shared secret, RS256/ES256 from an OIDC provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSpec>,
    /// Origins besides the API's own whose pages may open the live feed, e.g.
    /// `https://grafana.example.com`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    /// Header the ingress sets to the client's address (e.g. `x-forwarded-for`), which
    /// anonymous callers are then rate-limited by. Set it only when every request comes
    /// through a proxy that writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip_header: Option<String>,
}

/// How bearer JWTs are verified.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtSpec {
    /// Secret (same namespace) with key `secret`: the HS256 shared secret (32 bytes or
    /// more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The provider's JWKS URL (`jwks_uri` of its OpenID configuration), for RS256/ES256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// The `iss` tokens must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// An `aud` tokens must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// The claim holding the role (default `role`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_claim: Option<String>,
}

/// A HorizontalPodAutoscaler on average CPU use (of the requested CPU).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutoscalingSpec {
    /// Fewest replicas (default 1).
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Most replicas.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Average CPU use to keep, in percent of each replica's CPU request (default 70).
    #[serde(default = "default_target_cpu")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_percent: i32,
}

/// When hourly rollups are computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollupSpec {
    /// Whether the CronJob exists (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Cron schedule, in the cluster's time zone (default `7 * * * *`: seven minutes past
    /// every hour, when the last hour's readings are in).
    #[serde(default = "default_rollup_schedule")]
    pub schedule: String,
    /// Complete hours each run computes, ending at the last complete hour (default 2: the
    /// hour before is computed again, for readings that came late). Raw readings are kept
    /// by InfluxDB's own retention policy.
    #[serde(default = "default_rollup_hours")]
    #[schemars(range(min = 1, max = 168))]
    pub hours: u32,
}

impl Default for RollupSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            schedule: default_rollup_schedule(),
            hours: default_rollup_hours(),
        }
    }
}

/// How the API is exposed outside the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressSpec {
    /// Host name, e.g. `iot.example.com`.
    #[schemars(length(min = 1))]
    pub host: String,
    /// IngressClass, e.g. `nginx`; none: the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Secret with the TLS certificate for `host`; none: plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret: Option<String>,
}

fn default_topic() -> String {
    "sensor-readings".to_owned()
}
fn default_devices_per_partition() -> u32 {
    1000
}
fn default_min_partitions() -> i32 {
    3
}
fn default_max_partitions() -> i32 {
    64
}
fn default_replication_factor() -> i16 {
    1
}
fn default_database() -> String {
    "sensors".to_owned()
}
fn default_url_key() -> String {
    "url".to_owned()
}
fn one() -> i32 {
    1
}
fn default_max_replicas() -> i32 {
    16
}
fn default_window() -> String {
    "5m".to_owned()
}
fn default_moving_average() -> u32 {
    10
}
fn default_target_cpu() -> i32 {
    70
}
fn yes() -> bool {
    true
}
fn default_rollup_schedule() -> String {
    "7 * * * *".to_owned()
}
fn default_rollup_hours() -> u32 {
    2
}

/// Every problem of a Pipeline spec, not only the first, so one edit can fix them all.
/// The API server's schema catches types and ranges; this catches what a schema cannot
/// say (URL schemes, min ≤ max, a window the processor can parse).
pub fn validate_pipeline(spec: &PipelineSpec) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut add = |field: &str, message: String| problems.push(Problem::new(field, message));
    if spec.image.trim().is_empty() {
        add("spec.image", "must name the sensorfleet image".into());
    }
    for (field, url, schemes) in [
        ("spec.mqtt.url", &spec.mqtt.url, &["mqtt", "mqtts"][..]),
        (
            "spec.influxdb.url",
            &spec.influxdb.url,
            &["http", "https"][..],
        ),
        ("spec.redis.url", &spec.redis.url, &["redis"][..]),
    ] {
        if let Err(message) = check_url(url, schemes) {
            add(field, message);
        }
    }
    if spec.mqtt.url.contains('@') {
        add(
            "spec.mqtt.url",
            "must not carry credentials: put them in spec.mqtt.credentialsSecret".into(),
        );
    }
    if spec.mqtt.device_auth.is_some() && spec.mqtt.credentials_secret.is_none() {
        add(
            "spec.mqtt.credentialsSecret",
            "is required with deviceAuth: the bridge needs an identity of its own at the broker"
                .into(),
        );
    }
    if spec.influxdb.url.contains('@') {
        add(
            "spec.influxdb.url",
            "must not carry credentials: put them in spec.influxdb.credentialsSecret (or a token in tokenSecret)".into(),
        );
    }
    if spec.influxdb.token_secret.is_some() && spec.influxdb.credentials_secret.is_some() {
        add(
            "spec.influxdb",
            "give either tokenSecret or credentialsSecret, not both".into(),
        );
    }
    if spec.redis.url.contains('@') {
        add(
            "spec.redis.url",
            "must not carry a password: put it in spec.redis.passwordSecret".into(),
        );
    }
    let kafka = &spec.kafka;
    if kafka.bootstrap_servers.contains("://")
        || kafka
            .bootstrap_servers
            .split(',')
            .any(|server| !is_host_port(server.trim()))
    {
        add(
            "spec.kafka.bootstrapServers",
            format!(
                "{:?} must be host:port[,host:port…], e.g. kafka:9092",
                kafka.bootstrap_servers
            ),
        );
    }
    if !is_topic_name(&kafka.topic) {
        add(
            "spec.kafka.topic",
            format!(
                "{:?} must be 1-200 of [A-Za-z0-9._-] (a Kafka topic name)",
                kafka.topic
            ),
        );
    }
    if kafka.devices_per_partition == 0 {
        add(
            "spec.kafka.devicesPerPartition",
            "must be at least 1".into(),
        );
    }
    if kafka.min_partitions < 1 {
        add("spec.kafka.minPartitions", "must be at least 1".into());
    }
    if kafka.max_partitions > MAX_PARTITIONS {
        add(
            "spec.kafka.maxPartitions",
            format!("must be at most {MAX_PARTITIONS}"),
        );
    }
    if kafka.min_partitions > kafka.max_partitions {
        add(
            "spec.kafka.minPartitions",
            format!(
                "{} is above spec.kafka.maxPartitions {}",
                kafka.min_partitions, kafka.max_partitions
            ),
        );
    }
    if kafka.replication_factor < 1 {
        add("spec.kafka.replicationFactor", "must be at least 1".into());
    }
    if !is_dns_label(&spec.postgres.url_secret) {
        add(
            "spec.postgres.urlSecret",
            format!("{:?} must name a Secret", spec.postgres.url_secret),
        );
    }
    for (field, secret) in [
        ("spec.mqtt.credentialsSecret", &spec.mqtt.credentials_secret),
        (
            "spec.mqtt.deviceAuth.adminSecret",
            &spec
                .mqtt
                .device_auth
                .as_ref()
                .map(|d| d.admin_secret.clone()),
        ),
        ("spec.redis.passwordSecret", &spec.redis.password_secret),
        ("spec.influxdb.tokenSecret", &spec.influxdb.token_secret),
        (
            "spec.influxdb.credentialsSecret",
            &spec.influxdb.credentials_secret,
        ),
        ("spec.caSecret", &spec.ca_secret),
        ("spec.api.tokenSecret", &spec.api.token_secret),
        (
            "spec.api.auth.apiKeysSecret",
            &spec
                .api
                .auth
                .as_ref()
                .and_then(|a| a.api_keys_secret.clone()),
        ),
        (
            "spec.api.auth.jwt.secret",
            &spec
                .api
                .auth
                .as_ref()
                .and_then(|a| a.jwt.as_ref()?.secret.clone()),
        ),
    ] {
        if let Some(name) = secret
            && !is_dns_label(name)
        {
            add(field, format!("{name:?} must name a Secret"));
        }
    }
    if let Some(url) = spec
        .api
        .auth
        .as_ref()
        .and_then(|a| a.jwt.as_ref()?.jwks_url.as_ref())
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        add(
            "spec.api.auth.jwt.jwksUrl",
            format!("{url:?} must be an https:// (or http://) URL"),
        );
    }
    if let Some(jwt) = spec.api.auth.as_ref().and_then(|a| a.jwt.as_ref())
        && jwt.secret.is_none()
        && jwt.jwks_url.is_none()
    {
        add(
            "spec.api.auth.jwt",
            "needs secret (HS256) or jwksUrl (RS256/ES256)".into(),
        );
    }
    if spec.bridge.replicas < 0 {
        add("spec.bridge.replicas", "must not be negative".into());
    }
    if spec.api.replicas < 0 {
        add("spec.api.replicas", "must not be negative".into());
    }
    if spec.processor.max_replicas < 1 {
        add("spec.processor.maxReplicas", "must be at least 1".into());
    }
    match parse_duration_ms(&spec.processor.window) {
        Ok(ms) if ms > 0 => {}
        Ok(_) => add("spec.processor.window", "must be more than 0".into()),
        Err(e) => add("spec.processor.window", e),
    }
    if spec.processor.moving_average == 0 {
        add("spec.processor.movingAverage", "must be at least 1".into());
    }
    if let Some(rate) = spec.api.rate_limit
        && !(rate.is_finite() && rate >= 0.0)
    {
        add(
            "spec.api.rateLimit",
            format!("{rate} must be a number of requests per second, 0 or more"),
        );
    }
    if let Some(scaling) = &spec.api.autoscaling {
        if scaling.min_replicas < 1 {
            add(
                "spec.api.autoscaling.minReplicas",
                "must be at least 1".into(),
            );
        }
        if scaling.min_replicas > scaling.max_replicas {
            add(
                "spec.api.autoscaling.minReplicas",
                format!(
                    "{} is above spec.api.autoscaling.maxReplicas {}",
                    scaling.min_replicas, scaling.max_replicas
                ),
            );
        }
        if !(1..=100).contains(&scaling.target_cpu_percent) {
            add(
                "spec.api.autoscaling.targetCpuPercent",
                "must be 1 to 100".into(),
            );
        }
    }
    if spec.rollup.enabled && spec.rollup.schedule.split_whitespace().count() != 5 {
        add(
            "spec.rollup.schedule",
            format!(
                "{:?} must be a cron schedule of 5 fields, e.g. \"7 * * * *\"",
                spec.rollup.schedule
            ),
        );
    }
    if !(1..=168).contains(&spec.rollup.hours) {
        add("spec.rollup.hours", "must be 1 to 168".into());
    }
    if let Some(ingress) = &spec.api.ingress
        && !is_host_name(&ingress.host)
    {
        add(
            "spec.api.ingress.host",
            format!("{:?} must be a DNS name like iot.example.com", ingress.host),
        );
    }
    problems
}

fn check_url(url: &str, schemes: &[&str]) -> Result<(), String> {
    let expected = || {
        format!(
            "{url:?} must be {}://host:port",
            schemes.join("|").replace('|', "://host:port or ")
        )
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(expected)?;
    if !schemes.contains(&scheme) {
        return Err(expected());
    }
    let host_port = rest.split(['/', '?']).next().unwrap_or_default();
    let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
    if host.is_empty() {
        return Err(expected());
    }
    Ok(())
}

fn is_host_port(text: &str) -> bool {
    match text.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

fn is_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

fn is_host_name(host: &str) -> bool {
    !host.is_empty() && host.len() <= 253 && host.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SKETCH: &str = r#"
image: sensorfleet:0.1.0
mqtt: {url: "mqtt://mosquitto:1883", credentialsSecret: mqtt-bridge}
kafka: {bootstrapServers: "kafka:9092", topic: sensor-readings, devicesPerPartition: 1000,
        minPartitions: 3, maxPartitions: 64, replicationFactor: 1}
influxdb: {url: "http://influxdb:8086", database: sensors}
redis: {url: "redis://redis:6379"}
postgres: {urlSecret: sensorfleet-postgres}
bridge: {replicas: 2}
processor: {maxReplicas: 16, window: 5m, movingAverage: 10}
api: {replicas: 2, ingress: {host: iot.example.com, className: nginx}}
"#;

    fn sketch() -> PipelineSpec {
        serde_yaml::from_str(SKETCH).expect("the design's sketch parses")
    }

    #[test]
    fn the_design_sketch_is_valid_and_defaults_fill_in() {
        let spec = sketch();
        assert_eq!(validate_pipeline(&spec), vec![]);
        assert_eq!(spec.bridge.replicas, 2);
        assert_eq!(spec.postgres.url_key, "url");
        let minimal: PipelineSpec = serde_yaml::from_str(
            "image: i\nmqtt: {url: 'mqtt://m:1883'}\nkafka: {bootstrapServers: 'k:9092'}\ninfluxdb: {url: 'http://i:8086'}\nredis: {url: 'redis://r:6379'}\npostgres: {urlSecret: pg}\n",
        )
        .expect("minimal");
        assert_eq!(minimal.kafka.topic, "sensor-readings");
        assert_eq!(minimal.kafka.min_partitions, 3);
        assert_eq!(minimal.processor.window, "5m");
        assert_eq!(minimal.api.replicas, 1);
        assert_eq!(validate_pipeline(&minimal), vec![]);
    }

    #[test]
    fn every_problem_is_listed_with_its_field() {
        let mut spec = sketch();
        spec.mqtt.url = "tcp://user:pw@mosquitto:1883".into();
        spec.kafka.bootstrap_servers = "kafka://kafka:9092".into();
        spec.kafka.min_partitions = 100;
        spec.processor.window = "5 minutes".into();
        spec.postgres.url_secret = "Bad_Name".into();
        if let Some(ingress) = spec.api.ingress.as_mut() {
            ingress.host = "not a host".into();
        }
        let fields: Vec<String> = validate_pipeline(&spec)
            .into_iter()
            .map(|p| p.field)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.mqtt.url",
                "spec.mqtt.url",
                "spec.kafka.bootstrapServers",
                "spec.kafka.minPartitions",
                "spec.postgres.urlSecret",
                "spec.processor.window",
                "spec.api.ingress.host",
            ]
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let typo = SKETCH.replace("maxReplicas", "maxReplica");
        assert!(serde_yaml::from_str::<PipelineSpec>(&typo).is_err());
    }
}
