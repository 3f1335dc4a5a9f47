//! SensorFleet → its devices in the pipeline's registry (`devices`), removed on delete.

use std::sync::Arc;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};
use sensorfleet_model::SensorFleet;
use sensorfleet_model::manifest::declared_count;
use sensorfleet_model::status::{
    Condition, ConditionStatus, READY, REASON_INVALID_SPEC, REASON_PAUSED, REASON_RECONCILED,
    SensorFleetStatus, find_condition, set_condition,
};

use super::{
    Context, Unresolved, now, patch_status_if_changed, pipeline_registry, retry_dependency,
};
use crate::mirror::device_records;
use crate::{Error, FINALIZER, validate};

/// One reconcile of a SensorFleet, inside the finalizer that cleans the mirror.
pub async fn reconcile(fleet: Arc<SensorFleet>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = fleet
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let api: Api<SensorFleet> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, fleet, |event| async {
        match event {
            Finalizer::Apply(fleet) => apply(fleet, &ctx, &api, &namespace).await,
            Finalizer::Cleanup(fleet) => cleanup(fleet, &ctx, &namespace).await,
        }
    })
    .await
    .map_err(Error::from)
}

async fn apply(
    fleet: Arc<SensorFleet>,
    ctx: &Context,
    api: &Api<SensorFleet>,
    namespace: &str,
) -> Result<Action, Error> {
    let name = fleet.name_any();
    let old = fleet.status.clone();
    let generation = fleet.meta().generation;
    let at = now();
    let mut status = old.clone().unwrap_or_default();
    status.observed_generation = generation;
    status.device_count = declared_count(&fleet.spec);

    if fleet.spec.paused {
        set_ready(
            &mut status,
            ConditionStatus::Unknown,
            REASON_PAUSED,
            "spec.paused is true: the mirror is left as it is".into(),
            &at,
        );
        patch_status_if_changed(api, fleet.as_ref(), old.as_ref(), &status).await?;
        return Ok(Action::await_change());
    }
    let problems = validate::fleet(&fleet.spec);
    if !problems.is_empty() {
        let message = validate::summary(&problems);
        set_ready(
            &mut status,
            ConditionStatus::False,
            REASON_INVALID_SPEC,
            message.clone(),
            &at,
        );
        if patch_status_if_changed(api, fleet.as_ref(), old.as_ref(), &status).await? {
            ctx.event(
                fleet.as_ref(),
                EventType::Warning,
                REASON_INVALID_SPEC,
                "Validate",
                message,
            )
            .await;
        }
        return Ok(Action::await_change());
    }
    let (pipeline, target) =
        match pipeline_registry(ctx, namespace, fleet.spec.pipeline.as_deref()).await? {
            Ok(found) => found,
            Err(Unresolved { reason, message }) => {
                set_ready(&mut status, ConditionStatus::False, reason, message, &at);
                patch_status_if_changed(api, fleet.as_ref(), old.as_ref(), &status).await?;
                return Ok(retry_dependency());
            }
        };

    let records = device_records(&name, &fleet.spec);
    let was_ready = old
        .as_ref()
        .is_some_and(|s| s.observed_generation == generation && is_ready(s));
    // An unchanged, mirrored fleet writes nothing: checking its first and last device
    // is two indexed reads, and catches a registry that was wiped or restored.
    let intact = match (records.first(), records.last()) {
        (Some(first), Some(last)) => {
            target.registry.device(&first.device_id).await?.is_some()
                && target.registry.device(&last.device_id).await?.is_some()
        }
        _ => true,
    };
    if !(was_ready && intact) {
        target.registry.upsert_devices(&records).await?;
        let keep: Vec<String> = records.iter().map(|r| r.device_id.clone()).collect();
        let pruned = target.registry.prune_fleet(&name, &keep).await?;
        ctx.event(
            fleet.as_ref(),
            EventType::Normal,
            "Mirrored",
            "MirrorDevices",
            format!(
                "{} devices in the registry of Pipeline {pipeline}; {pruned} no longer declared removed",
                records.len()
            ),
        )
        .await;
    }
    set_ready(
        &mut status,
        ConditionStatus::True,
        REASON_RECONCILED,
        format!(
            "{} devices mirrored to the registry of Pipeline {pipeline}",
            records.len()
        ),
        &at,
    );
    patch_status_if_changed(api, fleet.as_ref(), old.as_ref(), &status).await?;
    Ok(Action::requeue(ctx.resync))
}

/// Removes the fleet's devices from the registry. When the Pipeline or its Secret is
/// gone there is nothing left to clean through: the finalizer is released anyway (a
/// fleet must stay deletable), with a Warning Event saying what was left behind.
async fn cleanup(fleet: Arc<SensorFleet>, ctx: &Context, namespace: &str) -> Result<Action, Error> {
    let name = fleet.name_any();
    match pipeline_registry(ctx, namespace, fleet.spec.pipeline.as_deref()).await? {
        Ok((pipeline, target)) => {
            let removed = target.registry.prune_fleet(&name, &[]).await?;
            ctx.event(
                fleet.as_ref(),
                EventType::Normal,
                "MirrorRemoved",
                "RemoveDevices",
                format!("{removed} devices removed from the registry of Pipeline {pipeline}"),
            )
            .await;
        }
        Err(Unresolved { message, .. }) => {
            ctx.event(
                fleet.as_ref(),
                EventType::Warning,
                "MirrorNotCleaned",
                "RemoveDevices",
                format!("devices left in the registry: {message}"),
            )
            .await;
        }
    }
    Ok(Action::await_change())
}

fn set_ready(
    status: &mut SensorFleetStatus,
    state: ConditionStatus,
    reason: &str,
    message: String,
    now: &str,
) {
    let generation = status.observed_generation;
    set_condition(
        &mut status.conditions,
        Condition::new(READY, state, reason, message, generation, now),
    );
}

fn is_ready(status: &SensorFleetStatus) -> bool {
    find_condition(&status.conditions, READY).is_some_and(|c| c.status == ConditionStatus::True)
}
