//! `crds/` must be exactly what the Rust types generate: a CRD edited by hand, or a type
//! changed without regenerating, fails here.

use std::path::PathBuf;

use sensorfleet_operator::crdgen;

#[test]
fn crds_folder_matches_the_types() {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../crds"));
    let mut stale = Vec::new();
    for crd in crdgen::crds() {
        let path = dir.join(crdgen::file_name(&crd));
        let expected = crdgen::to_yaml(&crd).expect("renders");
        match std::fs::read_to_string(&path) {
            Ok(actual) if actual == expected => {}
            Ok(_) => stale.push(format!("{} differs", path.display())),
            Err(e) => stale.push(format!("{}: {e}", path.display())),
        }
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".yaml"))
                .collect()
        })
        .unwrap_or_default();
    on_disk.sort();
    let mut generated: Vec<String> = crdgen::crds().iter().map(crdgen::file_name).collect();
    generated.sort();
    if on_disk != generated {
        stale.push(format!(
            "crds/ holds {on_disk:?}, the types make {generated:?}"
        ));
    }
    assert!(
        stale.is_empty(),
        "crds/ drifted from the Rust types: {stale:#?}\nrun `sensorfleet crdgen --out crds/` and commit the result"
    );
}
