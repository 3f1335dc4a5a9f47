//! Device credentials derived from one fleet secret: a device's MQTT password is
//! `HMAC-SHA256(secret, "sensorfleet-device-v1" · id · generation)`, 32 characters of
//! URL-safe base64 (192 bits). Nothing per device is stored but a rotation counter
//! (its *generation*, 0 until first rotated), so a fleet of 100,000 devices costs one
//! secret, and checking a password costs one HMAC. Rotating a device bumps its
//! generation: its old password stops working, no other device's changes. Rotating the
//! secret rotates every device at once.
//!
//! Pure: the caller keeps the secret and the generations (`sensorfleet up` in its data
//! directory, see `workers::ingest::auth`).

use std::fmt::Write as _;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Bytes of a fleet secret.
pub const SECRET_BYTES: usize = 32;
/// Characters of a device password.
pub const PASSWORD_LEN: usize = 32;
/// Separates what is authenticated, so no id and generation can imitate another pair.
const CONTEXT: &[u8] = b"sensorfleet-device-v1";

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], device_id: &str, generation: u32) -> HmacSha256 {
    // HMAC takes a key of any length; an empty one is refused by the callers.
    let mut mac = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(CONTEXT);
    mac.update(&[0]);
    mac.update(device_id.as_bytes());
    mac.update(&[0]);
    mac.update(&generation.to_be_bytes());
    mac
}

/// The password of `device_id` at `generation`.
pub fn device_password(secret: &[u8], device_id: &str, generation: u32) -> String {
    let tag = mac(secret, device_id, generation).finalize().into_bytes();
    base64url(&tag)[..PASSWORD_LEN].to_owned()
}

/// Whether `password` is `device_id`'s at `generation`, compared in constant time.
pub fn password_matches(secret: &[u8], device_id: &str, generation: u32, password: &[u8]) -> bool {
    let expected = device_password(secret, device_id, generation);
    password.len() == expected.len()
        && password
            .iter()
            .zip(expected.as_bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// A new fleet secret: [`SECRET_BYTES`] bytes from the kernel's random source.
pub fn new_secret() -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut secret = vec![0u8; SECRET_BYTES];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut secret)?;
    Ok(secret)
}

/// Names a fleet secret without revealing it (16 hex digits of an HMAC under it), so a
/// broker's record of a device can say which secret its password came from.
pub fn secret_fingerprint(secret: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(b"sensorfleet-fingerprint-v1");
    secret_to_hex(&mac.finalize().into_bytes()[..8])
}

/// A secret as text (hex), for the file it is kept in.
pub fn secret_to_hex(secret: &[u8]) -> String {
    secret.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// A secret from its hex text; `None` unless it is [`SECRET_BYTES`] bytes of hex.
pub fn secret_from_hex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if text.len() != SECRET_BYTES * 2 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: [u8; SECRET_BYTES] = [7; SECRET_BYTES];

    #[test]
    fn a_password_is_stable_per_device_and_generation_and_differs_otherwise() {
        let a0 = device_password(&SECRET, "lab-temp-1", 0);
        assert_eq!(a0, device_password(&SECRET, "lab-temp-1", 0));
        assert_eq!(a0.len(), PASSWORD_LEN);
        assert!(
            a0.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(a0, device_password(&SECRET, "lab-temp-1", 1), "rotated");
        assert_ne!(
            a0,
            device_password(&SECRET, "lab-temp-2", 0),
            "another device"
        );
        assert_ne!(
            a0,
            device_password(&[8; SECRET_BYTES], "lab-temp-1", 0),
            "another secret"
        );
        // The separators keep (id, generation) pairs apart.
        assert_ne!(
            device_password(&SECRET, "a\u{0}", 0),
            device_password(&SECRET, "a", 0)
        );
    }

    #[test]
    fn only_the_current_password_matches() {
        let current = device_password(&SECRET, "gps-7", 3);
        assert!(password_matches(&SECRET, "gps-7", 3, current.as_bytes()));
        let old = device_password(&SECRET, "gps-7", 2);
        assert!(!password_matches(&SECRET, "gps-7", 3, old.as_bytes()));
        assert!(!password_matches(&SECRET, "gps-7", 3, b""));
        assert!(!password_matches(
            &SECRET,
            "gps-7",
            3,
            &current.as_bytes()[..31]
        ));
        assert!(!password_matches(&SECRET, "gps-8", 3, current.as_bytes()));
    }

    #[test]
    fn base64url_matches_the_rfc_4648_vectors() {
        // RFC 4648 §10, without padding.
        for (input, encoded) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url(input.as_bytes()), encoded);
        }
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn new_secrets_differ_and_fingerprints_name_them_without_the_secret() {
        let (a, b) = (
            new_secret().expect("urandom"),
            new_secret().expect("urandom"),
        );
        assert_eq!(a.len(), SECRET_BYTES);
        assert_ne!(a, b);
        let fingerprint = secret_fingerprint(&a);
        assert_eq!(fingerprint.len(), 16);
        assert_eq!(fingerprint, secret_fingerprint(&a));
        assert_ne!(fingerprint, secret_fingerprint(&b));
        assert!(!secret_to_hex(&a).contains(&fingerprint));
    }

    #[test]
    fn secrets_round_trip_through_hex_and_bad_text_is_refused() {
        let hex = secret_to_hex(&SECRET);
        assert_eq!(hex.len(), 64);
        assert_eq!(secret_from_hex(&format!("{hex}\n")), Some(SECRET.to_vec()));
        assert_eq!(secret_from_hex(&hex[..62]), None);
        assert_eq!(secret_from_hex(&"zz".repeat(32)), None);
        assert_eq!(secret_from_hex(&"é".repeat(32)), None);
    }
}
