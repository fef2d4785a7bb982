//! Whether a message from a device is accepted, given what this node knows of its user's
//! devices.
//!
//! A device must be listed in the newest record of its user this node knows, or have been
//! certified after that record was issued (a device linked since). A device missing from a
//! record issued after its certificate was revoked. Users this node holds no record of are
//! accepted (first contact).

use kith_protocol::name::DeviceEntry;
use kith_protocol::{SenderDevice, VerifiedNameRecord};

/// A contact's record not re-fetched for this long is refreshed in the background when a
/// message from one of its devices arrives, so revocations reach the contact.
pub const RECORD_RECHECK_MS: u64 = 10 * 60 * 1000;
/// A device missing from a contact's record triggers a refresh at most this often.
pub const UNLISTED_RECHECK_MS: u64 = 1_000;

/// Whether `record` lists `sender`, or `sender` was certified after `record` was issued.
pub fn check_listed(record: &VerifiedNameRecord, sender: &SenderDevice) -> Result<(), String> {
    if record.devices.iter().any(|d| d.device.device == sender.device)
        || sender.certified_at >= record.issued_at
    {
        Ok(())
    } else {
        Err(format!(
            "device {} is not (or no longer) listed in the sender's record",
            sender.peer_id
        ))
    }
}

/// What this device knows of its own user's devices.
#[derive(Clone, Copy, Debug)]
pub struct OwnDevices<'a> {
    /// This device's key.
    pub this_device: [u8; 32],
    /// Devices this user revoked (kept by the identity holder).
    pub revoked: &'a [[u8; 32]],
    /// The identity holder's list of the other devices; `None` on a linked device.
    pub linked: Option<&'a [DeviceEntry]>,
    /// The newest own record known.
    pub own_record: Option<&'a VerifiedNameRecord>,
}

/// Whether a message from `sender`, a device of this user, is accepted.
pub fn own_device_allowed(own: &OwnDevices<'_>, sender: &SenderDevice) -> Result<(), String> {
    if sender.device == own.this_device {
        return Ok(());
    }
    if own.revoked.contains(&sender.device) {
        return Err("this device was revoked".into());
    }
    let listed = own.linked.is_some_and(|list| {
        list.iter().any(|e| e.cert.verify(None).is_ok_and(|c| c.device == sender.device))
    });
    if listed {
        return Ok(());
    }
    // Not linked here: perhaps by another device holding the identity key since this one's
    // last record.
    own.own_record.map_or(Ok(()), |r| check_listed(r, sender))
}

/// The newest record this node knows of a contact.
#[derive(Clone, Copy, Debug)]
pub struct KnownContact<'a> {
    /// When it was last checked against the DHT (0: never since start).
    pub checked_at: u64,
    /// The record, if one verifies.
    pub record: Option<&'a VerifiedNameRecord>,
}

/// The verdict on a message from a contact's device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactVerdict {
    /// Accepted, or why not.
    pub allowed: Result<(), String>,
    /// Whether to refresh the contact's record from the DHT now (it is old, or does not list
    /// the sending device).
    pub refresh: bool,
}

/// Whether a message from `sender`, a device of a contact, is accepted at `now`.
pub fn contact_device_allowed(
    known: &KnownContact<'_>,
    sender: &SenderDevice,
    now: u64,
) -> ContactVerdict {
    let record = known.record.filter(|r| r.identity == sender.identity);
    let allowed = record.map_or(Ok(()), |r| check_listed(r, sender));
    let unlisted =
        record.is_some_and(|r| !r.devices.iter().any(|d| d.device.device == sender.device));
    let refresh = now >= known.checked_at + RECORD_RECHECK_MS
        || unlisted && now >= known.checked_at + UNLISTED_RECHECK_MS;
    ContactVerdict { allowed, refresh }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::harness::fixtures::{record, sender};

    #[test]
    fn own_devices_revoked_linked_or_listed() {
        let r = record(1, "alice", 2, &[1, 2]);
        let own = OwnDevices {
            this_device: sender(1, 1, 0).device,
            revoked: &[sender(1, 3, 0).device],
            linked: None,
            own_record: Some(&r),
        };
        assert_eq!(own_device_allowed(&own, &sender(1, 1, 0)), Ok(()), "this device");
        assert_eq!(own_device_allowed(&own, &sender(1, 2, 0)), Ok(()), "listed");
        assert!(own_device_allowed(&own, &sender(1, 3, u64::MAX)).is_err(), "revoked");
        assert!(own_device_allowed(&own, &sender(1, 4, 0)).is_err(), "unlisted, older");
        assert_eq!(own_device_allowed(&own, &sender(1, 4, r.issued_at)), Ok(()), "linked since");
        let none = OwnDevices { own_record: None, ..own };
        assert_eq!(own_device_allowed(&none, &sender(1, 4, 0)), Ok(()), "nothing known");
        let entries = r.device_entries();
        let holder = OwnDevices { linked: Some(&entries), own_record: None, ..own };
        assert_eq!(own_device_allowed(&holder, &sender(1, 2, 0)), Ok(()), "in the list");
    }

    #[test]
    fn a_contacts_unlisted_device_is_refused_and_rechecked() {
        let r = record(2, "bob", 3, &[5]);
        let known = KnownContact { checked_at: 10_000, record: Some(&r) };
        let listed = contact_device_allowed(&known, &sender(2, 5, 0), 10_500);
        assert_eq!(listed, ContactVerdict { allowed: Ok(()), refresh: false });
        let gone = contact_device_allowed(&known, &sender(2, 6, 0), 10_500);
        assert!(gone.allowed.is_err());
        assert!(!gone.refresh, "checked less than a second ago");
        assert!(contact_device_allowed(&known, &sender(2, 6, 0), 11_000).refresh);
        let stale = contact_device_allowed(&known, &sender(2, 5, 0), 10_000 + RECORD_RECHECK_MS);
        assert_eq!(stale, ContactVerdict { allowed: Ok(()), refresh: true });
        let other_key = contact_device_allowed(&known, &sender(3, 6, 0), 10_500);
        assert_eq!(other_key.allowed, Ok(()), "a record of another key says nothing");
    }
}
