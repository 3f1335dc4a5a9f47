//! AlertRule → its row in the pipeline's `alert_rules`, removed on delete. Running
//! processors re-read the rules from the registry, so no restart is needed.

use std::sync::Arc;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};
use sensorfleet_model::manifest::compile_rule;
use sensorfleet_model::status::{
    AlertRuleStatus, Condition, ConditionStatus, READY, REASON_INVALID_SPEC, REASON_PAUSED,
    REASON_RECONCILED, set_condition,
};
use sensorfleet_model::{AlertRule, SensorFleet};

use super::{
    Context, Unresolved, now, patch_status_if_changed, pipeline_registry, retry_dependency,
};
use crate::mirror::{rule_activity, with_rule, without_rule};
use crate::{Error, FINALIZER, validate};

/// Newest alerts read to count a rule's firing ones (the history is capped anyway).
const ACTIVITY_WINDOW: usize = 1000;

/// One reconcile of an AlertRule, inside the finalizer that cleans the mirror.
pub async fn reconcile(rule: Arc<AlertRule>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = rule
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let api: Api<AlertRule> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, rule, |event| async {
        match event {
            Finalizer::Apply(rule) => apply(rule, &ctx, &api, &namespace).await,
            Finalizer::Cleanup(rule) => cleanup(rule, &ctx, &namespace).await,
        }
    })
    .await
    .map_err(Error::from)
}

/// The pipeline a rule names, else its fleet's, else none (the namespace's only one).
async fn pipeline_of(
    rule: &AlertRule,
    ctx: &Context,
    namespace: &str,
) -> Result<Option<String>, Error> {
    if let Some(pipeline) = &rule.spec.pipeline {
        return Ok(Some(pipeline.clone()));
    }
    let Some(fleet) = &rule.spec.fleet else {
        return Ok(None);
    };
    let fleets: Api<SensorFleet> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(fleets.get_opt(fleet).await?.and_then(|f| f.spec.pipeline))
}

async fn apply(
    rule: Arc<AlertRule>,
    ctx: &Context,
    api: &Api<AlertRule>,
    namespace: &str,
) -> Result<Action, Error> {
    let name = rule.name_any();
    let old = rule.status.clone();
    let mut status = old.clone().unwrap_or_default();
    status.observed_generation = rule.meta().generation;
    let at = now();

    if rule.spec.paused {
        set_ready(
            &mut status,
            ConditionStatus::Unknown,
            REASON_PAUSED,
            "spec.paused is true: the mirror is left as it is".into(),
            &at,
        );
        patch_status_if_changed(api, rule.as_ref(), old.as_ref(), &status).await?;
        return Ok(Action::await_change());
    }
    let problems = validate::rule(&rule.spec);
    let compiled = match compile_rule(&name, &rule.spec) {
        Ok(compiled) if problems.is_empty() => compiled,
        _ => {
            let message = validate::summary(&problems);
            set_ready(
                &mut status,
                ConditionStatus::False,
                REASON_INVALID_SPEC,
                message.clone(),
                &at,
            );
            if patch_status_if_changed(api, rule.as_ref(), old.as_ref(), &status).await? {
                ctx.event(
                    rule.as_ref(),
                    EventType::Warning,
                    REASON_INVALID_SPEC,
                    "Validate",
                    message,
                )
                .await;
            }
            return Ok(Action::await_change());
        }
    };
    let named = pipeline_of(&rule, ctx, namespace).await?;
    let (pipeline, target) = match pipeline_registry(ctx, namespace, named.as_deref()).await? {
        Ok(found) => found,
        Err(Unresolved { reason, message }) => {
            set_ready(&mut status, ConditionStatus::False, reason, message, &at);
            patch_status_if_changed(api, rule.as_ref(), old.as_ref(), &status).await?;
            return Ok(retry_dependency());
        }
    };
    {
        let _serialised = target.rules_lock.lock().await;
        let stored = target.registry.rules().await?;
        if let Some(rules) = with_rule(&stored, &compiled) {
            target.registry.replace_rules(&rules).await?;
            ctx.event(
                rule.as_ref(),
                EventType::Normal,
                "Mirrored",
                "MirrorRule",
                format!("rule stored in the registry of Pipeline {pipeline}; processors pick it up on their next refresh"),
            )
            .await;
        }
    }
    let alerts = target.registry.alerts(ACTIVITY_WINDOW).await?;
    let (firing, last_fired) = rule_activity(&alerts, &name);
    status.firing_count = firing;
    status.last_fired = last_fired.or(status.last_fired);
    set_ready(
        &mut status,
        ConditionStatus::True,
        REASON_RECONCILED,
        format!("mirrored to the registry of Pipeline {pipeline}"),
        &at,
    );
    patch_status_if_changed(api, rule.as_ref(), old.as_ref(), &status).await?;
    Ok(Action::requeue(ctx.resync))
}

/// Removes the rule from the registry; releases the finalizer even when the Pipeline is
/// gone (with a Warning Event), so a rule stays deletable.
async fn cleanup(rule: Arc<AlertRule>, ctx: &Context, namespace: &str) -> Result<Action, Error> {
    let name = rule.name_any();
    let named = pipeline_of(&rule, ctx, namespace).await?;
    match pipeline_registry(ctx, namespace, named.as_deref()).await? {
        Ok((pipeline, target)) => {
            let _serialised = target.rules_lock.lock().await;
            let stored = target.registry.rules().await?;
            if let Some(rules) = without_rule(&stored, &name) {
                target.registry.replace_rules(&rules).await?;
            }
            ctx.event(
                rule.as_ref(),
                EventType::Normal,
                "MirrorRemoved",
                "RemoveRule",
                format!("rule removed from the registry of Pipeline {pipeline}"),
            )
            .await;
        }
        Err(Unresolved { message, .. }) => {
            ctx.event(
                rule.as_ref(),
                EventType::Warning,
                "MirrorNotCleaned",
                "RemoveRule",
                format!("rule left in the registry: {message}"),
            )
            .await;
        }
    }
    Ok(Action::await_change())
}

fn set_ready(
    status: &mut AlertRuleStatus,
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
