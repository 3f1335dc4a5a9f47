//! The flow the SensorFleet and AlertRule reconcilers share: inside the finalizer that
//! cleans the mirror, halt when paused or invalid, find the pipeline's registry, mirror
//! the object into it and report `Ready`; on delete, remove the rows again. What differs
//! per kind (which rows, which pipeline) is the [`Mirrored`] trait.

use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::NamespaceResourceScope;
use kube::api::Api;
use kube::core::object::HasStatus;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};
use sensorfleet_model::Problem;
use sensorfleet_model::crd::status::{ConditionStatus, HasConditions, REASON_RECONCILED};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{
    Context, Halt, PipelineRegistry, Unresolved, halt, now, patch_status_if_changed,
    pipeline_registry, retry_dependency,
};
use crate::{Error, FINALIZER};

/// A kind mirrored into its pipeline's registry. The futures are `Send`: the
/// controller runs reconciles on the runtime's threads.
pub(super) trait Mirrored:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + HasStatus<Status: HasConditions + Clone + Default + Serialize + PartialEq + Send + Sync>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
    /// What the Events call the mirrored rows, e.g. `devices`.
    const ROWS: &'static str;
    /// The Event action of removing them, e.g. `RemoveDevices`.
    const REMOVE: &'static str;
    /// The rows the spec asks for.
    type Desired: Send;

    /// Whether `spec.paused` is true.
    fn paused(&self) -> bool;

    /// The rows the spec asks for, or every problem of the spec (pure).
    fn desired(&self) -> Result<Self::Desired, Vec<Problem>>;

    /// What the spec alone says in the status, written even while paused or invalid.
    fn declare(&self, _status: &mut Self::Status) {}

    /// The Pipeline the object names, directly or through another object; none: the
    /// namespace's only one.
    fn pipeline(
        &self,
        ctx: &Context,
        namespace: &str,
    ) -> impl Future<Output = Result<Option<String>, Error>> + Send;

    /// Writes the rows into the registry (skipping what is in place when `unchanged`:
    /// the object was Ready for this generation) and fills in the status; returns the
    /// `Ready` message.
    fn mirror(
        &self,
        ctx: &Context,
        registry: &PipelineRegistry,
        desired: Self::Desired,
        status: &mut Self::Status,
        unchanged: bool,
    ) -> impl Future<Output = Result<String, Error>> + Send;

    /// Removes the rows from the registry (and what else the object made); returns the
    /// Event's note.
    fn unmirror(
        &self,
        ctx: &Context,
        registry: &PipelineRegistry,
    ) -> impl Future<Output = Result<String, Error>> + Send;
}

/// One reconcile of a mirrored object, inside the finalizer that cleans the mirror.
pub(super) async fn reconcile<K: Mirrored>(
    obj: Arc<K>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let namespace = obj
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(obj) => apply(obj, &ctx, &api, &namespace).await,
            Finalizer::Cleanup(obj) => cleanup(obj, &ctx, &namespace).await,
        }
    })
    .await
    .map_err(Error::from)
}

async fn apply<K: Mirrored>(
    obj: Arc<K>,
    ctx: &Context,
    api: &Api<K>,
    namespace: &str,
) -> Result<Action, Error> {
    let old = obj.status().cloned();
    let generation = obj.meta().generation;
    let at = now();
    let mut status = old.clone().unwrap_or_default();
    status.set_observed_generation(generation);
    obj.declare(&mut status);

    if obj.paused() {
        let paused = Halt::Paused("the mirror is left as it is");
        return halt(ctx, api, obj.as_ref(), status, paused, &at).await;
    }
    let desired = match obj.desired() {
        Err(problems) => {
            return halt(ctx, api, obj.as_ref(), status, Halt::Invalid(problems), &at).await;
        }
        Ok(desired) => desired,
    };
    let named = obj.pipeline(ctx, namespace).await?;
    let registry = match pipeline_registry(ctx, namespace, named.as_deref()).await? {
        Ok(found) => found,
        Err(Unresolved { reason, message }) => {
            status.set_ready(ConditionStatus::False, reason, message, &at);
            patch_status_if_changed(api, obj.as_ref(), old.as_ref(), &status).await?;
            return Ok(retry_dependency());
        }
    };
    let unchanged = old
        .as_ref()
        .is_some_and(|s| s.observed_generation() == generation && s.is_ready());
    let message = obj
        .mirror(ctx, &registry, desired, &mut status, unchanged)
        .await?;
    status.set_ready(ConditionStatus::True, REASON_RECONCILED, message, &at);
    patch_status_if_changed(api, obj.as_ref(), old.as_ref(), &status).await?;
    Ok(Action::requeue(ctx.resync))
}

/// Removes the mirror rows. When the Pipeline or its Secret is gone there is nothing
/// left to clean through: the finalizer is released anyway (the object must stay
/// deletable), with a Warning Event saying what was left behind.
async fn cleanup<K: Mirrored>(
    obj: Arc<K>,
    ctx: &Context,
    namespace: &str,
) -> Result<Action, Error> {
    let named = obj.pipeline(ctx, namespace).await?;
    match pipeline_registry(ctx, namespace, named.as_deref()).await? {
        Ok(registry) => {
            let note = obj.unmirror(ctx, &registry).await?;
            ctx.event(
                obj.as_ref(),
                EventType::Normal,
                "MirrorRemoved",
                K::REMOVE,
                note,
            )
            .await;
        }
        Err(Unresolved { message, .. }) => {
            ctx.event(
                obj.as_ref(),
                EventType::Warning,
                "MirrorNotCleaned",
                K::REMOVE,
                format!("{} left in the registry: {message}", K::ROWS),
            )
            .await;
        }
    }
    Ok(Action::await_change())
}
