//! `sensorfleet apply`: mirrors SensorFleet and AlertRule manifests into the registry —
//! what the operator does in Kubernetes — so separately running processors and the API
//! see them.

use std::path::PathBuf;

use super::BackendArgs;
use crate::manifests;

// The flags of `sensorfleet apply` (its help text is the subcommand's doc in main.rs).
#[derive(clap::Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub backends: BackendArgs,
    /// SensorFleet/AlertRule manifest files or folders (repeatable). Default: the built-in examples/.
    #[arg(short = 'f', long = "file", value_delimiter = ',')]
    pub files: Vec<PathBuf>,
}

/// Validates the manifests, writes them to the registry and says what it wrote.
pub async fn run(args: ApplyArgs) -> anyhow::Result<()> {
    let set = manifests::load(&args.files)?;
    let connector = args.backends.connector("sensorfleet apply")?;
    let registry = args
        .backends
        .open("registry", || connector.registry(2))
        .await?;
    let declared = manifests::mirror(registry.as_ref(), &set).await?;
    println!(
        "applied {} fleets ({} devices) and {} alert rules to the {} registry",
        set.fleets.len(),
        declared.devices.len(),
        declared.rules.len(),
        registry.name()
    );
    Ok(())
}
