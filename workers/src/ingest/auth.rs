//! Who may connect to the embedded endpoint and where they may publish.
//!
//! [`Anonymous`] is the first-run default of `sensorfleet up`: anyone, anywhere.
//! [`DeviceCredentials`] (`up --device-auth`) admits only declared devices, each with the
//! password derived from the fleet secret ([`sensorfleet_model::credentials`]), and lets
//! each publish only to its own topic `sensors/<its declared type>/<its id>`. A CONNECT
//! without a username is refused with CONNACK 0x05 (not authorized), a wrong password
//! with 0x04; a PUBLISH to any other topic closes the connection (MQTT 3.1.1 has no
//! negative PUBACK) before the message reaches the pipeline.
//!
//! The secret and the per-device generations live in the data directory
//! ([`CredentialStore`]): `device-secret` (hex, mode 0600) and `device-generations.json`.
//! `sensorfleet credentials` prints and rotates from the same files; a running `up`
//! re-reads the generations when the file changes, so a rotation takes effect at the
//! device's next CONNECT.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use sensorfleet_model::credentials::{
    SECRET_BYTES, device_password, new_secret, password_matches, secret_from_hex, secret_to_hex,
};
use sensorfleet_model::reading::parse_topic;

/// Why a CONNECT is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No username: CONNACK 0x05.
    Anonymous,
    /// Unknown device or wrong password: CONNACK 0x04.
    BadCredentials,
}

/// Authentication and authorization of device connections.
pub trait DeviceAuth: Send + Sync + std::fmt::Debug {
    /// Checks a CONNECT's credentials; `Ok` holds the identity the connection then
    /// publishes as.
    fn authenticate(
        &self,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> Result<String, Refusal>;

    /// Whether `identity` may publish to `topic`.
    fn may_publish(&self, identity: &str, topic: &str) -> bool;
}

/// No authentication: every client, every topic.
#[derive(Debug, Default, Clone, Copy)]
pub struct Anonymous;

impl DeviceAuth for Anonymous {
    fn authenticate(&self, username: Option<&str>, _: Option<&[u8]>) -> Result<String, Refusal> {
        Ok(username.unwrap_or_default().to_owned())
    }

    fn may_publish(&self, _: &str, _: &str) -> bool {
        true
    }
}

/// Declared devices with derived passwords, each publishing to its own topic only.
/// Its `Debug` shows how many devices it knows, never the secret.
pub struct DeviceCredentials {
    store: CredentialStore,
    secret: Vec<u8>,
    /// Declared device id → its declared type.
    devices: HashMap<String, String>,
    /// The generations as last read, and the file's modification time then.
    generations: Mutex<(Option<SystemTime>, BTreeMap<String, u32>)>,
}

impl DeviceCredentials {
    /// Credentials for the `declared` devices (id, type), from `store` (created if new).
    pub fn open(
        store: CredentialStore,
        declared: impl IntoIterator<Item = (String, String)>,
    ) -> std::io::Result<Self> {
        let secret = store.secret()?;
        let generations = (store.generations_modified(), store.generations()?);
        Ok(Self {
            store,
            secret,
            devices: declared.into_iter().collect(),
            generations: Mutex::new(generations),
        })
    }

    fn generation(&self, device_id: &str) -> u32 {
        let mut cached = self
            .generations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let modified = self.store.generations_modified();
        if modified != cached.0 {
            // A rotation by `sensorfleet credentials`; a file being rewritten that does
            // not parse yet keeps the old view until the next CONNECT.
            if let Ok(fresh) = self.store.generations() {
                *cached = (modified, fresh);
            }
        }
        cached.1.get(device_id).copied().unwrap_or(0)
    }
}

impl std::fmt::Debug for DeviceCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCredentials")
            .field("devices", &self.devices.len())
            .finish_non_exhaustive()
    }
}

impl DeviceAuth for DeviceCredentials {
    fn authenticate(
        &self,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> Result<String, Refusal> {
        let username = username
            .filter(|u| !u.is_empty())
            .ok_or(Refusal::Anonymous)?;
        if !self.devices.contains_key(username) {
            return Err(Refusal::BadCredentials);
        }
        let generation = self.generation(username);
        match password {
            Some(p) if password_matches(&self.secret, username, generation, p) => {
                Ok(username.to_owned())
            }
            _ => Err(Refusal::BadCredentials),
        }
    }

    fn may_publish(&self, identity: &str, topic: &str) -> bool {
        match parse_topic(topic) {
            Ok((kind, id)) => {
                id == identity && self.devices.get(identity).is_some_and(|t| t == kind)
            }
            Err(_) => false,
        }
    }
}

/// The fleet secret and the per-device generations, as files in a folder.
#[derive(Debug, Clone)]
pub struct CredentialStore {
    dir: PathBuf,
}

impl CredentialStore {
    /// The store in `dir` (created on first use).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    fn secret_path(&self) -> PathBuf {
        self.dir.join("device-secret")
    }

    fn generations_path(&self) -> PathBuf {
        self.dir.join("device-generations.json")
    }

    /// The fleet secret, made (32 random bytes, readable by its owner only) if there is
    /// none yet.
    pub fn secret(&self) -> std::io::Result<Vec<u8>> {
        let path = self.secret_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => secret_from_hex(&text).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} is not a device secret ({} hex digits); remove it to make a new one (every device's password changes)",
                        path.display(),
                        SECRET_BYTES * 2
                    ),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret = new_secret()?;
                std::fs::create_dir_all(&self.dir)?;
                write_private(&path, &secret_to_hex(&secret))?;
                Ok(secret)
            }
            Err(e) => Err(e),
        }
    }

    fn generations_modified(&self) -> Option<SystemTime> {
        std::fs::metadata(self.generations_path())
            .and_then(|m| m.modified())
            .ok()
    }

    /// Each rotated device's generation (a device not listed is at 0).
    pub fn generations(&self) -> std::io::Result<BTreeMap<String, u32>> {
        match std::fs::read_to_string(self.generations_path()) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(e),
        }
    }

    /// The current password of `device_id`.
    pub fn password(&self, device_id: &str) -> std::io::Result<String> {
        let generation = self.generations()?.get(device_id).copied().unwrap_or(0);
        Ok(device_password(&self.secret()?, device_id, generation))
    }

    /// Rotates `device_id`: its generation goes up by one, its old password stops
    /// working at its next CONNECT. Returns the new password.
    pub fn rotate(&self, device_id: &str) -> std::io::Result<String> {
        let secret = self.secret()?;
        let mut generations = self.generations()?;
        let generation = generations.entry(device_id.to_owned()).or_insert(0);
        *generation = generation.saturating_add(1);
        let generation = *generation;
        let text = serde_json::to_string_pretty(&generations)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        // Written aside and renamed, so a reader never sees half a file.
        let partial = self.dir.join("device-generations.json.partial");
        write_private(&partial, &text)?;
        std::fs::rename(&partial, self.generations_path())?;
        Ok(device_password(&secret, device_id, generation))
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn declared() -> Vec<(String, String)> {
        vec![
            ("lab-1".into(), "temperature_sensor".into()),
            ("gps-1".into(), "gps_tracker".into()),
        ]
    }

    #[test]
    fn a_declared_device_with_its_password_publishes_to_its_own_topic_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CredentialStore::new(dir.path());
        let password = store.password("lab-1").expect("password");
        let auth = DeviceCredentials::open(store.clone(), declared()).expect("open");
        assert_eq!(
            auth.authenticate(Some("lab-1"), Some(password.as_bytes())),
            Ok("lab-1".to_owned())
        );
        assert_eq!(auth.authenticate(None, None), Err(Refusal::Anonymous));
        assert_eq!(
            auth.authenticate(Some(""), Some(b"x")),
            Err(Refusal::Anonymous)
        );
        assert_eq!(
            auth.authenticate(Some("lab-1"), Some(b"wrong")),
            Err(Refusal::BadCredentials)
        );
        assert_eq!(
            auth.authenticate(Some("lab-1"), None),
            Err(Refusal::BadCredentials)
        );
        // Another device's password, and an undeclared device, are refused.
        let gps = store.password("gps-1").expect("password");
        assert_eq!(
            auth.authenticate(Some("lab-1"), Some(gps.as_bytes())),
            Err(Refusal::BadCredentials)
        );
        let stranger = store.password("stranger").expect("password");
        assert_eq!(
            auth.authenticate(Some("stranger"), Some(stranger.as_bytes())),
            Err(Refusal::BadCredentials)
        );
        assert!(auth.may_publish("lab-1", "sensors/temperature_sensor/lab-1"));
        assert!(!auth.may_publish("lab-1", "sensors/temperature_sensor/gps-1"));
        assert!(
            !auth.may_publish("lab-1", "sensors/gps_tracker/lab-1"),
            "its declared type only"
        );
        assert!(!auth.may_publish("lab-1", "sensors/temperature_sensor/lab-1/x"));
        assert!(!auth.may_publish("lab-1", "$SYS/broker"));
    }

    #[test]
    fn a_rotation_takes_effect_at_the_next_connect_of_that_device_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CredentialStore::new(dir.path());
        let old = store.password("lab-1").expect("password");
        let gps = store.password("gps-1").expect("password");
        let auth = DeviceCredentials::open(store.clone(), declared()).expect("open");
        assert!(
            auth.authenticate(Some("lab-1"), Some(old.as_bytes()))
                .is_ok()
        );
        // File times can be coarse: make the rotation's write visibly newer.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let new = store.rotate("lab-1").expect("rotate");
        assert_ne!(new, old);
        assert_eq!(store.password("lab-1").expect("password"), new);
        assert_eq!(
            auth.authenticate(Some("lab-1"), Some(old.as_bytes())),
            Err(Refusal::BadCredentials)
        );
        assert!(
            auth.authenticate(Some("lab-1"), Some(new.as_bytes()))
                .is_ok()
        );
        assert!(
            auth.authenticate(Some("gps-1"), Some(gps.as_bytes()))
                .is_ok()
        );
    }

    #[test]
    fn the_secret_is_made_once_private_and_a_damaged_one_is_refused_with_advice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CredentialStore::new(&dir.path().join("data"));
        let first = store.secret().expect("made");
        assert_eq!(first, store.secret().expect("read back"));
        let mode = std::fs::metadata(dir.path().join("data/device-secret"))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.path().join("data/device-secret"), "not hex").expect("write");
        let error = store.secret().expect_err("damaged");
        assert!(error.to_string().contains("remove it"), "{error}");
        assert!(
            !error.to_string().contains("not hex"),
            "no secret text echoed"
        );
    }

    #[test]
    fn anonymous_admits_everyone_everywhere() {
        assert_eq!(Anonymous.authenticate(None, None), Ok(String::new()));
        assert!(Anonymous.may_publish("", "anything/at/all"));
    }
}
