//! API keys: long random strings, each with a name and a role, configured as
//! `name=role:key` entries separated by commas or new lines (`SENSORFLEET_API_KEYS`, or a
//! Secret's `keys`). Only each key's SHA-256 digest is kept in memory, and a lookup
//! compares digests, so neither the keys nor their timing leak.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::{Principal, Role};

/// Fewest characters of a key: 16 random characters are beyond guessing; `openssl rand
/// -hex 24` makes a good one.
pub const MIN_KEY_LEN: usize = 16;

/// The configured keys.
#[derive(Debug, Default, Clone)]
pub struct ApiKeys {
    by_digest: HashMap<[u8; 32], Principal>,
}

impl ApiKeys {
    /// Parses `name=role:key` entries; the error names the entry by its position and
    /// name, never by its key.
    pub fn parse(text: &str) -> Result<ApiKeys, String> {
        let mut keys = ApiKeys::default();
        let entries = text
            .split([',', '\n'])
            .map(str::trim)
            .filter(|e| !e.is_empty());
        for (n, entry) in entries.enumerate() {
            let position = n + 1;
            let Some((name, rest)) = entry.split_once('=') else {
                return Err(format!(
                    "API key entry {position} is not name=role:key (e.g. grafana=viewer:<key>)"
                ));
            };
            let name = name.trim();
            let Some((role, key)) = rest.split_once(':') else {
                return Err(format!(
                    "API key {name:?} (entry {position}) has no role: write {name}=viewer:<key>, operator or admin"
                ));
            };
            let Some(role) = Role::parse(role) else {
                return Err(format!(
                    "API key {name:?} has the role {:?}; roles are viewer, operator and admin",
                    role.trim()
                ));
            };
            keys.add(name, role, key.trim())?;
        }
        Ok(keys)
    }

    /// Adds one key.
    pub fn add(&mut self, name: &str, role: Role, key: &str) -> Result<(), String> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
        {
            return Err(format!(
                "API key name {name:?} must be letters, digits and -_.@ (it is shown in logs)"
            ));
        }
        if key.chars().count() < MIN_KEY_LEN
            || key.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "API key {name:?} must be at least {MIN_KEY_LEN} characters without spaces; make one with `openssl rand -hex 24`"
            ));
        }
        let principal = Principal {
            name: name.to_owned(),
            role,
        };
        if self.by_digest.insert(digest(key), principal).is_some() {
            return Err(format!("API key {name:?} repeats another entry's key"));
        }
        Ok(())
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// The principal of `key`, if it is one of ours.
    pub fn find(&self, key: &str) -> Option<Principal> {
        self.by_digest.get(&digest(key)).cloned()
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_by_name_role_and_key() {
        let keys = ApiKeys::parse(
            "grafana=viewer:0123456789abcdef01\n ci = operator : fedcba9876543210fe ,\n",
        )
        .unwrap();
        assert_eq!(
            keys.find("0123456789abcdef01"),
            Some(Principal {
                name: "grafana".into(),
                role: Role::Viewer
            })
        );
        assert_eq!(
            keys.find("fedcba9876543210fe").unwrap().role,
            Role::Operator
        );
        assert_eq!(keys.find("0123456789abcdef0"), None);
        assert!(ApiKeys::parse("").unwrap().is_empty());
    }

    #[test]
    fn mistakes_are_named_without_the_key() {
        for (text, says) in [
            ("grafana:viewer:0123456789abcdef01", "entry 1"),
            ("grafana=0123456789abcdef01", "no role"),
            (
                "grafana=root:0123456789abcdef01",
                "viewer, operator and admin",
            ),
            ("grafana=viewer:short", "at least 16"),
            ("gra fana=viewer:0123456789abcdef01", "letters, digits"),
            (
                "a=viewer:0123456789abcdef01,b=admin:0123456789abcdef01",
                "repeats",
            ),
        ] {
            let e = ApiKeys::parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
            assert!(
                !e.contains("0123456789abcdef01") && !e.contains("short"),
                "{e}"
            );
        }
    }
}
