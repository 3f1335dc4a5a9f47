//! `sensorfleet credentials`: the MQTT password of a device under `up --device-auth`,
//! printed or rotated. Reads and writes the same files in `--data-dir` that a running
//! `up` reads (`workers::ingest::auth`); a rotation takes effect at the device's next
//! CONNECT, without a restart.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use sensorfleet_workers::ingest::auth::CredentialStore;

/// `sensorfleet credentials`.
#[derive(clap::Args, Debug)]
pub struct CredentialsArgs {
    /// The device (its id is its MQTT username); repeat the flag for more.
    #[arg(long = "device", required = true)]
    pub devices: Vec<String>,
    /// Give each a new password; its old one stops working at its next connect.
    #[arg(long)]
    pub rotate: bool,
    /// The data directory of the `up` the devices connect to.
    #[arg(long, default_value = ".sensorfleet", env = "SENSORFLEET_DATA_DIR")]
    pub data_dir: PathBuf,
}

/// Prints `device_id,password` per device (CSV with a header), rotating first if asked.
pub fn run(args: CredentialsArgs) -> anyhow::Result<()> {
    let store = CredentialStore::new(&args.data_dir);
    let mut out = std::io::stdout().lock();
    writeln!(out, "device_id,password")?;
    for device in &args.devices {
        anyhow::ensure!(
            !device.is_empty() && !device.contains([',', '\n', '\r']),
            "{device:?} is not a device id"
        );
        let password = if args.rotate {
            store.rotate(device)
        } else {
            store.password(device)
        }
        .with_context(|| {
            format!(
                "cannot read the device secret in {}; is --data-dir the one `up` uses?",
                args.data_dir.display()
            )
        })?;
        writeln!(out, "{device},{password}")?;
    }
    Ok(())
}
