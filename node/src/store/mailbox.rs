//! The mailbox service's trees: enrolled devices (`enrolled`), held envelopes (`mailbox`,
//! `mailbox_idx`), quotas and retention.

use sled::transaction::TransactionError;
use sled::Transactional;

use super::{enc, sled_lock, HeldEnvelope, Store};
use crate::error::NodeError;

/// Why a deposit was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DepositRefusal {
    /// Too many envelopes held for the device.
    Messages,
    /// Too many bytes held for the device.
    Bytes,
}

fn held_index(device: &[u8; 32], id: &[u8; 16]) -> [u8; 48] {
    let mut idx = [0u8; 48];
    idx[..32].copy_from_slice(device);
    idx[32..].copy_from_slice(id);
    idx
}

impl Store {
    /// Enrolls a device with this node's mailbox service.
    pub fn enroll(&self, device: &[u8; 32], user: &[u8; 16]) -> Result<(), NodeError> {
        self.enrolled.insert(device, user.as_slice()).map(|_| ()).map_err(|e| self.err(e))
    }

    /// The user a device is enrolled for.
    pub fn enrolled_user(&self, device: &[u8; 32]) -> Result<Option<[u8; 16]>, NodeError> {
        Ok(self
            .enrolled
            .get(device)
            .map_err(|e| self.err(e))?
            .and_then(|v| <[u8; 16]>::try_from(v.as_ref()).ok()))
    }

    /// Holds an envelope for `device` unless one with the same id is held, within the quotas.
    /// Returns whether it was new.
    pub fn deposit(
        &self,
        device: &[u8; 32],
        held: &HeldEnvelope,
        max_messages: u64,
        max_bytes: u64,
    ) -> Result<Result<bool, DepositRefusal>, NodeError> {
        let idx = held_index(device, &held.id);
        if self.mailbox_idx.contains_key(idx).map_err(|e| self.err(e))? {
            return Ok(Ok(false));
        }
        let (count, bytes) = self.mailbox_usage(device)?;
        if count >= max_messages {
            return Ok(Err(DepositRefusal::Messages));
        }
        if bytes + held.envelope.len() as u64 > max_bytes {
            return Ok(Err(DepositRefusal::Bytes));
        }
        let mut key = [0u8; 56];
        key[..32].copy_from_slice(device);
        key[32..40].copy_from_slice(&held.deposited_at.to_be_bytes());
        key[40..].copy_from_slice(&held.id);
        let value = enc(held);
        let _serial = sled_lock();
        let r: Result<bool, TransactionError<()>> =
            (&self.mailbox, &self.mailbox_idx).transaction(|(mb, ix)| {
                if ix.get(idx)?.is_some() {
                    return Ok(false);
                }
                mb.insert(key.as_slice(), value.as_slice())?;
                ix.insert(idx.as_slice(), key.as_slice())?;
                Ok(true)
            });
        Ok(Ok(r.map_err(|e| self.err(format!("{e:?}")))?))
    }

    fn sum_held(
        &self,
        iter: impl Iterator<Item = sled::Result<sled::IVec>>,
    ) -> Result<(u64, u64), NodeError> {
        let mut count = 0u64;
        let mut bytes = 0u64;
        for v in iter {
            let h: HeldEnvelope = self.decode(&v.map_err(|e| self.err(e))?)?;
            count += 1;
            bytes += h.envelope.len() as u64;
        }
        Ok((count, bytes))
    }

    /// Number and bytes of envelopes held for a device.
    pub fn mailbox_usage(&self, device: &[u8; 32]) -> Result<(u64, u64), NodeError> {
        self.sum_held(self.mailbox.scan_prefix(device).values())
    }

    /// Total envelopes and bytes held by the mailbox service.
    pub fn mailbox_totals(&self) -> Result<(u64, u64), NodeError> {
        self.sum_held(self.mailbox.iter().values())
    }

    /// Up to `max` envelopes (and at most `max_bytes` of them) held for a device, oldest first,
    /// and whether more are waiting.
    pub fn held(
        &self,
        device: &[u8; 32],
        max: usize,
        max_bytes: usize,
    ) -> Result<(Vec<HeldEnvelope>, bool), NodeError> {
        let mut out = Vec::new();
        let mut size = 0usize;
        for v in self.mailbox.scan_prefix(device).values() {
            let h: HeldEnvelope = self.decode(&v.map_err(|e| self.err(e))?)?;
            if out.len() >= max || size + h.envelope.len() > max_bytes {
                return Ok((out, true));
            }
            size += h.envelope.len();
            out.push(h);
        }
        Ok((out, false))
    }

    /// Deletes held envelopes of a device by id; returns how many were held.
    pub fn release(&self, device: &[u8; 32], ids: &[[u8; 16]]) -> Result<u32, NodeError> {
        let mut n = 0;
        for id in ids {
            if let Some(key) =
                self.mailbox_idx.remove(held_index(device, id)).map_err(|e| self.err(e))?
            {
                self.mailbox.remove(key).map_err(|e| self.err(e))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Deletes every held envelope deposited before `cutoff`; returns how many.
    pub fn expire_held(&self, cutoff: u64) -> Result<u64, NodeError> {
        let mut n = 0;
        for kv in self.mailbox.iter() {
            let (key, v) = kv.map_err(|e| self.err(e))?;
            let h: HeldEnvelope = self.decode(&v)?;
            let device =
                <[u8; 32]>::try_from(&key[..32]).map_err(|_| self.err("damaged mailbox key"))?;
            if h.deposited_at < cutoff {
                self.mailbox_idx.remove(held_index(&device, &h.id)).map_err(|e| self.err(e))?;
                self.mailbox.remove(key).map_err(|e| self.err(e))?;
                n += 1;
            }
        }
        Ok(n)
    }
}
