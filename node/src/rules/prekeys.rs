//! Prekey rotation: a new prekey when the current one is [`PREKEY_ROTATION_MS`] old (or there
//! is none); a replaced prekey's secret is kept [`PREKEY_GRACE_MS`] for messages sealed to it
//! on their way, and so is an expired one.

use crate::store::PrekeyEntry;

/// A new prekey is created when the current one is this old.
pub const PREKEY_ROTATION_MS: u64 = 7 * 24 * 3600 * 1000;
/// Lifetime of a prekey (rotation period plus a margin so records never outlive it).
pub const PREKEY_LIFETIME_MS: u64 = 14 * 24 * 3600 * 1000;
/// A replaced prekey's private key is deleted this long after it was replaced.
pub const PREKEY_GRACE_MS: u64 = 14 * 24 * 3600 * 1000;

/// What a rotation at some time does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rotation {
    /// Prekeys to delete (past their grace period).
    pub delete: Vec<u32>,
    /// The id of a new prekey to create, if one is due.
    pub create: Option<u32>,
    /// Prekeys the new one replaces (mark them replaced now).
    pub replace: Vec<u32>,
}

/// Plans a rotation of `all` (this device's prekeys) at `now`.
pub fn rotation(all: &[PrekeyEntry], now: u64) -> Rotation {
    let delete: Vec<u32> = all
        .iter()
        .filter(|p| {
            p.replaced_at.is_some_and(|r| r + PREKEY_GRACE_MS <= now)
                || p.expires_at + PREKEY_GRACE_MS <= now
        })
        .map(|p| p.id)
        .collect();
    let current = all.iter().filter(|p| p.replaced_at.is_none()).max_by_key(|p| p.id);
    if current.is_some_and(|p| p.created_at + PREKEY_ROTATION_MS > now) {
        return Rotation { delete, ..Rotation::default() };
    }
    let create = Some(all.iter().map(|p| p.id).max().map_or(1, |m| m.wrapping_add(1)));
    let replace = all
        .iter()
        .filter(|p| p.replaced_at.is_none() && !delete.contains(&p.id))
        .map(|p| p.id)
        .collect();
    Rotation { delete, create, replace }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prekey(id: u32, created_at: u64, replaced_at: Option<u64>) -> PrekeyEntry {
        PrekeyEntry {
            id,
            secret: [0; 32],
            signed: vec![],
            created_at,
            expires_at: created_at + PREKEY_LIFETIME_MS,
            replaced_at,
        }
    }

    #[test]
    fn the_first_prekey_is_created() {
        assert_eq!(rotation(&[], 5), Rotation { create: Some(1), ..Rotation::default() });
    }

    #[test]
    fn a_week_old_prekey_is_replaced_and_deleted_after_its_grace() {
        let week = PREKEY_ROTATION_MS;
        let all = [prekey(1, 0, None)];
        assert_eq!(rotation(&all, week - 1), Rotation::default());
        let r = rotation(&all, week);
        assert_eq!(r, Rotation { delete: vec![], create: Some(2), replace: vec![1] });
        let all = [prekey(1, 0, Some(week)), prekey(2, week, None)];
        assert_eq!(rotation(&all, week + PREKEY_GRACE_MS - 1).delete, Vec::<u32>::new());
        let r = rotation(&all, week + PREKEY_GRACE_MS);
        assert_eq!(r, Rotation { delete: vec![1], create: Some(3), replace: vec![2] });
    }

    #[test]
    fn an_expired_prekey_is_deleted_not_replaced() {
        let all = [prekey(4, 0, None)];
        let r = rotation(&all, PREKEY_LIFETIME_MS + PREKEY_GRACE_MS);
        assert_eq!(r, Rotation { delete: vec![4], create: Some(5), replace: vec![] });
    }
}
