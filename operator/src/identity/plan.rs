//! What the broker must change for a fleet's identities (pure): the declared devices
//! against the clients the broker has, and the dynamic-security commands that close
//! the gap.
//!
//! Every device is one client (username and client id = its id, the password derived
//! from the fleet secret) with one role of its own whose only ACL lets it publish to
//! `sensors/<type>/<id>`. The dynamic-security plugin of Mosquitto 2.0 has no `%u`
//! substitution in ACLs, so a shared role cannot say "your own topic". A client's text
//! description records who owns it and from which secret its password came
//! ([`owner_tag`]); a client with another owner is never touched.

use std::collections::HashMap;

use serde_json::{Value, json};

/// Prefix of every client description and role name this operator writes.
const TAG: &str = "sensorfleet";
/// The bridge's role: subscribe to readings, nothing else.
pub const BRIDGE_ROLE: &str = "sensorfleet-bridge";

/// A device the fleet declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// Its id: username, client id and last topic level.
    pub id: String,
    /// Its type: the middle topic level.
    pub device_type: String,
}

/// A client the broker has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    /// Its username.
    pub username: String,
    /// Its text description (the owner tag, for ours).
    pub description: Option<String>,
}

/// The changes one fleet needs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Declared devices without a client.
    pub create: Vec<Declared>,
    /// Devices whose client is stale (another type or another secret): made again.
    pub replace: Vec<Declared>,
    /// Clients of this fleet no longer declared.
    pub remove: Vec<String>,
    /// Declared ids the broker has a client for that this fleet does not own.
    pub taken: Vec<String>,
}

impl Plan {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.replace.is_empty() && self.remove.is_empty()
    }
}

/// What starts the description of every client of `fleet` (`<namespace>/<name>`).
pub fn owner_prefix(fleet: &str) -> String {
    format!("{TAG} fleet={fleet} ")
}

/// The description of a device client: owner, type and the fingerprint of the secret
/// its password was derived from.
pub fn owner_tag(fleet: &str, device_type: &str, fingerprint: &str) -> String {
    format!(
        "{}type={device_type} key={fingerprint}",
        owner_prefix(fleet)
    )
}

/// The role that carries one device's ACL.
pub fn device_role(id: &str) -> String {
    format!("{TAG}-device:{id}")
}

/// The changes that make the broker's clients match `declared` for `fleet`.
pub fn plan(fleet: &str, fingerprint: &str, declared: &[Declared], existing: &[Existing]) -> Plan {
    let prefix = owner_prefix(fleet);
    let by_name: HashMap<&str, &Existing> =
        existing.iter().map(|e| (e.username.as_str(), e)).collect();
    let mut plan = Plan::default();
    let mut wanted = std::collections::HashSet::with_capacity(declared.len());
    for device in declared {
        wanted.insert(device.id.as_str());
        match by_name.get(device.id.as_str()) {
            None => plan.create.push(device.clone()),
            Some(client) => match client.description.as_deref() {
                Some(d) if d == owner_tag(fleet, &device.device_type, fingerprint) => {}
                Some(d) if d.starts_with(&prefix) => plan.replace.push(device.clone()),
                _ => plan.taken.push(device.id.clone()),
            },
        }
    }
    plan.remove = existing
        .iter()
        .filter(|e| {
            e.description
                .as_deref()
                .is_some_and(|d| d.starts_with(&prefix))
                && !wanted.contains(e.username.as_str())
        })
        .map(|e| e.username.clone())
        .collect();
    plan
}

/// Commands that remove a device's client and role; "not found" answers are expected
/// (a half-made device) and harmless.
pub fn remove_commands(id: &str) -> [Value; 2] {
    [
        json!({"command": "deleteClient", "username": id}),
        json!({"command": "deleteRole", "rolename": device_role(id)}),
    ]
}

/// Commands that make a device's role and client: publish to its own topic only,
/// connect with its own id only.
pub fn create_commands(device: &Declared, password: &str, tag: &str) -> [Value; 2] {
    let role = device_role(&device.id);
    [
        json!({
            "command": "createRole",
            "rolename": role,
            "acls": [{
                "acltype": "publishClientSend",
                "topic": format!("sensors/{}/{}", device.device_type, device.id),
                "allow": true,
                "priority": 0,
            }],
        }),
        json!({
            "command": "createClient",
            "username": device.id,
            "password": password,
            "clientid": device.id,
            "textdescription": tag,
            "roles": [{"rolename": role}],
        }),
    ]
}

/// The bridge's role: subscribe to every device's topic, alone or in a shared group,
/// and receive what it subscribed to; no publishing.
pub fn bridge_role_command() -> Value {
    let acl = |acltype: &str, topic: &str| json!({"acltype": acltype, "topic": topic, "allow": true, "priority": 0});
    json!({
        "command": "createRole",
        "rolename": BRIDGE_ROLE,
        "textdescription": "SensorFleet bridge: subscribes to sensors/+/+",
        "acls": [
            acl("subscribePattern", "sensors/#"),
            acl("subscribePattern", "$share/+/sensors/#"),
            acl("publishClientReceive", "sensors/#"),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(id: &str, t: &str) -> Declared {
        Declared {
            id: id.into(),
            device_type: t.into(),
        }
    }

    fn client(name: &str, description: Option<String>) -> Existing {
        Existing {
            username: name.into(),
            description,
        }
    }

    #[test]
    fn the_plan_creates_replaces_removes_and_leaves_others_alone() {
        let fleet = "ns/lab";
        let current = owner_tag(fleet, "temperature", "k1");
        let existing = [
            client("a", Some(current.clone())),
            client("b", Some(owner_tag(fleet, "temperature", "old-key"))),
            client("c", Some(owner_tag(fleet, "humidity", "k1"))),
            client("gone", Some(current.clone())),
            client("x", Some(owner_tag("ns/other", "temperature", "k1"))),
            client("admin", None),
            // A fleet whose name has ours as a prefix is another owner.
            client("y", Some(owner_tag("ns/lab2", "temperature", "k1"))),
        ];
        let declared = [
            dev("a", "temperature"),
            dev("b", "temperature"),
            dev("c", "temperature"),
            dev("new", "temperature"),
            dev("x", "temperature"),
            dev("admin", "temperature"),
        ];
        let plan = plan(fleet, "k1", &declared, &existing);
        assert_eq!(plan.create, [dev("new", "temperature")]);
        assert_eq!(
            plan.replace,
            [dev("b", "temperature"), dev("c", "temperature")]
        );
        assert_eq!(plan.remove, ["gone"]);
        assert_eq!(plan.taken, ["x", "admin"]);
        assert!(!plan.is_empty());
    }

    #[test]
    fn a_provisioned_fleet_needs_nothing_and_an_undeclared_one_is_removed() {
        let fleet = "ns/lab";
        let declared = [dev("a", "gps"), dev("b", "gps")];
        let existing: Vec<_> = declared
            .iter()
            .map(|d| client(&d.id, Some(owner_tag(fleet, "gps", "k"))))
            .collect();
        assert!(plan(fleet, "k", &declared, &existing).is_empty());
        let all_gone = plan(fleet, "k", &[], &existing);
        assert_eq!(all_gone.remove, ["a", "b"]);
    }

    #[test]
    fn a_device_may_publish_to_its_own_topic_and_connect_as_itself_only() {
        let [role, client] = create_commands(&dev("t-1", "temperature"), "pw", "tag");
        assert_eq!(role["acls"].as_array().map(Vec::len), Some(1));
        assert_eq!(role["acls"][0]["acltype"], "publishClientSend");
        assert_eq!(role["acls"][0]["topic"], "sensors/temperature/t-1");
        assert_eq!(client["clientid"], "t-1");
        assert_eq!(client["roles"][0]["rolename"], role["rolename"]);
        let bridge = bridge_role_command();
        let acls = bridge["acls"].as_array().expect("acls");
        assert!(acls.iter().all(|a| a["acltype"] != "publishClientSend"));
    }
}
