//! Message ids: random, or, for a send made safe to repeat, derived from its idempotency key.
//!
//! A send with an idempotency key runs inside [`with_id`]: the first message of the history it
//! creates takes the id derived from the key ([`idempotent_id`]), so a repeated send (a bot
//! handling a message again after a crash, a client retrying) finds that message already
//! stored and sends nothing. The id is stored in the same write as the message and its outbox
//! entry, so there is no moment where one exists without the other.

use std::cell::Cell;
use std::future::Future;

use kith_protocol::{MessageId, UserId};
use sha2::{Digest, Sha256};

tokio::task_local! {
    static NEXT: Cell<Option<[u8; 16]>>;
}

/// The id of the message a send with idempotency key `key` by `user` creates:
/// `SHA-256("kith/v1/idempotent" || 0x00 || user || key)`, its first 16 bytes.
pub fn idempotent_id(user: &UserId, key: &str) -> [u8; 16] {
    let h = Sha256::new()
        .chain_update(b"kith/v1/idempotent")
        .chain_update([0u8])
        .chain_update(user.0)
        .chain_update(key.as_bytes())
        .finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&h[..16]);
    id
}

/// Runs `fut` with `id` as the id of the first history message it creates.
pub async fn with_id<F: Future>(id: [u8; 16], fut: F) -> F::Output {
    NEXT.scope(Cell::new(Some(id)), fut).await
}

/// The id for a new message of the history: the one [`with_id`] set, once, else random.
pub(crate) fn message_id() -> MessageId {
    NEXT.try_with(Cell::take)
        .ok()
        .flatten()
        .map_or_else(|| MessageId::random(&mut rand::rngs::OsRng), MessageId)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_set_id_is_taken_once_and_only_inside_the_scope() {
        let id = idempotent_id(&UserId([1; 16]), "k");
        assert_ne!(id, idempotent_id(&UserId([2; 16]), "k"), "bound to the user");
        assert_ne!(id, idempotent_id(&UserId([1; 16]), "k2"), "bound to the key");
        let (first, second) = with_id(id, async { (message_id(), message_id()) }).await;
        assert_eq!(first.0, id);
        assert_ne!(second.0, id);
        assert_ne!(message_id().0, id);
    }
}
