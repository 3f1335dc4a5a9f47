//! Device identity at the broker (Pipeline `spec.mqtt.deviceAuth`): the declared
//! devices of each SensorFleet become clients of Mosquitto's dynamic-security plugin,
//! each allowed to publish to its own topic only, with a password derived from the
//! fleet's secret ([`sensorfleet_model::credentials`]); the bridge's user may only
//! subscribe. The fleet's secret and, for fleets up to [`LISTED_PASSWORDS`] devices,
//! every device's password live in the Secret [`secret_name`].

pub mod dynsec;
pub mod plan;

use std::sync::atomic::{AtomicU64, Ordering};

use sensorfleet_model::credentials::{device_password, secret_fingerprint};
use serde_json::json;

use self::dynsec::{Broker, Dynsec, admits, failures};
use self::plan::{BRIDGE_ROLE, Declared, create_commands, owner_tag, remove_commands};
use crate::Error;

/// Fleets up to this many devices get every password listed in their Secret
/// (`passwords.csv`, ~60 bytes a device, well under a Secret's 1 MiB); larger ones only
/// the fleet secret, from which `sensorfleet credentials --fleet-secret` derives any
/// device's password.
pub const LISTED_PASSWORDS: usize = 5000;
/// The key of the fleet secret (64 hex digits) in the fleet's Secret.
pub const SECRET_KEY: &str = "fleet-secret";
/// The key of the `device_id,password` list in the fleet's Secret.
pub const PASSWORDS_KEY: &str = "passwords.csv";

/// The Secret with a fleet's device credentials.
pub fn secret_name(fleet: &str) -> String {
    format!("{fleet}-device-credentials")
}

/// `device_id,password` lines with a header, for a fleet small enough to list.
pub fn password_list(secret: &[u8], declared: &[Declared]) -> Option<String> {
    (declared.len() <= LISTED_PASSWORDS).then(|| {
        let mut out = String::from("device_id,password\n");
        for device in declared {
            out.push_str(&device.id);
            out.push(',');
            out.push_str(&device_password(secret, &device.id, 0));
            out.push('\n');
        }
        out
    })
}

/// The broker of a Pipeline with device auth, and the bridge's identity there. Shown
/// without passwords.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerIdentity {
    /// The broker, with its dynamic-security admin.
    pub broker: Broker,
    /// The bridge's username (from `spec.mqtt.credentialsSecret`).
    pub bridge_user: String,
    /// Its password.
    pub bridge_password: String,
}

impl std::fmt::Debug for BrokerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} (bridge user {:?})", self.broker, self.bridge_user)
    }
}

/// What one provisioning did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Provisioned {
    /// Clients made for newly declared devices.
    pub created: usize,
    /// Clients made again (new type or new secret).
    pub replaced: usize,
    /// Clients of devices no longer declared, revoked.
    pub removed: usize,
    /// Declared ids whose username another owner holds at the broker: not provisioned.
    pub taken: Vec<String>,
    /// The broker let an anonymous client connect (its `allow_anonymous` is on).
    pub anonymous_admitted: bool,
}

/// A client id of its own for each operator connection.
fn client_id(purpose: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "sensorfleet-operator-{purpose}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Brings the broker's clients of `fleet` (`<namespace>/<name>`) in line with
/// `declared`, after making sure the bridge's identity is in place.
pub async fn provision(
    identity: &BrokerIdentity,
    fleet: &str,
    secret: &[u8],
    declared: &[Declared],
) -> Result<Provisioned, Error> {
    let broker = &identity.broker;
    let mut dynsec = Dynsec::connect(broker, &client_id("admin")).await?;
    ensure_bridge(&mut dynsec, identity).await?;
    let existing = dynsec.clients().await?;
    let fingerprint = secret_fingerprint(secret);
    let plan = plan::plan(fleet, &fingerprint, declared, &existing);
    let mut commands = Vec::new();
    for id in &plan.remove {
        commands.extend(remove_commands(id));
    }
    // A device is removed first also when new: a crash between making its role and its
    // client leaves the role behind, and "not found" costs nothing.
    for device in plan.replace.iter().chain(&plan.create) {
        let password = device_password(secret, &device.id, 0);
        let tag = owner_tag(fleet, &device.device_type, &fingerprint);
        commands.extend(remove_commands(&device.id));
        commands.extend(create_commands(device, &password, &tag));
    }
    if !commands.is_empty() {
        let answers = dynsec.execute(&commands).await?;
        let failed = failures(&answers);
        if !failed.is_empty() {
            return Err(Error::Broker(format!(
                "{} of {} dynamic-security commands failed, e.g. {}",
                failed.len(),
                commands.len(),
                failed[0]
            )));
        }
    }
    drop(dynsec);
    let anonymous_admitted = admits(broker, &client_id("anonymous-check"), None).await?;
    Ok(Provisioned {
        created: plan.create.len(),
        replaced: plan.replace.len(),
        removed: plan.remove.len(),
        taken: plan.taken,
        anonymous_admitted,
    })
}

/// Revokes every client of `fleet`; how many.
pub async fn revoke(identity: &BrokerIdentity, fleet: &str) -> Result<usize, Error> {
    let mut dynsec = Dynsec::connect(&identity.broker, &client_id("admin")).await?;
    let existing = dynsec.clients().await?;
    let plan = plan::plan(fleet, "", &[], &existing);
    let commands: Vec<_> = plan
        .remove
        .iter()
        .flat_map(|id| remove_commands(id))
        .collect();
    dynsec.execute(&commands).await?;
    Ok(plan.remove.len())
}

/// The bridge's role, and its user with that role and the password of its Secret. An
/// unchanged bridge costs a lookup and a login, no write.
async fn ensure_bridge(dynsec: &mut Dynsec, identity: &BrokerIdentity) -> Result<(), Error> {
    let (user, password) = (&identity.bridge_user, &identity.bridge_password);
    // "Role already exists" is the usual answer.
    dynsec.execute(&[plan::bridge_role_command()]).await?;
    let commands = match dynsec.client(user).await? {
        None => vec![json!({
            "command": "createClient",
            "username": user,
            "password": password,
            "textdescription": "sensorfleet bridge",
            "roles": [{"rolename": BRIDGE_ROLE}],
        })],
        Some(client) => {
            let mut commands = Vec::new();
            let has_role = client["roles"]
                .as_array()
                .is_some_and(|roles| roles.iter().any(|r| r["rolename"] == BRIDGE_ROLE));
            if !has_role {
                commands.push(
                    json!({"command": "addClientRole", "username": user, "rolename": BRIDGE_ROLE}),
                );
            }
            let login = Some((user.as_str(), password.as_str()));
            if !admits(&identity.broker, &client_id("bridge-check"), login).await? {
                commands.push(
                    json!({"command": "setClientPassword", "username": user, "password": password}),
                );
            }
            commands
        }
    };
    let failed = failures(&dynsec.execute(&commands).await?);
    match failed.first() {
        None => Ok(()),
        Some(first) => Err(Error::Broker(format!(
            "the bridge's user {user:?}: {first}"
        ))),
    }
}
