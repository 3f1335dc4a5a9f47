//! Reading SensorFleet and AlertRule manifests from files and folders (`up -f`).

use std::path::{Path, PathBuf};

use sensorfleet_backends::{DeviceRecord, Registry};
use sensorfleet_model::ManifestSet;
use sensorfleet_workers::processor::Declarations;
use tracing::info;

/// The default manifests, compiled in, so `sensorfleet up` works from any folder.
pub const DEFAULTS: [(&str, &str); 2] = [
    (
        "examples/fleets.yaml",
        include_str!("../examples/fleets.yaml"),
    ),
    (
        "examples/alert-rules.yaml",
        include_str!("../examples/alert-rules.yaml"),
    ),
];

/// Reads every `.yaml`/`.yml` file given, or found (sorted, not recursive) in a folder
/// given, and validates the whole set. Errors name the file, object, field and problem.
pub fn load(paths: &[PathBuf]) -> anyhow::Result<ManifestSet> {
    let mut set = ManifestSet::default();
    if paths.is_empty() {
        for (name, text) in DEFAULTS {
            set.add_file(name, text)?;
        }
    }
    for path in paths {
        for file in files_of(path)? {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", file.display()))?;
            set.add_file(&file.display().to_string(), &text)?;
        }
    }
    set.validate()?;
    Ok(set)
}

fn files_of(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e}; -f takes manifest files or folders of them",
            path.display()
        )
    })?;
    if meta.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| anyhow::anyhow!("{}: cannot list: {e}", path.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    if files.is_empty() {
        anyhow::bail!("{}: no .yaml or .yml files in this folder", path.display());
    }
    Ok(files)
}

/// Mirrors the declared devices and rules into the registry, removing devices of fleets
/// that are no longer declared.
pub async fn mirror(registry: &dyn Registry, set: &ManifestSet) -> anyhow::Result<Declarations> {
    let devices = set.devices();
    let records: Vec<DeviceRecord> = devices
        .iter()
        .map(|d| DeviceRecord {
            device_id: d.device_id.clone(),
            device_type: d.device_type.clone(),
            location: d.location.clone(),
            status: "active".to_owned(),
            fleet: Some(d.fleet.clone()),
            publish_interval_ms: Some(d.publish_interval_ms),
            offline_after_ms: Some(d.offline_after_ms),
        })
        .collect();
    registry.upsert_devices(&records).await?;
    let mut stored_fleets: Vec<String> = registry
        .devices()
        .await?
        .into_iter()
        .filter_map(|d| d.fleet)
        .collect();
    stored_fleets.sort();
    stored_fleets.dedup();
    for fleet in stored_fleets {
        let keep: Vec<String> = devices
            .iter()
            .filter(|d| d.fleet == fleet)
            .map(|d| d.device_id.clone())
            .collect();
        let removed = registry.prune_fleet(&fleet, &keep).await?;
        if removed > 0 {
            info!(
                fleet,
                removed, "devices no longer declared were removed from the registry"
            );
        }
    }
    let rules = set.compiled_rules();
    registry.replace_rules(&rules).await?;
    Ok(Declarations { devices, rules })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiled_in_defaults_are_valid_and_the_same_as_examples() {
        let set = load(&[]).expect("defaults are valid");
        assert!(set.devices().len() >= 10);
        assert!(
            set.rules
                .iter()
                .any(|r| r.spec.min == Some(10.0) && r.spec.max == Some(30.0))
        );
        let from_folder = load(&[PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples"
        ))])
        .expect("examples");
        assert_eq!(set.devices(), from_folder.devices());
    }

    #[test]
    fn a_bad_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.yaml");
        std::fs::write(&file, "apiVersion: iot.sensorfleet.dev/v1alpha1\nkind: SensorFleet\nmetadata: {name: x}\nspec: {deviceType: t}\n").unwrap();
        let e = load(&[dir.path().to_owned()]).unwrap_err().to_string();
        assert!(
            e.contains("bad.yaml")
                && e.contains("SensorFleet/x")
                && e.contains("declares no device"),
            "{e}"
        );
        assert!(load(&[dir.path().join("missing")]).is_err());
    }
}
