//! `sensorfleet crdgen`: the CustomResourceDefinitions as YAML.

use std::path::PathBuf;

use sensorfleet_operator::crdgen;

// The flags of `sensorfleet crdgen` (its help text is the subcommand's doc in main.rs).
#[derive(clap::Args)]
pub struct CrdgenArgs {
    /// Write one file per CRD into this folder instead of printing them.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Prints the CRDs, or writes `crds/<plural>.yaml` files into `--out`.
pub fn run(args: CrdgenArgs) -> anyhow::Result<()> {
    match args.out {
        Some(dir) => {
            for path in crdgen::write_dir(&dir)? {
                eprintln!("wrote {}", path.display());
            }
        }
        None => print!("{}", crdgen::all_yaml()?),
    }
    Ok(())
}
