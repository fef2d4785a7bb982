//! The request-response protocols in one table: what differs between them is a row of
//! [`RR_PROTOCOLS`], found with [`Proto::spec`].

use kith_protocol::mailbox::{MAX_MAILBOX_REQUEST, MAX_MAILBOX_RESPONSE};
use kith_protocol::{AckStatus, DeliveryAck};
use libp2p::{PeerId, StreamProtocol};

use super::{
    Event, Proto, Reply, BLOB_PROTOCOL, DM_PROTOCOL, LINK_PROTOCOL, MAILBOX_PROTOCOL,
    MAX_DM_REQUEST, MAX_DM_RESPONSE, SYNC_PROTOCOL,
};

/// Everything that differs between the request-response protocols: one row per [`Proto`].
pub(super) struct RrProtocol {
    /// Which protocol this row describes (its index in [`RR_PROTOCOLS`]).
    pub(super) proto: Proto,
    /// The protocol name on the wire.
    pub(super) name: StreamProtocol,
    /// Largest request frame.
    pub(super) max_request: usize,
    /// Largest response frame.
    pub(super) max_response: usize,
    /// The answer to a request when the node's event channel is full.
    pub(super) busy: fn() -> Vec<u8>,
    /// The event an inbound request becomes.
    pub(super) event: fn(PeerId, Vec<u8>, Reply) -> Event,
}

/// The request-response protocols, in [`Proto`] order.
pub(super) static RR_PROTOCOLS: [RrProtocol; 5] = [
    RrProtocol {
        proto: Proto::Dm,
        name: DM_PROTOCOL,
        max_request: MAX_DM_REQUEST,
        max_response: MAX_DM_RESPONSE,
        busy: || DeliveryAck::new(AckStatus::Busy, Some("recipient is busy".into())).to_bytes(),
        event: |peer, bytes, reply| Event::InboundEnvelope { peer, bytes, reply },
    },
    RrProtocol {
        proto: Proto::Mailbox,
        name: MAILBOX_PROTOCOL,
        max_request: MAX_MAILBOX_REQUEST,
        max_response: MAX_MAILBOX_RESPONSE,
        busy: || {
            kith_protocol::mailbox::MailboxResponse::Refused { reason: "busy".into() }.to_bytes()
        },
        event: |peer, bytes, reply| Event::MailboxRequest { peer, bytes, reply },
    },
    RrProtocol {
        proto: Proto::Sync,
        name: SYNC_PROTOCOL,
        max_request: 4096,
        max_response: MAX_MAILBOX_RESPONSE,
        // An empty page with more to come: the requester stops on an empty page and asks
        // again on its next round.
        busy: || {
            kith_protocol::group::SyncResponse {
                v: kith_protocol::VERSION,
                envelopes: vec![],
                more: true,
            }
            .to_bytes()
        },
        event: |peer, bytes, reply| Event::SyncRequest { peer, bytes, reply },
    },
    RrProtocol {
        proto: Proto::Link,
        name: LINK_PROTOCOL,
        max_request: kith_protocol::link::MAX_LINK_REQUEST,
        max_response: kith_protocol::link::MAX_LINK_RESPONSE,
        busy: || kith_protocol::link::LinkResponse::Refused { reason: "busy".into() }.to_bytes(),
        event: |peer, bytes, reply| Event::LinkRequest { peer, bytes, reply },
    },
    RrProtocol {
        proto: Proto::Blob,
        name: BLOB_PROTOCOL,
        max_request: kith_protocol::blob::MAX_BLOB_REQUEST,
        max_response: kith_protocol::blob::MAX_BLOB_RESPONSE,
        busy: || kith_protocol::blob::BlobResponse::Refused { reason: "busy".into() }.to_bytes(),
        event: |peer, bytes, reply| Event::BlobRequest { peer, bytes, reply },
    },
];

impl Proto {
    /// This protocol's row of [`RR_PROTOCOLS`].
    pub(super) fn spec(self) -> &'static RrProtocol {
        let spec = &RR_PROTOCOLS[self as usize];
        debug_assert_eq!(spec.proto, self, "RR_PROTOCOLS is in Proto order");
        spec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each row of the protocol table sits at its protocol's index, with the names and limits
    /// the wire has always had.
    #[test]
    fn the_protocol_table_keeps_names_and_limits() {
        let rows: Vec<_> = RR_PROTOCOLS
            .iter()
            .map(|r| (r.proto, r.name.as_ref().to_owned(), r.max_request, r.max_response))
            .collect();
        assert_eq!(
            rows,
            vec![
                (Proto::Dm, "/kith/dm/1".to_owned(), MAX_DM_REQUEST, MAX_DM_RESPONSE),
                (
                    Proto::Mailbox,
                    "/kith/mailbox/1".to_owned(),
                    MAX_MAILBOX_REQUEST,
                    MAX_MAILBOX_RESPONSE
                ),
                (Proto::Sync, "/kith/sync/1".to_owned(), 4096, MAX_MAILBOX_RESPONSE),
                (
                    Proto::Link,
                    "/kith/link/1".to_owned(),
                    kith_protocol::link::MAX_LINK_REQUEST,
                    kith_protocol::link::MAX_LINK_RESPONSE
                ),
                (Proto::Blob, "/kith/blob/1".to_owned(), 128, 558_144),
            ]
        );
        for p in [Proto::Dm, Proto::Mailbox, Proto::Sync, Proto::Link] {
            assert_eq!(p.spec().proto, p);
        }
        let dm = DeliveryAck::from_bytes(&(Proto::Dm.spec().busy)()).unwrap();
        assert_eq!(dm.status, AckStatus::Busy);
    }
}
