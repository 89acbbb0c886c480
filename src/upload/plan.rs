//! The client side: [`UploadPlan`] turns a file's bytes into request bodies.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use super::ChunkAction;
use crate::codec::base64::{Encoder, encoded_len};
use crate::error::{ChunkProblem, Error, Result, SizeLimit};
use crate::inspect::{Inspection, Inspector};
use crate::policy::{Policy, UploadMode};
use crate::wire::{Id, write_json, write_json_str};

/// Default raw bytes per chunk: 1,048,575, the largest multiple of 3 under the 1 MB
/// (1,048,576-byte) chunk limit, so each chunk's base64 ends without padding and the
/// concatenated `chunk_content` strings form one valid base64 text.
pub const DEFAULT_CHUNK_SIZE: u64 = 1_048_575;

/// Where the bodies go, which decides their JSON shape.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// Connectivity (`docs/protocol.md`, *Connectivity*): `{"attachment": {..}}` for one
    /// request, or `attachment_chunks` bodies for `start` / `resume` / `finish`.
    Connectivity,
    /// Demand API (`docs/protocol.md`, *Demand upload*): one flat body naming the
    /// accommodation, conversation and reservation. The Demand API has no chunked upload.
    Demand {
        /// The accommodation (property) id.
        accommodation: u64,
        /// The conversation id.
        conversation: String,
        /// The reservation id, written back as a string or an integer as given.
        reservation: Id,
    },
}

/// What a [`Request`] body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// The whole file in one request.
    Single,
    /// One chunk of a chunked upload.
    Chunk {
        /// `start`, `resume` or `finish`.
        action: ChunkAction,
        /// Its `chunk_number`.
        number: u64,
    },
}

/// A finished request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What the body is.
    pub kind: RequestKind,
    /// The file's bytes it carries.
    pub range: Range<u64>,
    /// The JSON body, ready to send.
    pub body: Bytes,
}

/// What an [`UploadPlan`] needs or has, from [`UploadPlan::poll`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A body to send.
    Send(Request),
    /// More of the file: call [`UploadPlan::write`].
    NeedData,
    /// The next body continues the upload that `start` opened: call
    /// [`UploadPlan::set_upload_id`] with the id the `start` response returned.
    NeedUploadId,
    /// Every body was given out.
    Done,
}

/// The body being filled, or filled and waiting to be taken.
#[derive(Debug)]
struct Building {
    kind: RequestKind,
    range: Range<u64>,
    body: BytesMut,
    sealed: bool,
}

/// The client side of an upload: fed the file's bytes, gives the request bodies.
///
/// It decides single or chunked upload from the declared size (by the policy's single
/// limit, 1,048,576 bytes on the Booking.com APIs), writes each body's JSON around the base64
/// it encodes straight from the slices it is fed (no copy of the raw chunk), and runs the
/// [`Inspector`] over the same slices in the same pass. The last body (single or `finish`)
/// is released only once the Inspector has accepted the whole file; if it rejects, the plan
/// ends with the error and never produces that body.
///
/// At most one body is built ahead: while a finished body waits to be taken with
/// [`UploadPlan::poll`], [`UploadPlan::write`] accepts no bytes. Memory is one body (a
/// chunk's base64 and a few hundred bytes of JSON), whatever the file size.
///
/// After an error, the plan answers every call with [`Error::AlreadyFailed`] until
/// [`UploadPlan::restart`] starts it over from chunk 0 (the Connectivity API's rule;
/// `docs/protocol.md`, *A failed or expired upload*), for a source that can be read again.
///
/// # Examples
///
/// ```
/// use attachments::upload::{Step, Target, UploadPlan};
/// use attachments::Policy;
///
/// // A complete 1 x 1 greyscale PNG goes in one request.
/// let png: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\0\0\0\0\x3a\x7e\x9b\x55\0\0\0\nIDAT\x78\xda\x63\x68\0\0\0\x82\0\x81\xda\x45\x08\x3b\0\0\0\0IEND\xaeB`\x82";
/// let mut plan = UploadPlan::new(&Policy::connectivity(), Target::Connectivity,
///                                "dot.png", "image/png", png.len() as u64)?;
/// assert_eq!(plan.poll()?, Step::NeedData);
/// assert_eq!(plan.write(png)?, png.len());
/// let Step::Send(request) = plan.poll()? else { panic!("a body is ready") };
/// let json: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
/// assert_eq!(json["attachment"]["file_size"], 67);
/// assert_eq!(json["attachment"]["file_content"].as_str().unwrap().len(), 92);
/// assert_eq!(plan.poll()?, Step::Done);
/// assert_eq!(plan.inspection().unwrap().info.dimensions, Some((1, 1)));
/// # Ok::<(), attachments::Error>(())
/// ```
#[derive(Debug)]
pub struct UploadPlan {
    policy: Policy,
    target: Target,
    file_name: String,
    file_type: String,
    file_size: u64,
    mode: UploadMode,
    chunk_size: u64,
    inspector: Inspector,
    encoder: Encoder,
    /// Bytes taken so far.
    fed: u64,
    /// The next chunk number to build.
    next_number: u64,
    current: Option<Building>,
    upload_id: Option<String>,
    inspection: Option<Inspection>,
    failed: Option<Box<Error>>,
    done: bool,
}

impl UploadPlan {
    /// Plans the upload of `file_size` bytes named `file_name`, declared as `file_type`.
    ///
    /// # Errors
    ///
    /// What the declaration alone shows: [`Error::InvalidFileName`], [`Error::InvalidType`],
    /// [`Error::UnsupportedType`], and [`Error::TooLarge`] for a size no route of the policy
    /// (or of the target: Demand has no chunked upload) takes.
    pub fn new(
        policy: &Policy,
        target: Target,
        file_name: &str,
        file_type: &str,
        file_size: u64,
    ) -> Result<Self> {
        policy.check_file_name(file_name)?;
        let mode = policy.upload_mode(file_size)?;
        if mode == UploadMode::Chunked && matches!(target, Target::Demand { .. }) {
            return Err(Error::TooLarge {
                size: file_size,
                limit: policy.limits.max_single_size,
                kind: SizeLimit::Single,
            });
        }
        if mode == UploadMode::Chunked && file_size < 2 {
            // `start` and `finish` are two chunks of at least one byte each.
            return Err(Error::TooSmallForChunks {
                size: file_size,
                min: 2,
            });
        }
        let inspector = Inspector::new(policy, file_type, Some(file_size))?;
        Ok(UploadPlan {
            policy: policy.clone(),
            target,
            file_name: file_name.to_owned(),
            file_type: file_type.to_owned(),
            file_size,
            mode,
            chunk_size: DEFAULT_CHUNK_SIZE.min(policy.limits.max_chunk_size).max(1),
            inspector,
            encoder: Encoder::new(),
            fed: 0,
            next_number: 0,
            current: None,
            upload_id: None,
            inspection: None,
            failed: None,
            done: false,
        })
    }

    /// Sets the raw bytes per chunk (default [`DEFAULT_CHUNK_SIZE`]). Sizes that are not a
    /// multiple of 3 work too: each chunk's base64 is then padded on its own. A chunked
    /// upload always has at least two chunks (see [`UploadPlan::chunk_size`]).
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] over the policy's chunk limit; [`Error::Chunk`] for 0.
    pub fn with_chunk_size(mut self, size: u64) -> Result<Self> {
        if size == 0 {
            return Err(Error::Chunk(ChunkProblem::ZeroChunkSize));
        }
        self.policy.check_chunk_size(size)?;
        self.chunk_size = size;
        Ok(self)
    }

    /// Forces single request or chunks, whatever the policy's size rule picks: for a client
    /// whose server answered a size error for the route it picked (fall back once to the
    /// other endpoint: `docs/protocol.md`, *The client's side*). Call it before the first
    /// [`UploadPlan::write`].
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] for chunks to the Demand API (it has none);
    /// [`Error::TooSmallForChunks`] for chunks of a file under 2 bytes.
    pub fn with_mode(mut self, mode: UploadMode) -> Result<Self> {
        if mode == UploadMode::Chunked {
            if matches!(self.target, Target::Demand { .. }) {
                return Err(Error::TooLarge {
                    size: self.file_size,
                    limit: self.policy.limits.max_single_size,
                    kind: SizeLimit::Single,
                });
            }
            if self.file_size < 2 {
                return Err(Error::TooSmallForChunks {
                    size: self.file_size,
                    min: 2,
                });
            }
        }
        self.mode = mode;
        Ok(self)
    }

    /// Single request or chunks.
    pub fn mode(&self) -> UploadMode {
        self.mode
    }

    /// The declared file size.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// Raw bytes per chunk: the configured size, or about half the file when that would
    /// carry the whole file in one chunk (a chunked upload is at least `start` and
    /// `finish`).
    pub fn chunk_size(&self) -> u64 {
        self.effective_chunk_size()
    }

    /// A chunked upload is at least `start` and `finish`: a chunk size that would carry the
    /// whole file (possible only with custom limits, whose chunk limit exceeds the single
    /// limit) is lowered to about half the file, a multiple of 3 where one fits.
    fn effective_chunk_size(&self) -> u64 {
        if self.chunk_size < self.file_size {
            return self.chunk_size;
        }
        let half = self.file_size.div_ceil(2);
        match half.next_multiple_of(3) {
            third if third < self.file_size => third,
            _ => half,
        }
    }

    /// How many bodies the upload takes.
    pub fn body_count(&self) -> u64 {
        match self.mode {
            UploadMode::Single => 1,
            UploadMode::Chunked => self.file_size.div_ceil(self.effective_chunk_size()),
        }
    }

    /// Bytes of the file taken so far.
    pub fn bytes_taken(&self) -> u64 {
        self.fed
    }

    /// Whether every declared byte has been taken (the caller may then check that its
    /// source is at its end).
    pub fn input_complete(&self) -> bool {
        self.fed == self.file_size
    }

    /// The Inspector's verdict, once the whole file was accepted.
    pub fn inspection(&self) -> Option<&Inspection> {
        self.inspection.as_ref()
    }

    /// The `upload_id` in use, once set.
    pub fn upload_id(&self) -> Option<&str> {
        self.upload_id.as_deref()
    }

    /// Hands over the `upload_id` from the `start` response; `resume` and `finish` bodies
    /// carry it.
    pub fn set_upload_id(&mut self, upload_id: impl Into<String>) {
        self.upload_id = Some(upload_id.into());
    }

    /// Takes bytes of the file, up to the end of the body being built, and returns how many
    /// it took: 0 while a finished body waits to be taken with [`UploadPlan::poll`].
    ///
    /// # Errors
    ///
    /// Any rejection of the [`Inspector`] (type, size, structure), and
    /// [`Error::SizeMismatch`] when the source gives more bytes than declared (`actual` is
    /// then the count so far, at least that many).
    pub fn write(&mut self, data: &[u8]) -> Result<usize> {
        self.check_alive()?;
        let result = self.write_inner(data);
        if let Err(e) = &result {
            self.failed = Some(Box::new(e.clone()));
        }
        result
    }

    fn write_inner(&mut self, data: &[u8]) -> Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        if self.fed == self.file_size {
            return Err(Error::SizeMismatch {
                actual: self.fed + data.len() as u64,
                declared: self.file_size,
            });
        }
        if self.current.as_ref().is_some_and(|b| b.sealed) {
            return Ok(0);
        }
        if self.current.is_none() {
            self.current = Some(self.open_body());
        }
        let building = self.current.as_mut().expect("opened above");
        let room = building.range.end - self.fed;
        let n = usize::try_from(room).unwrap_or(usize::MAX).min(data.len());
        self.inspector
            .update_encode(&data[..n], &mut self.encoder, &mut building.body)?;
        self.fed += n as u64;
        if self.fed == building.range.end {
            self.seal();
        }
        Ok(n)
    }

    /// Says the source has ended.
    ///
    /// # Errors
    ///
    /// [`Error::SizeMismatch`] when it gave fewer bytes than declared.
    pub fn end(&mut self) -> Result<()> {
        self.check_alive()?;
        if self.fed < self.file_size {
            let err = Error::SizeMismatch {
                actual: self.fed,
                declared: self.file_size,
            };
            self.failed = Some(Box::new(err.clone()));
            return Err(err);
        }
        Ok(())
    }

    /// What comes next: a body to send, a need for bytes or for the `upload_id`, or the end.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyFailed`] after an earlier error. For an empty file, the Inspector's
    /// verdict.
    pub fn poll(&mut self) -> Result<Step> {
        self.check_alive()?;
        if self.done {
            return Ok(Step::Done);
        }
        // An empty file is complete before any write.
        if self.file_size == 0 && self.current.is_none() {
            self.current = Some(self.open_body());
            self.seal();
        }
        let Some(building) = &self.current else {
            return Ok(Step::NeedData);
        };
        if !building.sealed {
            return Ok(Step::NeedData);
        }
        // The last body waits for the Inspector's verdict on the whole file, asked for
        // only now so that a caller can first check that its source has ended.
        if building.range.end == self.file_size && self.inspection.is_none() {
            match self.inspector.finish() {
                Ok(verdict) => self.inspection = Some(verdict),
                Err(e) => {
                    self.failed = Some(Box::new(e.clone()));
                    return Err(e);
                }
            }
        }
        let Some(building) = &self.current else {
            unreachable!("checked above")
        };
        let needs_id = matches!(building.kind, RequestKind::Chunk { number, .. } if number > 0);
        if needs_id && self.upload_id.is_none() {
            return Ok(Step::NeedUploadId);
        }
        let mut building = self.current.take().expect("checked above");
        if needs_id {
            building.body.put_slice(b",\"upload_id\":");
            write_json_str(&mut building.body, self.upload_id.as_deref().unwrap_or(""));
        }
        // Demand bodies are flat; Connectivity ones close `attachment` and the body.
        let close: &[u8] = match self.target {
            Target::Demand { .. } => b"}",
            Target::Connectivity => b"}}",
        };
        building.body.put_slice(close);
        if building.range.end == self.file_size {
            self.done = true;
        }
        Ok(Step::Send(Request {
            kind: building.kind,
            range: building.range,
            body: building.body.freeze(),
        }))
    }

    /// Starts over from chunk 0 with a fresh Inspector, forgetting the `upload_id` and any
    /// body not yet taken. Feed the file again from its first byte.
    pub fn restart(&mut self) {
        // Inspector::new succeeded with these arguments in `new`; it cannot fail now.
        if let Ok(inspector) = Inspector::new(&self.policy, &self.file_type, Some(self.file_size)) {
            self.inspector = inspector;
        }
        self.encoder = Encoder::new();
        self.fed = 0;
        self.next_number = 0;
        self.current = None;
        self.upload_id = None;
        self.inspection = None;
        self.failed = None;
        self.done = false;
    }

    fn check_alive(&self) -> Result<()> {
        match &self.failed {
            None => Ok(()),
            Some(first) => Err(Error::AlreadyFailed {
                first: first.clone(),
            }),
        }
    }

    /// Starts the next body: its JSON up to the opening quote of the base64 text, in a
    /// buffer with room for the whole body.
    fn open_body(&mut self) -> Building {
        let start = self.fed;
        let (kind, end) = match self.mode {
            UploadMode::Single => (RequestKind::Single, self.file_size),
            UploadMode::Chunked => {
                let number = self.next_number;
                self.next_number += 1;
                let end = (start + self.effective_chunk_size()).min(self.file_size);
                let action = match (number, end == self.file_size) {
                    (_, true) => ChunkAction::Finish,
                    (0, false) => ChunkAction::Start,
                    (_, false) => ChunkAction::Resume,
                };
                (RequestKind::Chunk { action, number }, end)
            }
        };
        let raw = usize::try_from(end - start).unwrap_or(usize::MAX);
        let extra = 6 * (self.file_name.len() + self.file_type.len())
            + self.upload_id.as_ref().map_or(64, |id| 6 * id.len())
            + match &self.target {
                Target::Connectivity => 0,
                Target::Demand {
                    conversation,
                    reservation,
                    ..
                } => 6 * (conversation.len() + reservation.as_str().len()),
            };
        let mut body = BytesMut::with_capacity(encoded_len(raw) + extra + 256);
        self.write_prefix(&mut body, kind, end - start);
        self.encoder = Encoder::new();
        Building {
            kind,
            range: start..end,
            body,
            sealed: false,
        }
    }

    fn write_prefix(&self, body: &mut BytesMut, kind: RequestKind, len: u64) {
        match (&self.target, kind) {
            (
                Target::Demand {
                    accommodation,
                    conversation,
                    reservation,
                },
                _,
            ) => {
                body.put_slice(b"{\"accommodation\":");
                body.put_slice(accommodation.to_string().as_bytes());
                body.put_slice(b",\"conversation\":");
                write_json_str(body, conversation);
                body.put_slice(b",\"reservation\":");
                write_json(body, reservation);
                body.put_slice(b",");
                self.write_file_fields(body);
                body.put_slice(b",\"file_content\":\"");
            }
            (Target::Connectivity, RequestKind::Single) => {
                body.put_slice(b"{\"attachment\":{");
                self.write_file_fields(body);
                body.put_slice(b",\"file_content\":\"");
            }
            (Target::Connectivity, RequestKind::Chunk { action, number }) => {
                body.put_slice(b"{\"attachment\":{\"action\":");
                write_json(body, &action);
                body.put_slice(b",");
                self.write_file_fields(body);
                body.put_slice(b",\"chunk\":{\"chunk_number\":");
                body.put_slice(number.to_string().as_bytes());
                body.put_slice(b",\"chunk_size\":");
                body.put_slice(len.to_string().as_bytes());
                body.put_slice(b",\"chunk_content\":\"");
            }
        }
    }

    fn write_file_fields(&self, body: &mut BytesMut) {
        body.put_slice(b"\"file_name\":");
        write_json_str(body, &self.file_name);
        body.put_slice(b",\"file_type\":");
        write_json_str(body, &self.file_type);
        body.put_slice(b",\"file_size\":");
        body.put_slice(self.file_size.to_string().as_bytes());
    }

    /// Closes the base64 text of a complete body.
    fn seal(&mut self) {
        let building = self.current.as_mut().expect("a body is open");
        self.encoder.finish(&mut building.body);
        building.body.put_slice(b"\"");
        if let RequestKind::Chunk { .. } = building.kind {
            // Closes `chunk`; `poll` adds the upload_id and closes `attachment`.
            building.body.put_slice(b"}");
        }
        building.sealed = true;
    }
}
