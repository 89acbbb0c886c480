//! A whole file in one request body: Connectivity `POST .../attachments`, Demand
//! `attachments/upload`.

use super::UploadReceiver;
use crate::error::Result;
use crate::store::AttachmentMeta;
use crate::stream::ids::random_id;
use crate::upload::receive_single;
use crate::wire::connectivity::UploadRequest;

impl UploadReceiver {
    /// A single-request upload (Connectivity `POST .../attachments`): the body parsed with
    /// borrowed strings, checked, stored as one attachment. Returns the `attachment_id`.
    /// `scope` is recorded with the attachment (see [`AttachmentMeta::scope`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidJson`](crate::Error::InvalidJson); what [`receive_single`] finds;
    /// [`Error::Io`](crate::Error::Io) from the store.
    pub async fn single(&self, body: &[u8], scope: &str) -> Result<String> {
        let req: UploadRequest<'_> = crate::wire::from_slice(body)?;
        let a = &req.attachment;
        self.single_parts(
            &a.file_name,
            &a.file_type,
            a.file_size,
            a.file_content.as_bytes(),
            scope,
        )
        .await
    }

    /// A single-request upload from its parts (for the Demand API's flat body).
    ///
    /// # Errors
    ///
    /// As [`UploadReceiver::single`].
    pub async fn single_parts(
        &self,
        file_name: &str,
        file_type: &str,
        file_size: u64,
        file_content: &[u8],
        scope: &str,
    ) -> Result<String> {
        let now = (self.clock)();
        let (data, info) = receive_single(
            &self.policy,
            file_name,
            file_type,
            file_size,
            file_content,
            now,
        )?;
        let upload_id = random_id()?.to_string();
        let attachment_id = random_id()?.to_string();
        let meta = AttachmentMeta::new(&attachment_id, &info, scope);
        // The whole file is in hand: scanned from it, before anything is stored.
        self.scan(&upload_id, data.len() as u64, |range| {
            let piece = data.slice(range.start as usize..range.end as usize);
            async move { Ok(piece) }
        })
        .await?;
        self.store.put_attachment(&upload_id, &meta, data).await?;
        Ok(attachment_id)
    }
}
