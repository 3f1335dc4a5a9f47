//! `sensorfleet credentials`: the MQTT password of a device under `up --device-auth`,
//! printed or rotated. Reads and writes the same files in `--data-dir` that a running
//! `up` reads (`workers::ingest::auth`); a rotation takes effect at the device's next
//! CONNECT, without a restart. With `--fleet-secret-file`, the password the operator
//! provisioned at the broker for a SensorFleet's device (derived from the fleet secret
//! in `<fleet>-device-credentials`, for fleets too large to list every password there).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use sensorfleet_model::credentials::{device_password, secret_from_hex};
use sensorfleet_workers::ingest::auth::CredentialStore;

/// `sensorfleet credentials`.
#[derive(clap::Args, Debug)]
pub struct CredentialsArgs {
    /// The device (its id is its MQTT username); repeat the flag for more.
    #[arg(long = "device", required = true)]
    pub devices: Vec<String>,
    /// Give each a new password; its old one stops working at its next connect.
    #[arg(long, conflicts_with = "fleet_secret_file")]
    pub rotate: bool,
    /// A file with a SensorFleet's secret (key `fleet-secret` of its Secret
    /// `<fleet>-device-credentials`); e.g.
    /// `kubectl get secret lab-device-credentials -o jsonpath='{.data.fleet-secret}' | base64 -d > lab.key`.
    /// To rotate a whole fleet, delete that Secret: the operator makes a new one.
    #[arg(long, value_name = "FILE")]
    pub fleet_secret_file: Option<PathBuf>,
    /// The data directory of the `up` the devices connect to.
    #[arg(long, default_value = ".sensorfleet", env = "SENSORFLEET_DATA_DIR")]
    pub data_dir: PathBuf,
}

/// Prints `device_id,password` per device (CSV with a header), rotating first if asked.
pub fn run(args: CredentialsArgs) -> anyhow::Result<()> {
    let store = CredentialStore::new(&args.data_dir);
    let fleet_secret = match &args.fleet_secret_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Some(secret_from_hex(&text).with_context(|| {
                format!(
                    "{} is not a fleet secret (64 hex digits: key fleet-secret of the fleet's Secret, base64-decoded)",
                    path.display()
                )
            })?)
        }
        None => None,
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "device_id,password")?;
    for device in &args.devices {
        anyhow::ensure!(
            !device.is_empty() && !device.contains([',', '\n', '\r']),
            "{device:?} is not a device id"
        );
        if let Some(secret) = &fleet_secret {
            // The operator provisions generation 0; a fleet rotates with a new secret.
            writeln!(out, "{device},{}", device_password(secret, device, 0))?;
            continue;
        }
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
