//! The three controllers (kube-runtime), their shared context and the pieces every
//! reconcile uses: status patches that happen only on change, Events, per-object
//! exponential backoff, and the halt of a paused object or an invalid spec. The
//! SensorFleet and AlertRule reconcilers share one finalizer and mirror flow
//! (`mirrored`).

pub mod fleet;
mod mirrored;
pub mod pipeline;
pub mod rule;

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::object::HasStatus;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use sensorfleet_model::crd::pipeline::MqttSpec;
use sensorfleet_model::crd::status::{
    ConditionStatus, HasConditions, REASON_INVALID_SPEC, REASON_PAUSED,
};
use sensorfleet_model::{AlertRule, Pipeline, Problem, SensorFleet};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::identity::BrokerIdentity;
use crate::identity::dynsec::Broker;
use crate::metrics::Watches;
use crate::mirror::{MirrorTarget, Registries, RegistryConnector};
use crate::topic::TopicAdmin;
use crate::{Error, FIELD_MANAGER, validate};

/// First retry after a failure; doubles per consecutive failure of the same object.
const BACKOFF_BASE: Duration = Duration::from_secs(2);
/// Longest wait between retries of one object.
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// How long to wait for a Pipeline or Secret that does not exist yet.
const DEPENDENCY_RETRY: Duration = Duration::from_secs(30);

/// Everything the reconcilers share.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// Creates and grows Kafka topics.
    pub topics: Arc<dyn TopicAdmin>,
    /// The pipelines' registries (PostgreSQL), opened on first use.
    pub registries: Registries,
    /// How often an unchanged object is looked at again (drift repair).
    pub resync: Duration,
    /// The controllers' caches, for the readiness probe and the objects-per-state gauge.
    pub watches: Arc<Watches>,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context; `instance` names this replica in Events (the pod name).
    pub fn new(
        client: Client,
        instance: Option<String>,
        topics: Arc<dyn TopicAdmin>,
        connector: Arc<dyn RegistryConnector>,
        resync: Duration,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            topics,
            registries: Registries::new(connector),
            resync,
            watches: Arc::new(Watches::default()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes an Event about `obj`; a failure is logged, never fails the reconcile
    /// (Events are advisory).
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(reason, error = %e, "could not publish event");
        }
    }

    fn succeeded(&self, key: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
    }

    /// Counts one more consecutive failure of `key` and returns it.
    fn failed(&self, key: &str) -> u32 {
        match self.failures.lock() {
            Ok(mut failures) => {
                let n = failures.entry(key.to_owned()).or_insert(0);
                *n = n.saturating_add(1);
                *n
            }
            Err(_) => 1,
        }
    }
}

/// Delay before retry number `failures` (1-based): 2 s, 4 s, 8 s … at most 5 min.
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << exponent).min(BACKOFF_MAX)
}

fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

/// Runs a reconcile, counts it in the metrics and resets the object's backoff when it
/// succeeds.
async fn tracked<K, F>(obj: Arc<K>, ctx: Arc<Context>, reconcile: F) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()>,
    F: Future<Output = Result<Action, Error>>,
{
    let started = std::time::Instant::now();
    let result = reconcile.await;
    crate::metrics::reconciled(&K::kind(&()), started.elapsed(), result.as_ref().err());
    if result.is_ok() {
        ctx.succeeded(&object_key(obj.as_ref()));
    }
    result
}

/// The error policy of all three controllers: exponential backoff per object (one
/// broken object does not slow the others), a log line and, on the first failure of a
/// run, a Warning Event with the error's category as reason.
pub fn error_policy<K>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
{
    let key = object_key(obj.as_ref());
    let failures = ctx.failed(&key);
    let delay = backoff(failures);
    tracing::warn!(object = %key, category = error.category(), failures, retry_in = ?delay, error = %error, "reconcile failed");
    if failures == 1 {
        let note = error.to_string();
        let reason = error.category();
        tokio::spawn(async move {
            ctx.event(obj.as_ref(), EventType::Warning, reason, "Reconcile", note)
                .await;
        });
    }
    Action::requeue(delay)
}

/// The time now as Kubernetes writes it in conditions (RFC 3339, seconds).
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Writes `status` with server-side apply — only when it differs from `old`, so an
/// unchanged object costs no write.
pub async fn patch_status_if_changed<K, S>(
    api: &Api<K>,
    obj: &K,
    old: Option<&S>,
    status: &S,
) -> Result<bool, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: Serialize + PartialEq,
{
    if old == Some(status) {
        return Ok(false);
    }
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(true)
}

/// Why a reconcile stops before doing anything.
#[derive(Debug, Clone, PartialEq)]
pub enum Halt {
    /// `spec.paused` is true; the text says what is left as it is.
    Paused(&'static str),
    /// The spec has these problems.
    Invalid(Vec<Problem>),
}

impl Halt {
    /// Sets `Ready` for the halt: `Unknown`/`Paused`, or `False`/`InvalidSpec` naming
    /// every problem. Returns the condition message.
    pub fn set_ready<S: HasConditions>(&self, status: &mut S, now: &str) -> String {
        let (state, reason, message) = match self {
            Self::Paused(left) => (
                ConditionStatus::Unknown,
                REASON_PAUSED,
                format!("spec.paused is true: {left}"),
            ),
            Self::Invalid(problems) => (
                ConditionStatus::False,
                REASON_INVALID_SPEC,
                validate::summary(problems),
            ),
        };
        status.set_ready(state, reason, message.clone(), now);
        message
    }
}

/// Writes the status of a halted reconcile (with a Warning Event when an invalid spec
/// is news) and waits: an edit of the spec triggers the next reconcile, retrying now
/// cannot help.
pub async fn halt<K>(
    ctx: &Context,
    api: &Api<K>,
    obj: &K,
    mut status: K::Status,
    halt: Halt,
    now: &str,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()> + HasStatus + Clone + DeserializeOwned + Debug,
    K::Status: HasConditions + Serialize + PartialEq,
{
    let message = halt.set_ready(&mut status, now);
    let changed = patch_status_if_changed(api, obj, obj.status(), &status).await?;
    if changed && matches!(halt, Halt::Invalid(_)) {
        ctx.event(
            obj,
            EventType::Warning,
            REASON_INVALID_SPEC,
            "Validate",
            message,
        )
        .await;
    }
    Ok(Action::await_change())
}

/// Why an object's registry cannot be reached; becomes the Ready condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// CamelCase reason.
    pub reason: &'static str,
    /// What is missing and what to do.
    pub message: String,
}

/// A Pipeline and its registry.
pub struct PipelineRegistry {
    /// The Pipeline's name.
    pub name: String,
    /// Its registry.
    pub target: Arc<MirrorTarget>,
    /// Its broker's device identities, when `spec.mqtt.deviceAuth` is set.
    pub identity: Option<BrokerIdentity>,
}

/// The Pipeline an object belongs to and its registry: the dereference step shared by
/// the SensorFleet and AlertRule reconcilers.
pub async fn pipeline_registry(
    ctx: &Context,
    namespace: &str,
    named: Option<&str>,
) -> Result<Result<PipelineRegistry, Unresolved>, Error> {
    let pipelines: Api<Pipeline> = Api::namespaced(ctx.client.clone(), namespace);
    let names: Vec<String> = pipelines
        .list_metadata(&ListParams::default())
        .await?
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    let name = match validate::resolve_pipeline(named, &names) {
        Ok(name) => name.to_owned(),
        Err(message) => {
            return Ok(Err(Unresolved {
                reason: "PipelineNotFound",
                message,
            }));
        }
    };
    let Some(pipeline) = pipelines.get_opt(&name).await? else {
        return Ok(Err(Unresolved {
            reason: "PipelineNotFound",
            message: format!("Pipeline {name:?} was deleted"),
        }));
    };
    let postgres = &pipeline.spec.postgres;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let url = secret_text(&secrets, &postgres.url_secret, &postgres.url_key).await?;
    let Some(url) = url else {
        return Ok(Err(Unresolved {
            reason: "SecretNotFound",
            message: format!(
                "Secret {:?} with key {:?} (the PostgreSQL URL of Pipeline {name:?}) is missing",
                postgres.url_secret, postgres.url_key
            ),
        }));
    };
    let identity = match broker_identity(&secrets, &name, &pipeline.spec.mqtt).await? {
        Ok(identity) => identity,
        Err(unresolved) => return Ok(Err(unresolved)),
    };
    let target = ctx.registries.get(url.trim()).await?;
    Ok(Ok(PipelineRegistry {
        name,
        target,
        identity,
    }))
}

/// The text of `key` in Secret `name`, if both exist.
async fn secret_text(
    secrets: &Api<Secret>,
    name: &str,
    key: &str,
) -> Result<Option<String>, Error> {
    Ok(secrets
        .get_opt(name)
        .await?
        .and_then(|s| s.data)
        .and_then(|mut data| data.remove(key))
        .and_then(|bytes| String::from_utf8(bytes.0).ok()))
}

/// The broker admin and the bridge's login of a Pipeline with `deviceAuth`, from their
/// Secrets; `Ok(None)` without device auth.
async fn broker_identity(
    secrets: &Api<Secret>,
    pipeline: &str,
    mqtt: &MqttSpec,
) -> Result<Result<Option<BrokerIdentity>, Unresolved>, Error> {
    let (Some(auth), Some(bridge)) = (&mqtt.device_auth, &mqtt.credentials_secret) else {
        return Ok(Ok(None));
    };
    let mut values = Vec::with_capacity(4);
    for (secret, key) in [
        (&auth.admin_secret, "username"),
        (&auth.admin_secret, "password"),
        (bridge, "username"),
        (bridge, "password"),
    ] {
        match secret_text(secrets, secret, key).await? {
            Some(value) => values.push(value.trim().to_owned()),
            None => {
                return Ok(Err(Unresolved {
                    reason: "SecretNotFound",
                    message: format!(
                        "Secret {secret:?} with key {key:?} (MQTT device auth of Pipeline {pipeline:?}) is missing"
                    ),
                }));
            }
        }
    }
    let Some((host, port, tls)) = Broker::address(&mqtt.url) else {
        return Ok(Err(Unresolved {
            reason: "InvalidPipeline",
            message: format!("spec.mqtt.url of Pipeline {pipeline:?} is not mqtt[s]://host[:port]"),
        }));
    };
    let [username, password, bridge_user, bridge_password] =
        <[String; 4]>::try_from(values).unwrap_or_else(|_| unreachable!());
    Ok(Ok(Some(BrokerIdentity {
        broker: Broker {
            host,
            port,
            username,
            password,
            tls,
        },
        bridge_user,
        bridge_password,
    })))
}

/// Requeue for an object waiting on a missing dependency.
pub fn retry_dependency() -> Action {
    Action::requeue(DEPENDENCY_RETRY)
}

/// Which namespace the controllers watch: one, or all.
fn api_for<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the three controllers until `shutdown` resolves or a watch stream ends.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    // Watch only what the operator made: an operator that cached every ConfigMap and
    // Service of a large cluster would cost more than the workers it runs.
    let owned =
        watcher::Config::default().labels("app.kubernetes.io/managed-by=sensorfleet-operator");
    let (shutdown_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let signal = |tx: &tokio::sync::broadcast::Sender<()>| {
        let mut rx = tx.subscribe();
        async move {
            let _ = rx.recv().await;
        }
    };

    let pipelines = Controller::new(api_for::<Pipeline>(&client, ns), watcher::Config::default());
    let pipeline_store = pipelines.store();
    ctx.watches
        .follow("Pipeline", pipeline_store.clone(), api_for(&client, ns));
    let pipelines = pipelines
        .owns(api_for::<StatefulSet>(&client, ns), owned.clone())
        .owns(api_for::<Deployment>(&client, ns), owned.clone())
        .owns(api_for::<Service>(&client, ns), owned.clone())
        .owns(api_for::<ConfigMap>(&client, ns), owned.clone())
        .owns(api_for::<Ingress>(&client, ns), owned.clone())
        .owns(api_for::<CronJob>(&client, ns), owned.clone())
        .owns(api_for::<HorizontalPodAutoscaler>(&client, ns), owned)
        // A fleet's device count drives its pipeline's partitions and processors.
        .watches(
            api_for::<SensorFleet>(&client, ns),
            watcher::Config::default(),
            move |fleet| {
                let namespace = fleet.namespace().unwrap_or_default();
                let refs: Vec<ObjectRef<Pipeline>> = match &fleet.spec.pipeline {
                    Some(name) => vec![ObjectRef::new(name).within(&namespace)],
                    None => pipeline_store
                        .state()
                        .iter()
                        .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()))
                        .map(|p| ObjectRef::from_obj(p.as_ref()))
                        .collect(),
                };
                refs
            },
        )
        .graceful_shutdown_on(signal(&shutdown_tx))
        .run(
            |obj, ctx| {
                let inner = pipeline::reconcile(obj.clone(), ctx.clone());
                tracked(obj, ctx, inner)
            },
            error_policy,
            ctx.clone(),
        )
        .for_each(log_result);

    let fleets = mirror_controller::<SensorFleet>(
        &client,
        ns,
        "SensorFleet",
        signal(&shutdown_tx),
        ctx.clone(),
    );
    let rules = mirror_controller::<AlertRule>(&client, ns, "AlertRule", signal(&shutdown_tx), ctx);

    let stop = async move {
        shutdown.await;
        let _ = shutdown_tx.send(());
    };
    tokio::join!(pipelines, fleets, rules, stop);
}

/// The controller of a mirrored kind: the SensorFleet and AlertRule controllers differ
/// only in the kind.
fn mirror_controller<K>(
    client: &Client,
    namespace: Option<&str>,
    kind: &'static str,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    ctx: Arc<Context>,
) -> impl Future<Output = ()>
where
    K: mirrored::Mirrored + crate::metrics::WithConditions,
{
    let controller = Controller::new(api_for::<K>(client, namespace), watcher::Config::default());
    ctx.watches
        .follow(kind, controller.store(), api_for::<K>(client, namespace));
    controller
        .graceful_shutdown_on(shutdown)
        .run(
            |obj, ctx| {
                let inner = mirrored::reconcile(obj.clone(), ctx.clone());
                tracked(obj, ctx, inner)
            },
            error_policy,
            ctx,
        )
        .for_each(log_result)
}

async fn log_result<K, E1: std::fmt::Display>(result: Result<(ObjectRef<K>, Action), E1>)
where
    K: Resource,
    K::DynamicType: Debug,
{
    match result {
        Ok((obj, action)) => tracing::debug!(object = %obj, ?action, "reconciled"),
        Err(e) => tracing::debug!(error = %e, "controller"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_halt_sets_ready_for_the_generation() {
        use sensorfleet_model::crd::status::{PipelineStatus, READY, find_condition};

        let mut status = PipelineStatus {
            observed_generation: Some(2),
            ..Default::default()
        };
        let invalid = Halt::Invalid(vec![Problem::new("spec.image", "empty")]);
        assert_eq!(invalid.set_ready(&mut status, "t"), "spec.image: empty");
        assert!(status.is_invalid());
        let ready = find_condition(&status.conditions, READY).expect("Ready");
        assert_eq!(
            (
                ready.status,
                ready.message.as_str(),
                ready.observed_generation
            ),
            (ConditionStatus::False, "spec.image: empty", Some(2))
        );
        status.observed_generation = Some(3);
        Halt::Paused("the workers are left as they are").set_ready(&mut status, "t2");
        let ready = find_condition(&status.conditions, READY).expect("Ready");
        assert_eq!(
            (ready.status, ready.reason.as_str()),
            (ConditionStatus::Unknown, REASON_PAUSED)
        );
        assert!(!status.is_invalid());
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(5), Duration::from_secs(32));
        assert_eq!(backoff(9), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
        assert_eq!(backoff(0), Duration::from_secs(2));
    }
}
