//! The process's own CPU and memory on `/metrics`, in every role, under the names
//! Prometheus clients conventionally use (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_open_fds`), plus the memory limit the
//! container runs under (`sensorfleet_process_memory_limit_bytes`, from the cgroup), so
//! an alert can compare the two without kube-state-metrics.
//!
//! Read from `/proc/self` and `/sys/fs/cgroup` at each scrape. The `prometheus` crate's
//! own `process` feature would do the first three through the `procfs` crate and its
//! dependencies; four small parsers here are less to build and are tested below. On a
//! system without `/proc` the metrics are simply absent.

use std::sync::LazyLock;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, IntGauge, Opts};

/// Clock ticks per second of `/proc/<pid>/stat` times: `USER_HZ`, fixed at 100 by the
/// Linux ABI on every architecture Rust targets.
const TICKS_PER_SECOND: f64 = 100.0;
/// A cgroup v1 "no limit" is the largest page-aligned i64; anything above 2^60 bytes is
/// no limit at all.
const NO_LIMIT_ABOVE: u64 = 1 << 60;

/// User plus system CPU seconds of the whole process (every thread), from the text of
/// `/proc/self/stat`. The command name (field 2) may hold spaces and parentheses, so
/// the fields are counted from its last `)`.
pub fn cpu_seconds(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: state (field 3) … utime (14), stime (15).
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) as f64 / TICKS_PER_SECOND)
}

/// Resident memory in bytes, from the `VmRSS:` line of `/proc/self/status` (in kB).
pub fn resident_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The memory limit in bytes, from cgroup v2's `memory.max` or else v1's
/// `memory.limit_in_bytes`; `None` when there is none (`max`, or v1's huge number).
pub fn memory_limit(v2_max: Option<&str>, v1_limit: Option<&str>) -> Option<u64> {
    let text = v2_max.or(v1_limit)?.trim();
    let bytes: u64 = text.parse().ok()?;
    (bytes < NO_LIMIT_ABOVE).then_some(bytes)
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Collects the process metrics at each scrape.
struct ProcessCollector {
    cpu: Counter,
    resident: IntGauge,
    open_fds: IntGauge,
    limit: IntGauge,
    descs: Vec<Desc>,
}

impl ProcessCollector {
    fn new() -> prometheus::Result<Self> {
        let cpu = Counter::with_opts(Opts::new(
            "process_cpu_seconds_total",
            "User and system CPU time of the process, in seconds",
        ))?;
        let resident = IntGauge::with_opts(Opts::new(
            "process_resident_memory_bytes",
            "Resident memory of the process, in bytes",
        ))?;
        let open_fds = IntGauge::with_opts(Opts::new(
            "process_open_fds",
            "Open file descriptors of the process",
        ))?;
        let limit = IntGauge::with_opts(Opts::new(
            "sensorfleet_process_memory_limit_bytes",
            "Memory limit of the process's cgroup (its container's limit), in bytes; \
             absent when unlimited",
        ))?;
        let descs = [
            &cpu.desc(),
            &resident.desc(),
            &open_fds.desc(),
            &limit.desc(),
        ]
        .into_iter()
        .flatten()
        .map(|d| (*d).clone())
        .collect();
        Ok(Self {
            cpu,
            resident,
            open_fds,
            limit,
            descs,
        })
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = Vec::new();
        if let Some(total) = read("/proc/self/stat").as_deref().and_then(cpu_seconds) {
            // A counter only goes up: add what was used since the last scrape.
            let delta = total - self.cpu.get();
            if delta > 0.0 {
                self.cpu.inc_by(delta);
            }
            families.extend(self.cpu.collect());
        }
        if let Some(bytes) = read("/proc/self/status")
            .as_deref()
            .and_then(resident_bytes)
        {
            self.resident.set(i64::try_from(bytes).unwrap_or(i64::MAX));
            families.extend(self.resident.collect());
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds
                .set(i64::try_from(entries.count()).unwrap_or(i64::MAX));
            families.extend(self.open_fds.collect());
        }
        let v2 = read("/sys/fs/cgroup/memory.max");
        let v1 = read("/sys/fs/cgroup/memory/memory.limit_in_bytes");
        if let Some(bytes) = memory_limit(v2.as_deref(), v1.as_deref()) {
            self.limit.set(i64::try_from(bytes).unwrap_or(i64::MAX));
            families.extend(self.limit.collect());
        }
        families
    }
}

static REGISTERED: LazyLock<()> = LazyLock::new(|| {
    match ProcessCollector::new().and_then(|c| prometheus::register(Box::new(c))) {
        Ok(()) => {}
        Err(e) => tracing::warn!(error = %e, "process metrics are not available"),
    }
});

/// Registers the process metrics in the default registry, once.
pub fn register() {
    LazyLock::force(&REGISTERED);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_counted_from_after_the_command_name() {
        // A command name with a space and a parenthesis of its own; utime 250, stime 50.
        let stat = "4242 (sensor fleet) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 9 0 1000 2000000 500 18446744073709551615";
        assert_eq!(cpu_seconds(stat), Some(3.0));
        assert_eq!(cpu_seconds("4242 (truncated) S 1 2"), None);
        assert_eq!(cpu_seconds("no parenthesis"), None);
        let real = std::fs::read_to_string("/proc/self/stat").expect("this test runs on Linux");
        assert!(cpu_seconds(&real).is_some_and(|s| s >= 0.0), "{real}");
    }

    #[test]
    fn resident_memory_comes_from_vmrss_in_kib() {
        let status = "Name:\tsensorfleet\nVmPeak:\t  9000 kB\nVmRSS:\t  2048 kB\nThreads:\t9\n";
        assert_eq!(resident_bytes(status), Some(2 * 1024 * 1024));
        assert_eq!(resident_bytes("Name:\tkthread\n"), None);
        let real = std::fs::read_to_string("/proc/self/status").expect("Linux");
        assert!(resident_bytes(&real).is_some_and(|b| b > 0));
    }

    #[test]
    fn no_limit_is_absent_and_v2_wins_over_v1() {
        assert_eq!(memory_limit(Some("536870912\n"), None), Some(512 << 20));
        assert_eq!(memory_limit(Some("max\n"), Some("1024")), None);
        assert_eq!(memory_limit(None, Some("9223372036854771712\n")), None);
        assert_eq!(memory_limit(None, Some("268435456")), Some(256 << 20));
        assert_eq!(memory_limit(None, None), None);
    }

    #[test]
    fn the_collector_exports_the_process_metrics() {
        let collector = ProcessCollector::new().expect("valid metrics");
        let names: Vec<String> = collector
            .collect()
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
    }
}
