//! How many Kafka partitions and processor replicas a pipeline gets: pure arithmetic.

use sensorfleet_model::crd::pipeline::KafkaSpec;
use sensorfleet_model::manifest::declared_count;
use sensorfleet_model::{SensorFleetSpec, crd::pipeline::ProcessorSpec};

/// What the declared devices ask for and what the topic will have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionPlan {
    /// Devices declared by the pipeline's fleets.
    pub declared_devices: u64,
    /// `clamp(ceil(devices / devicesPerPartition), min, max)`.
    pub wanted: i32,
    /// `max(wanted, current)`: partitions are never removed.
    pub target: i32,
}

impl PartitionPlan {
    /// True when a fleet shrank (or the policy changed) below what the topic has: the
    /// partitions stay, and the status says so.
    pub fn kept_above_wanted(&self) -> bool {
        self.target > self.wanted
    }
}

/// Sum of the devices the fleets declare, without building them (a 100k-device range
/// costs nothing).
pub fn declared_devices<'a>(fleets: impl IntoIterator<Item = &'a SensorFleetSpec>) -> u64 {
    fleets.into_iter().map(declared_count).sum()
}

/// `partitions = clamp(ceil(devices / devicesPerPartition), min, max)`, never below
/// `current` (the topic's partitions now, 0 when it does not exist yet).
pub fn plan(declared_devices: u64, kafka: &KafkaSpec, current: i32) -> PartitionPlan {
    let per = u64::from(kafka.devices_per_partition.max(1));
    let needed = declared_devices.div_ceil(per);
    let min = kafka.min_partitions.max(1);
    let max = kafka.max_partitions.max(min);
    // `needed` can exceed i32 only with absurd inputs; clamp in u64 first.
    let wanted = needed.clamp(min as u64, max as u64) as i32;
    PartitionPlan {
        declared_devices,
        wanted,
        target: wanted.max(current),
    }
}

/// Processor replicas: one per partition (a consumer group cannot use more), at most
/// `maxReplicas`; none while `paused`.
pub fn processor_replicas(partitions: i32, processor: &ProcessorSpec) -> i32 {
    if processor.paused {
        return 0;
    }
    partitions.min(processor.max_replicas).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensorfleet_model::crd::fleet::GenerateSpec;

    fn kafka(per: u32, min: i32, max: i32) -> KafkaSpec {
        KafkaSpec {
            bootstrap_servers: "k:9092".into(),
            topic: "t".into(),
            devices_per_partition: per,
            min_partitions: min,
            max_partitions: max,
            replication_factor: 1,
        }
    }

    #[test]
    fn ceil_then_clamp() {
        let k = kafka(1000, 3, 64);
        assert_eq!(plan(0, &k, 0).wanted, 3);
        assert_eq!(plan(3000, &k, 0).wanted, 3);
        assert_eq!(plan(3001, &k, 0).wanted, 4);
        assert_eq!(plan(5_000, &k, 0).wanted, 5);
        assert_eq!(plan(50_000, &k, 0).wanted, 50);
        assert_eq!(plan(100_000, &k, 0).wanted, 64);
        assert_eq!(plan(u64::MAX, &k, 0).wanted, 64);
    }

    #[test]
    fn partitions_only_grow() {
        let k = kafka(1000, 3, 64);
        let grown = plan(50_000, &k, 5);
        assert_eq!((grown.wanted, grown.target), (50, 50));
        assert!(!grown.kept_above_wanted());
        let shrunk = plan(5_000, &k, 50);
        assert_eq!((shrunk.wanted, shrunk.target), (5, 50));
        assert!(shrunk.kept_above_wanted());
        // Lowering maxPartitions below what exists removes nothing either.
        assert_eq!(plan(100_000, &kafka(1000, 3, 10), 50).target, 50);
    }

    #[test]
    fn processors_follow_partitions_up_to_max() {
        let p = ProcessorSpec {
            max_replicas: 16,
            ..Default::default()
        };
        assert_eq!(processor_replicas(5, &p), 5);
        assert_eq!(processor_replicas(50, &p), 16);
        assert_eq!(processor_replicas(0, &p), 1);
        let paused = ProcessorSpec { paused: true, ..p };
        assert_eq!(processor_replicas(5, &paused), 0, "paused for a replay");
    }

    #[test]
    fn generated_ranges_count_without_building() {
        let fleets = [
            SensorFleetSpec {
                device_type: "t".into(),
                generate: Some(GenerateSpec {
                    count: 100_000,
                    id_prefix: "a-".into(),
                }),
                devices: vec![Default::default(); 2],
                ..Default::default()
            },
            SensorFleetSpec {
                device_type: "t".into(),
                generate: Some(GenerateSpec {
                    count: 5,
                    id_prefix: "b-".into(),
                }),
                ..Default::default()
            },
        ];
        assert_eq!(declared_devices(&fleets), 100_007);
    }
}
