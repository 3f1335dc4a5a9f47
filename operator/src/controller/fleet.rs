//! SensorFleet → its devices in the pipeline's registry (`devices`), removed on delete.

use kube::ResourceExt;
use kube::runtime::events::EventType;
use sensorfleet_backends::DeviceRecord;
use sensorfleet_model::crd::status::SensorFleetStatus;
use sensorfleet_model::manifest::declared_count;
use sensorfleet_model::{Problem, SensorFleet};

use super::mirrored::Mirrored;
use super::{Context, PipelineRegistry};
use crate::mirror::device_records;
use crate::{Error, validate};

impl Mirrored for SensorFleet {
    const ROWS: &'static str = "devices";
    const REMOVE: &'static str = "RemoveDevices";
    type Desired = Vec<DeviceRecord>;

    fn paused(&self) -> bool {
        self.spec.paused
    }

    fn desired(&self) -> Result<Self::Desired, Vec<Problem>> {
        let problems = validate::fleet(&self.spec);
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(device_records(&self.name_any(), &self.spec))
    }

    fn declare(&self, status: &mut SensorFleetStatus) {
        status.device_count = declared_count(&self.spec);
    }

    async fn pipeline(&self, _ctx: &Context, _namespace: &str) -> Result<Option<String>, Error> {
        Ok(self.spec.pipeline.clone())
    }

    async fn mirror(
        &self,
        ctx: &Context,
        registry: &PipelineRegistry,
        records: Vec<DeviceRecord>,
        status: &mut SensorFleetStatus,
        unchanged: bool,
    ) -> Result<String, Error> {
        let (pipeline, target) = (&registry.name, &registry.target);
        // An unchanged, mirrored fleet writes nothing: checking its first and last device
        // is two indexed reads, and catches a registry that was wiped or restored.
        let intact = match (records.first(), records.last()) {
            (Some(first), Some(last)) => {
                target.registry.device(&first.device_id).await?.is_some()
                    && target.registry.device(&last.device_id).await?.is_some()
            }
            _ => true,
        };
        if !(unchanged && intact) {
            target.registry.upsert_devices(&records).await?;
            let keep: Vec<String> = records.iter().map(|r| r.device_id.clone()).collect();
            let pruned = target.registry.prune_fleet(&self.name_any(), &keep).await?;
            ctx.event(
                self,
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
        // Live: the processors record presence changes; one aggregate query per fleet.
        status.online_count = target.registry.online_count(&self.name_any()).await?;
        Ok(format!(
            "{} devices mirrored to the registry of Pipeline {pipeline}",
            records.len()
        ))
    }

    async fn unmirror(&self, registry: &PipelineRegistry) -> Result<String, Error> {
        let removed = registry
            .target
            .registry
            .prune_fleet(&self.name_any(), &[])
            .await?;
        Ok(format!(
            "{removed} devices removed from the registry of Pipeline {}",
            registry.name
        ))
    }
}
