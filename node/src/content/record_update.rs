//! `record.update`: a contact's newest name record, pushed when it drops a device (a
//! revocation). Applied under `rules::trust::pushed_record`; not shown in the history.

use kith_protocol::SenderDevice;

use crate::error::NodeError;
use crate::services::Services;

/// Receives a record pushed by `sender`.
pub(crate) fn receive(s: &Services, sender: &SenderDevice, record: &[u8]) -> Result<(), NodeError> {
    s.records.on_record_update(sender, record)
}
