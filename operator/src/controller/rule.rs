//! AlertRule → its row in the pipeline's `alert_rules`, removed on delete. Running
//! processors re-read the rules from the registry, so no restart is needed.

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::events::EventType;
use sensorfleet_model::crd::rule::compile_rule;
use sensorfleet_model::crd::status::AlertRuleStatus;
use sensorfleet_model::{AlertRule, CompiledRule, Problem, SensorFleet};

use super::mirrored::Mirrored;
use super::{Context, PipelineRegistry};
use crate::mirror::{with_rule, without_rule};
use crate::{Error, validate};

impl Mirrored for AlertRule {
    const ROWS: &'static str = "rule";
    const REMOVE: &'static str = "RemoveRule";
    type Desired = CompiledRule;

    fn paused(&self) -> bool {
        self.spec.paused
    }

    fn desired(&self) -> Result<CompiledRule, Vec<Problem>> {
        let problems = validate::rule(&self.spec);
        match compile_rule(&self.name_any(), &self.spec) {
            Ok(compiled) if problems.is_empty() => Ok(compiled),
            // `validate::rule` lists every problem `compile_rule` finds, and more.
            _ => Err(problems),
        }
    }

    /// The pipeline a rule names, else its fleet's, else none (the namespace's only one).
    async fn pipeline(&self, ctx: &Context, namespace: &str) -> Result<Option<String>, Error> {
        if let Some(pipeline) = &self.spec.pipeline {
            return Ok(Some(pipeline.clone()));
        }
        let Some(fleet) = &self.spec.fleet else {
            return Ok(None);
        };
        let fleets: Api<SensorFleet> = Api::namespaced(ctx.client.clone(), namespace);
        Ok(fleets.get_opt(fleet).await?.and_then(|f| f.spec.pipeline))
    }

    async fn mirror(
        &self,
        ctx: &Context,
        registry: &PipelineRegistry,
        compiled: CompiledRule,
        status: &mut AlertRuleStatus,
        _unchanged: bool,
    ) -> Result<String, Error> {
        let (pipeline, target) = (&registry.name, &registry.target);
        {
            let _serialised = target.rules_lock.lock().await;
            let stored = target.registry.rules().await?;
            if let Some(rules) = with_rule(&stored, &compiled) {
                target.registry.replace_rules(&rules).await?;
                ctx.event(
                    self,
                    EventType::Normal,
                    "Mirrored",
                    "MirrorRule",
                    format!("rule stored in the registry of Pipeline {pipeline}; processors pick it up on their next refresh"),
                )
                .await;
            }
        }
        // Live: counted over the whole history at every resync, one aggregate query.
        let activity = target.registry.rule_activity(&self.name_any()).await?;
        status.firing_count = activity.firing;
        status.last_fired = activity.last_fired.or(status.last_fired.take());
        Ok(format!("mirrored to the registry of Pipeline {pipeline}"))
    }

    async fn unmirror(&self, _ctx: &Context, registry: &PipelineRegistry) -> Result<String, Error> {
        let target = &registry.target;
        let _serialised = target.rules_lock.lock().await;
        let stored = target.registry.rules().await?;
        if let Some(rules) = without_rule(&stored, &self.name_any()) {
            target.registry.replace_rules(&rules).await?;
        }
        Ok(format!(
            "rule removed from the registry of Pipeline {}",
            registry.name
        ))
    }
}
