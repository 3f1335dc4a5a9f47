//! What the bridge remembers about devices, so that no device can change what the
//! stores hold about another or grow them without bound. Pure and bounded.
//!
//! - **Type.** A device keeps its declared type, or the first one it published under;
//!   a reading under another type is rejected as `type_mismatch` (it would start a
//!   second measurement and confuse that device's alerts).
//! - **Undeclared devices** are capped ([`BookLimits::max_undeclared`], the bridge's
//!   `--max-undeclared-devices`): beyond it, readings of a new undeclared device are
//!   rejected as `too_many_devices`. Declared devices are never capped.
//! - **Locations.** `location` is an InfluxDB tag, so each distinct value of a device
//!   is a series. A device may use at most [`BookLimits::max_locations`] distinct values
//!   (its declared one included); a further one is rejected as `too_many_locations`. The
//!   series this bridge can create are so bounded by `(declared + max_undeclared) ×
//!   max_locations` per device type.
//!
//! The book is per process: replicas each keep their own (a device's messages can reach
//! any replica, so each enforces the same rules on what it sees).

use std::collections::HashMap;
use std::sync::Arc;

use sensorfleet_model::Reading;
use sensorfleet_model::reading::{Reject, RejectReason, reject};

/// The bounds of the book.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BookLimits {
    /// Most devices no fleet declares that one bridge process accepts.
    pub max_undeclared: usize,
    /// Most distinct `location` values per device.
    pub max_locations: usize,
}

impl Default for BookLimits {
    fn default() -> Self {
        Self {
            max_undeclared: 10_000,
            max_locations: 4,
        }
    }
}

#[derive(Debug)]
struct Entry {
    device_type: Arc<str>,
    declared: bool,
    locations: Vec<Box<str>>,
}

/// Devices seen or declared, with their type and locations.
#[derive(Debug, Default)]
pub struct DeviceBook {
    limits: BookLimits,
    devices: HashMap<Box<str>, Entry>,
    undeclared: usize,
    /// Interned device types.
    types: HashMap<Box<str>, Arc<str>>,
}

impl DeviceBook {
    /// An empty book.
    pub fn new(limits: BookLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    fn intern(&mut self, device_type: &str) -> Arc<str> {
        if let Some(t) = self.types.get(device_type) {
            return Arc::clone(t);
        }
        let shared: Arc<str> = Arc::from(device_type);
        self.types
            .insert(Box::from(device_type), Arc::clone(&shared));
        shared
    }

    /// Declares a device with its type and location: it is never capped, and its type
    /// is the one its readings must carry.
    pub fn declare(&mut self, device_id: &str, device_type: &str, location: Option<&str>) {
        let device_type = self.intern(device_type);
        let locations = location.map(Box::from).into_iter().collect();
        let previous = self.devices.insert(
            Box::from(device_id),
            Entry {
                device_type,
                declared: true,
                locations,
            },
        );
        if previous.is_some_and(|p| !p.declared) {
            self.undeclared -= 1;
        }
    }

    /// Devices no fleet declares that the book holds.
    pub fn undeclared(&self) -> usize {
        self.undeclared
    }

    /// Admits a reading, remembering its device (and location) when new; or says why
    /// not.
    pub fn admit(&mut self, reading: &Reading) -> Result<(), Reject> {
        let max_locations = self.limits.max_locations;
        if let Some(entry) = self.devices.get_mut(reading.device_id.as_str()) {
            if *entry.device_type != *reading.device_type {
                return Err(reject(
                    RejectReason::TypeMismatch,
                    format!(
                        "device {} is a {} ({}); this reading says {}",
                        reading.device_id,
                        entry.device_type,
                        if entry.declared {
                            "declared"
                        } else {
                            "first seen"
                        },
                        reading.device_type
                    ),
                ));
            }
            if let Some(location) = reading.location.as_deref()
                && !entry.locations.iter().any(|l| **l == *location)
            {
                if entry.locations.len() >= max_locations {
                    return Err(reject(
                        RejectReason::TooManyLocations,
                        format!(
                            "device {} already has {max_locations} locations; a new one, \
                             {location:?}, would be another time series",
                            reading.device_id
                        ),
                    ));
                }
                entry.locations.push(Box::from(location));
            }
            return Ok(());
        }
        if self.undeclared >= self.limits.max_undeclared {
            return Err(reject(
                RejectReason::TooManyDevices,
                format!(
                    "device {} is not declared and this bridge already accepts {} undeclared \
                     devices (--max-undeclared-devices); declare it in a SensorFleet",
                    reading.device_id, self.limits.max_undeclared
                ),
            ));
        }
        let device_type = self.intern(&reading.device_type);
        self.devices.insert(
            Box::from(reading.device_id.as_str()),
            Entry {
                device_type,
                declared: false,
                locations: reading
                    .location
                    .as_deref()
                    .map(Box::from)
                    .into_iter()
                    .collect(),
            },
        );
        self.undeclared += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn reading(id: &str, device_type: &str, location: Option<&str>) -> Reading {
        Reading {
            device_id: id.to_owned(),
            device_type: device_type.to_owned(),
            location: location.map(str::to_owned),
            ts_ms: 1_780_000_000_000,
            fields: BTreeMap::from([("v".to_owned(), 1.0)]),
        }
    }

    fn reason(book: &mut DeviceBook, r: &Reading) -> Option<RejectReason> {
        book.admit(r).err().map(|e| e.reason)
    }

    #[test]
    fn a_device_keeps_its_first_seen_type() {
        let mut book = DeviceBook::new(BookLimits::default());
        assert_eq!(
            reason(&mut book, &reading("a", "temperature_sensor", None)),
            None
        );
        assert_eq!(
            reason(&mut book, &reading("a", "temperature_sensor", None)),
            None
        );
        let other = book
            .admit(&reading("a", "humidity_sensor", None))
            .expect_err("another type");
        assert_eq!(other.reason, RejectReason::TypeMismatch);
        assert!(other.detail.contains("first seen"), "{}", other.detail);
        assert_eq!(
            reason(&mut book, &reading("b", "humidity_sensor", None)),
            None
        );
    }

    #[test]
    fn a_declared_type_wins_over_what_a_device_sends_first() {
        let mut book = DeviceBook::new(BookLimits::default());
        book.declare("d", "humidity_sensor", Some("Lab"));
        let wrong = book
            .admit(&reading("d", "temperature_sensor", None))
            .expect_err("not its declared type");
        assert_eq!(wrong.reason, RejectReason::TypeMismatch);
        assert!(wrong.detail.contains("declared"), "{}", wrong.detail);
        assert_eq!(
            reason(&mut book, &reading("d", "humidity_sensor", Some("Lab"))),
            None
        );
    }

    #[test]
    fn undeclared_devices_are_capped_and_declared_ones_are_not() {
        let mut book = DeviceBook::new(BookLimits {
            max_undeclared: 3,
            max_locations: 4,
        });
        for id in ["u1", "u2", "u3"] {
            assert_eq!(reason(&mut book, &reading(id, "t", None)), None);
        }
        assert_eq!(
            reason(&mut book, &reading("u4", "t", None)),
            Some(RejectReason::TooManyDevices)
        );
        // Known ones keep flowing; a declared device is never capped.
        assert_eq!(reason(&mut book, &reading("u2", "t", None)), None);
        book.declare("d1", "t", None);
        assert_eq!(reason(&mut book, &reading("d1", "t", None)), None);
        assert_eq!(book.undeclared(), 3);
        // Declaring an undeclared device frees its place.
        book.declare("u1", "t", None);
        assert_eq!(book.undeclared(), 2);
        assert_eq!(reason(&mut book, &reading("u4", "t", None)), None);
    }

    #[test]
    fn locations_per_device_are_capped() {
        let mut book = DeviceBook::new(BookLimits {
            max_undeclared: 10,
            max_locations: 2,
        });
        book.declare("d", "t", Some("Rack 1"));
        assert_eq!(reason(&mut book, &reading("d", "t", Some("Rack 1"))), None);
        assert_eq!(reason(&mut book, &reading("d", "t", Some("Rack 2"))), None);
        let third = book
            .admit(&reading("d", "t", Some("Rack 3")))
            .expect_err("a third series");
        assert_eq!(third.reason, RejectReason::TooManyLocations);
        // The known ones, and none at all, still pass.
        assert_eq!(reason(&mut book, &reading("d", "t", Some("Rack 2"))), None);
        assert_eq!(reason(&mut book, &reading("d", "t", None)), None);
        // A hostile device cycling through locations gets at most its cap.
        let accepted = (0..1000)
            .filter(|n| {
                book.admit(&reading("h", "t", Some(&format!("loc-{n}"))))
                    .is_ok()
            })
            .count();
        assert_eq!(accepted, 2);
    }
}
