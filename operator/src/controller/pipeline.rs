//! Pipeline → ConfigMap, the bridge's StatefulSet, Deployments, Services, the rollup
//! CronJob, the API's Ingress and HorizontalPodAutoscaler, and the Kafka topic.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use sensorfleet_model::crd::status::{
    Condition, ConditionStatus, DEGRADED, PipelineStatus, READY, REASON_RECONCILED, TOPIC_READY,
    WORKERS_AVAILABLE, WorkerReplicas, set_condition,
};
use sensorfleet_model::{Pipeline, SensorFleet};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Context, Halt, halt, now, patch_status_if_changed};
use crate::build::{self, Replicas, Worker};
use crate::partitions::{self, PartitionPlan};
use crate::topic::{PartitionCount, TopicError, TopicRequest};
use crate::{Error, FIELD_MANAGER, validate};

/// Retry of a topic the Kafka cluster refused or could not be reached for.
const TOPIC_RETRY: Duration = Duration::from_secs(30);

/// One reconcile of a Pipeline: dereference → validate → plan → build → apply → status.
pub async fn reconcile(pipeline: Arc<Pipeline>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = pipeline
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let name = pipeline.name_any();
    let api: Api<Pipeline> = Api::namespaced(ctx.client.clone(), &namespace);
    let old = pipeline.status.clone();
    let generation = pipeline.meta().generation;
    let at = now();

    let halted = if pipeline.spec.paused {
        Some(Halt::Paused("the workers are left as they are"))
    } else {
        Some(validate::pipeline(&pipeline.spec))
            .filter(|problems| !problems.is_empty())
            .map(Halt::Invalid)
    };
    if let Some(halted) = halted {
        let mut status = old.unwrap_or_default();
        status.observed_generation = generation;
        return halt(&ctx, &api, pipeline.as_ref(), status, halted, &at).await;
    }

    // Dereference: the fleets that belong to this pipeline.
    let fleets: Api<SensorFleet> = Api::namespaced(ctx.client.clone(), &namespace);
    let all_fleets = fleets.list(&ListParams::default()).await?.items;
    let pipeline_names: Vec<String> = Api::<Pipeline>::namespaced(ctx.client.clone(), &namespace)
        .list_metadata(&ListParams::default())
        .await?
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    let ours = all_fleets.iter().filter(|f| {
        validate::fleet(&f.spec).is_empty()
            && validate::resolve_pipeline(f.spec.pipeline.as_deref(), &pipeline_names)
                == Ok(name.as_str())
    });
    let declared = partitions::declared_devices(ours.map(|f| &f.spec));

    // Plan and grow the topic.
    let current = old.as_ref().map_or(0, |s| s.partitions);
    let plan = partitions::plan(declared, &pipeline.spec.kafka, current);
    let kafka = &pipeline.spec.kafka;
    let topic = ctx
        .topics
        .ensure_partitions(&TopicRequest {
            bootstrap_servers: kafka.bootstrap_servers.clone(),
            topic: kafka.topic.clone(),
            partitions: plan.target,
            replication_factor: kafka.replication_factor,
        })
        .await;
    let partitions = topic.as_ref().map_or(plan.target, |count| count.current);
    let replicas = Replicas {
        bridge: pipeline.spec.bridge.replicas,
        processor: partitions::processor_replicas(partitions, &pipeline.spec.processor),
        api: pipeline.spec.api.replicas,
    };

    // Build and apply.
    let desired = build::pipeline_objects(&pipeline, replicas)?;
    let client = &ctx.client;
    apply(
        &Api::<ConfigMap>::namespaced(client.clone(), &namespace),
        &desired.config_map,
    )
    .await?;
    apply(
        &Api::<StatefulSet>::namespaced(client.clone(), &namespace),
        &desired.bridge,
    )
    .await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    // Operators before the bridge's StatefulSet made it a Deployment of the same name;
    // its pods would join the MQTT group under ids no restart gives back. Not found is
    // the usual case.
    delete_if_present(&deployments, &Worker::Bridge.object_name(&name)).await?;
    for deployment in &desired.deployments {
        apply(&deployments, deployment).await?;
    }
    for service in &desired.services {
        apply(
            &Api::<Service>::namespaced(client.clone(), &namespace),
            service,
        )
        .await?;
    }
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), &namespace);
    match &desired.ingress {
        Some(ingress) => apply(&ingresses, ingress).await?,
        // `spec.api.ingress` removed: the Ingress made for it goes too. Not found is the
        // usual case (none was ever asked for).
        None => delete_if_present(&ingresses, &Worker::Api.object_name(&name)).await?,
    }
    let autoscalers: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &namespace);
    match &desired.autoscaler {
        Some(autoscaler) => apply(&autoscalers, autoscaler).await?,
        None => delete_if_present(&autoscalers, &Worker::Api.object_name(&name)).await?,
    }
    let cron_jobs: Api<CronJob> = Api::namespaced(client.clone(), &namespace);
    match &desired.rollup {
        Some(rollup) => apply(&cron_jobs, rollup).await?,
        None => delete_if_present(&cron_jobs, &build::rollup_name(&name)).await?,
    }

    // Status from what was applied, and from what the workloads say of their pods (a
    // change of theirs triggers a reconcile: the controller owns them).
    let mut status = applied(
        old.clone().unwrap_or_default(),
        generation,
        &plan,
        &topic,
        replicas,
        &at,
    );
    let mut counts = Vec::new();
    if let Some(bridge) = Api::<StatefulSet>::namespaced(client.clone(), &namespace)
        .get_opt(&Worker::Bridge.object_name(&name))
        .await?
    {
        let wanted = bridge.spec.replicas.unwrap_or(1);
        let ready = bridge.status.and_then(|s| s.ready_replicas).unwrap_or(0);
        counts.push(WorkerCount {
            worker: Worker::Bridge,
            wanted,
            ready,
        });
    }
    for worker in [Worker::Processor, Worker::Api] {
        if let Some(deployment) = deployments.get_opt(&worker.object_name(&name)).await? {
            let wanted = deployment.spec.replicas.unwrap_or(1);
            let ready = deployment
                .status
                .and_then(|s| s.available_replicas)
                .unwrap_or(0);
            counts.push(WorkerCount {
                worker,
                wanted,
                ready,
            });
        }
    }
    set_condition(
        &mut status.conditions,
        workers_available(&counts, generation, &at),
    );
    let grew = topic.as_ref().is_ok_and(|c| c.changed);
    if patch_status_if_changed(&api, pipeline.as_ref(), old.as_ref(), &status).await? && grew {
        ctx.event(
            pipeline.as_ref(),
            EventType::Normal,
            "PartitionsGrown",
            "EnsureTopic",
            format!(
                "topic {} has {partitions} partitions for {declared} declared devices; processors: {}",
                kafka.topic, replicas.processor
            ),
        )
        .await;
    }
    Ok(match topic {
        Err(TopicError::Unreachable { .. } | TopicError::Refused { .. }) => {
            Action::requeue(TOPIC_RETRY)
        }
        _ => Action::requeue(ctx.resync),
    })
}

/// Server-side apply of one object with the operator's field manager. Forced: the
/// operator owns these fields; a person's `kubectl edit` of them is drift to repair.
async fn apply<K>(api: &Api<K>, object: &K) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let name = object
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingObjectKey("metadata.name"))?;
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await?;
    Ok(())
}

/// Deletes the object `name` of `api`; one that does not exist is no error.
async fn delete_if_present<K>(api: &Api<K>, name: &str) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Replicas a worker wants and has ready, as its workload reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerCount {
    /// Which worker.
    pub worker: Worker,
    /// Replicas its StatefulSet or Deployment wants.
    pub wanted: i32,
    /// Of those, ready (StatefulSet) or available (Deployment).
    pub ready: i32,
}

/// `WorkersAvailable`: true when every worker has all the replicas it wants ready.
pub fn workers_available(counts: &[WorkerCount], generation: Option<i64>, now: &str) -> Condition {
    let summary = counts
        .iter()
        .map(|c| format!("{} {}/{}", c.worker.role(), c.ready, c.wanted))
        .collect::<Vec<_>>()
        .join(", ");
    let short: Vec<&WorkerCount> = counts.iter().filter(|c| c.ready < c.wanted).collect();
    let (state, reason, message) = if counts.len() < Worker::ALL.len() {
        (
            ConditionStatus::Unknown,
            "WorkloadsMissing",
            format!("not every workload exists yet ({summary})"),
        )
    } else if short.is_empty() {
        (
            ConditionStatus::True,
            "ReplicasReady",
            format!("ready: {summary}"),
        )
    } else {
        (
            ConditionStatus::False,
            "ReplicasUnavailable",
            format!(
                "waiting for {} (ready/wanted: {summary}); `kubectl describe pod` of the worker says why",
                short
                    .iter()
                    .map(|c| c.worker.role())
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        )
    };
    Condition::new(WORKERS_AVAILABLE, state, reason, message, generation, now)
}

/// Status after an apply: partitions, replicas and the three conditions.
pub fn applied(
    mut status: PipelineStatus,
    generation: Option<i64>,
    plan: &PartitionPlan,
    topic: &Result<PartitionCount, TopicError>,
    replicas: Replicas,
    now: &str,
) -> PipelineStatus {
    status.observed_generation = generation;
    status.declared_devices = plan.declared_devices;
    status.wanted_partitions = plan.wanted;
    status.replicas = WorkerReplicas {
        bridge: replicas.bridge,
        processor: replicas.processor,
        api: replicas.api,
    };
    let condition = |type_, state, reason, message: String| {
        Condition::new(type_, state, reason, message, generation, now)
    };
    let (topic_condition, degraded) = match topic {
        Ok(count) => {
            status.partitions = count.current;
            let message = if count.current > plan.wanted {
                format!(
                    "{} partitions; the declared devices ask for {}, but Kafka partitions only grow",
                    count.current, plan.wanted
                )
            } else {
                format!("{} partitions", count.current)
            };
            let reason = if count.current > plan.wanted {
                "PartitionsKept"
            } else {
                "PartitionsReady"
            };
            (
                condition(TOPIC_READY, ConditionStatus::True, reason, message),
                None,
            )
        }
        Err(e) => {
            // The topic was not touched: report what the plan wants, not a count the
            // cluster never confirmed (status.partitions keeps the last confirmed one).
            let reason = match e {
                TopicError::Unreachable { .. } => "KafkaUnreachable",
                TopicError::Refused { .. } => "TopicRefused",
            };
            let message = format!("{e}; wanted {} partitions", plan.target);
            (
                condition(TOPIC_READY, ConditionStatus::False, reason, message.clone()),
                Some((reason, message)),
            )
        }
    };
    set_condition(&mut status.conditions, topic_condition);
    let degraded = match degraded {
        Some((reason, message)) => condition(DEGRADED, ConditionStatus::True, reason, message),
        None => condition(
            DEGRADED,
            ConditionStatus::False,
            REASON_RECONCILED,
            String::new(),
        ),
    };
    set_condition(&mut status.conditions, degraded);
    set_condition(
        &mut status.conditions,
        condition(
            READY,
            ConditionStatus::True,
            REASON_RECONCILED,
            format!(
                "bridge {}, processor {}, api {} replicas applied for {} declared devices",
                replicas.bridge, replicas.processor, replicas.api, plan.declared_devices
            ),
        ),
    );
    status
}

#[cfg(test)]
mod tests {
    use sensorfleet_model::crd::status::find_condition;

    use super::*;

    #[test]
    fn workers_are_available_only_when_every_one_has_its_replicas_ready() {
        let count = |worker, wanted, ready| WorkerCount {
            worker,
            wanted,
            ready,
        };
        let all_ready = [
            count(Worker::Bridge, 2, 2),
            count(Worker::Processor, 5, 5),
            count(Worker::Api, 1, 1),
        ];
        let ready = workers_available(&all_ready, Some(2), "t");
        assert_eq!(ready.status, ConditionStatus::True);
        assert_eq!(ready.message, "ready: bridge 2/2, processor 5/5, api 1/1");
        let rolling = [
            count(Worker::Bridge, 2, 1),
            count(Worker::Processor, 5, 5),
            count(Worker::Api, 1, 0),
        ];
        let waiting = workers_available(&rolling, Some(2), "t");
        assert_eq!(waiting.status, ConditionStatus::False);
        assert_eq!(waiting.reason, "ReplicasUnavailable");
        assert!(
            waiting.message.starts_with("waiting for bridge and api"),
            "{}",
            waiting.message
        );
        let missing = workers_available(&all_ready[..2], Some(2), "t");
        assert_eq!(missing.status, ConditionStatus::Unknown);
        // Scaled to zero on purpose is available.
        let zero = [
            count(Worker::Bridge, 0, 0),
            count(Worker::Processor, 3, 3),
            count(Worker::Api, 0, 0),
        ];
        assert_eq!(
            workers_available(&zero, None, "t").status,
            ConditionStatus::True
        );
    }

    fn plan(declared: u64, wanted: i32, target: i32) -> PartitionPlan {
        PartitionPlan {
            declared_devices: declared,
            wanted,
            target,
        }
    }

    const REPLICAS: Replicas = Replicas {
        bridge: 2,
        processor: 5,
        api: 1,
    };

    #[test]
    fn a_shrunk_fleet_keeps_partitions_and_says_so() {
        let topic = Ok(PartitionCount {
            current: 50,
            requested: 50,
            changed: false,
        });
        let status = applied(
            PipelineStatus::default(),
            Some(3),
            &plan(5_000, 5, 50),
            &topic,
            REPLICAS,
            "t1",
        );
        assert_eq!(status.partitions, 50);
        assert_eq!(status.wanted_partitions, 5);
        assert_eq!(status.declared_devices, 5_000);
        assert_eq!(status.observed_generation, Some(3));
        let topic_ready = find_condition(&status.conditions, TOPIC_READY).expect("TopicReady");
        assert_eq!(topic_ready.reason, "PartitionsKept");
        assert!(
            topic_ready.message.contains("only grow"),
            "{}",
            topic_ready.message
        );
        let ready = find_condition(&status.conditions, READY).expect("Ready");
        assert_eq!(ready.status, ConditionStatus::True);
    }

    #[test]
    fn reapplying_the_same_thing_gives_an_identical_status() {
        let topic = Ok(PartitionCount {
            current: 5,
            requested: 5,
            changed: false,
        });
        let first = applied(
            PipelineStatus::default(),
            Some(1),
            &plan(5_000, 5, 5),
            &topic,
            REPLICAS,
            "t1",
        );
        let again = applied(
            first.clone(),
            Some(1),
            &plan(5_000, 5, 5),
            &topic,
            REPLICAS,
            "t2",
        );
        assert_eq!(first, again, "no write when nothing changed");
    }

    #[test]
    fn unreachable_kafka_is_degraded_and_keeps_the_confirmed_count() {
        let previous = PipelineStatus {
            partitions: 3,
            ..Default::default()
        };
        let status = applied(
            previous,
            Some(1),
            &plan(50_000, 50, 50),
            &Err(TopicError::Unreachable {
                bootstrap: "kafka:9092".into(),
                detail: "all brokers down".into(),
            }),
            REPLICAS,
            "t1",
        );
        assert_eq!(status.partitions, 3);
        let degraded = find_condition(&status.conditions, DEGRADED).expect("Degraded");
        assert_eq!(degraded.status, ConditionStatus::True);
        assert_eq!(degraded.reason, "KafkaUnreachable");
        assert!(degraded.message.contains("wanted 50"));
    }
}
