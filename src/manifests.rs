//! Reading SensorFleet and AlertRule manifests from files and folders (`up -f`).

use std::path::{Path, PathBuf};

use sensorfleet_model::ManifestSet;

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
