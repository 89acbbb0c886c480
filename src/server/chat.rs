//! The chat-platform attachments resource (`docs/protocol.md`, *Chat attachments resource*)
//! under `/v1/attachments`: streaming multipart upload, paginated list, retrieve, rename,
//! delete, and the file's bytes with HTTP ranges.
//!
//! Owners: with credentials configured, the one valid bearer token is the one owner.
//! Without, every bearer token is an owner of its own (a sandbox user; requests without
//! one share an anonymous owner), so two tokens see two separate sets of attachments.
//! Another owner's attachment, or one outside the `conversation_id` a request names,
//! answers 404 exactly like a missing one.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::multipart::{Multipart, MultipartError, MultipartRejection};
use axum::extract::{FromRequest, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::Stream;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::extract::form_pairs;
use super::idempotent::{self, Begun, Keyed};
use super::quota::ClientKey;
use super::reply::{Chat, Failure, Reply, chat_error, json_headers, ok_json, to_json};
use super::{MAX_SMALL_BODY, Sandbox};
use crate::download::http_range::{RangeRequest, content_range, unsatisfied_range};
use crate::error::{Error, Result, SizeLimit};
use crate::store::{AttachmentMeta, ListQuery, MetaChange, Store};
use crate::stream::{STREAM_CHUNK, Staged};
use crate::upload::RandomId;
use crate::wire::chat::{Attachment, AttachmentList, DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT, Update};
use crate::wire::multipart::{FramingCheck, FramingError, FramingLimits};

use crate::wire::MAX_REF_LEN;

/// Room for the multipart framing around the file: boundaries, part headers and the small
/// text fields. A body longer than the policy's largest file plus this is refused (413).
pub(super) const MULTIPART_OVERHEAD: usize = 64 * 1024;

/// The scope of the request's owner: `chat/` and the first 128 bits of the token's
/// SHA-256 (the token itself is never stored).
pub(super) fn owner_scope(headers: &HeaderMap) -> String {
    match super::guard::bearer(headers) {
        Some(token) => format!(
            "chat/{}",
            &crate::digest::sha256(token.as_bytes()).to_hex()[..32]
        ),
        None => "chat/anonymous".to_owned(),
    }
}

/// The public address of the resource: the configured one, else `http://` and the host
/// the request names (its HTTP/2 `:authority` or absolute URI, else its `Host`), if that
/// host is one [`ServerConfig::allowed_hosts`](super::ServerConfig::allowed_hosts) lists;
/// another host is refused (421), never reflected into a link.
pub(super) fn base_url(s: &Sandbox, uri: &axum::http::Uri, headers: &HeaderMap) -> Result<String> {
    let config = &s.inner.config;
    if let Some(url) = &config.public_url {
        return Ok(url.trim_end_matches('/').to_owned());
    }
    let named = match uri.authority() {
        Some(authority) => Some(authority.as_str().to_owned()),
        None => headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned),
    };
    let Some(named) = named else {
        return Err(Error::MisdirectedRequest {
            host: String::new(),
            allowed: config.allowed_hosts.join(", "),
        });
    };
    // Parsed as an authority (no user info, path or odd bytes), then matched by host,
    // and by port where the entry names one.
    let parsed = named
        .parse::<axum::http::uri::Authority>()
        .ok()
        .filter(|a| {
            !a.as_str().contains('@')
                && config.allowed_hosts.iter().any(|allowed| {
                    match allowed.parse::<axum::http::uri::Authority>() {
                        Ok(entry) if entry.port().is_some() => {
                            entry.host().eq_ignore_ascii_case(a.host())
                                && entry.port_u16() == a.port_u16()
                        }
                        Ok(entry) => entry.host().eq_ignore_ascii_case(a.host()),
                        Err(_) => false,
                    }
                })
        });
    match parsed {
        Some(authority) => Ok(format!("http://{authority}")),
        None => Err(Error::MisdirectedRequest {
            host: crate::error::shorten(&named, 100).into_owned(),
            allowed: config.allowed_hosts.join(", "),
        }),
    }
}

pub(super) fn to_wire(meta: &AttachmentMeta, base: &str) -> Attachment {
    Attachment {
        id: meta.id.clone(),
        message_id: meta.message_id.clone(),
        conversation_id: meta.conversation_id.clone(),
        filename: meta.file_name.clone(),
        file_url: format!("{base}/v1/attachments/{}/content", meta.id),
        file_type: meta.file_type.clone(),
        file_size: meta.file_size,
        created_at: meta
            .created
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

/// The pairs of a query string, each name at most once.
fn query_pairs(query: Option<&str>, known: &[&str]) -> Result<Vec<(String, String)>> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (name, value) in form_pairs(query.unwrap_or("").as_bytes())? {
        if !known.contains(&name.as_str()) {
            continue;
        }
        if pairs.iter().any(|(n, _)| *n == name) {
            return Err(Error::InvalidField {
                field: name,
                problem: "is given twice; give it once".into(),
            });
        }
        pairs.push((name, value));
    }
    Ok(pairs)
}

fn get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The `conversation_id` a request names in its query, if any.
fn conversation_filter(query: Option<&str>) -> Result<Option<String>> {
    let pairs = query_pairs(query, &["conversation_id"])?;
    let conversation = get(&pairs, "conversation_id").map(str::to_owned);
    if let Some(c) = &conversation {
        crate::wire::check_ref("conversation_id", c)?;
    }
    Ok(conversation)
}

/// The attachment a `/v1/attachments/{id}` request names, if the request's owner (and the
/// `conversation_id` it names, if any) may see it, else a 404 exactly like a missing id;
/// with the base of its `file_url`.
pub(super) struct Owned {
    meta: AttachmentMeta,
    base: String,
}

impl axum::extract::FromRequestParts<Sandbox> for Owned {
    type Rejection = Failure<Chat>;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        s: &Sandbox,
    ) -> std::result::Result<Self, Failure<Chat>> {
        let Path(id) = Path::<String>::from_request_parts(parts, s)
            .await
            .map_err(|e| Error::InvalidField {
                field: "attachment id".into(),
                problem: e.body_text(),
            })?;
        let conversation = conversation_filter(parts.uri.query())?;
        let meta = s.scoped(&id, &owner_scope(&parts.headers)).await?;
        if conversation.is_some() && meta.conversation_id != conversation {
            return Err(super::not_found_attachment(&id).into());
        }
        Ok(Owned {
            meta,
            base: base_url(s, &parts.uri, &parts.headers)?,
        })
    }
}

/// `GET /v1/attachments?conversation_id=&limit=&starting_after=`
pub(super) async fn list(
    State(s): State<Sandbox>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Reply<Chat> {
    let pairs = query_pairs(
        query.as_deref(),
        &["conversation_id", "limit", "starting_after"],
    )?;
    let limit = match get(&pairs, "limit") {
        None => DEFAULT_LIST_LIMIT,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_LIST_LIMIT).contains(&n) => n,
            _ => {
                return Err(Error::InvalidField {
                    field: "limit".into(),
                    problem: format!(
                        "must be a whole number from 1 to {MAX_LIST_LIMIT}, got {text:?}"
                    ),
                }
                .into());
            }
        },
    };
    // One more than asked tells whether another page follows.
    let mut q = ListQuery::new(owner_scope(&headers), limit + 1);
    if let Some(c) = get(&pairs, "conversation_id") {
        crate::wire::check_ref("conversation_id", c)?;
        q = q.with_conversation(c);
    }
    if let Some(after) = get(&pairs, "starting_after") {
        let id: RandomId = after.parse().map_err(|_| Error::InvalidField {
            field: "starting_after".into(),
            problem: format!(
                "must be an attachment id (the last id of the previous page), got {after:?}"
            ),
        })?;
        q = q.before(id.to_string());
    }
    let mut found = s.inner.store.list_attachments(&q).await?;
    let has_more = found.len() > limit;
    found.truncate(limit);
    let base = base_url(&s, &uri, &headers)?;
    let page = AttachmentList {
        has_more,
        data: found.iter().map(|m| to_wire(m, &base)).collect(),
    };
    Ok(ok_json(&page))
}

/// `POST /v1/attachments`, `multipart/form-data` with `file` and optional
/// `conversation_id` and `message_id`, in any order.
pub(super) async fn upload(
    State(s): State<Sandbox>,
    Extension(client): Extension<ClientKey>,
    req: Request,
) -> Reply<Chat> {
    let headers = req.headers().clone();
    // Refused before the body is read, if the host is not one to link to.
    let base = base_url(&s, req.uri(), &headers)?;
    let keyed = Keyed::from_request(req.method(), req.uri(), &headers, &client)?;
    let not_form = |why: String| Error::InvalidField {
        field: "Content-Type".into(),
        problem: format!(
            "must be multipart/form-data with a boundary and the file in a part named `file` ({why})"
        ),
    };
    // The framing is checked as the body streams in, before multer buffers it: a
    // preamble or part header past its limit, or too many parts, fail the read.
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| not_form("no Content-Type".into()))
        .and_then(|t| multer::parse_boundary(t).map_err(|e| not_form(e.to_string())))?;
    let check = FramingCheck::new(&boundary, FramingLimits::default()).map_err(|e| {
        Error::InvalidField {
            field: "Content-Type".into(),
            problem: e.to_string(),
        }
    })?;
    let req = req.map(|body| Body::from_stream(framed(body, check)));
    let mut form = Multipart::from_request(req, &s)
        .await
        .map_err(|e: MultipartRejection| not_form(e.body_text()))?;
    let limit = body_limit(&s);
    let mut staged: Option<Staged> = None;
    let mut conversation = None;
    let mut message = None;
    let read = async {
        while let Some(field) = form
            .next_field()
            .await
            .map_err(|e| multipart_error(e, limit))?
        {
            match field.name() {
                Some("file") => {
                    if staged.is_some() {
                        return Err(Error::InvalidField {
                            field: "file".into(),
                            problem: "appears twice: send one file per request".into(),
                        });
                    }
                    let name = field.file_name().map(str::to_owned).ok_or_else(|| {
                        Error::InvalidField {
                            field: "file".into(),
                            problem: "has no filename in its Content-Disposition".into(),
                        }
                    })?;
                    // The part's own header as sent (multer drops a type it cannot
                    // parse; that must be refused, not read as "no type").
                    let declared = match field.headers().get(header::CONTENT_TYPE) {
                        None => "application/octet-stream".to_owned(),
                        Some(v) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    };
                    // The bytes count against the owner's upload quota while they stream.
                    let opened = s.open_upload(&client, None, 0)?;
                    let quota = s.clone();
                    let pieces = futures::StreamExt::map(field, move |piece| {
                        let piece = piece.map_err(|e| multipart_error(e, limit))?;
                        quota.stage_upload(opened.id(), piece.len() as u64)?;
                        Ok::<_, Error>(piece)
                    });
                    staged = Some(
                        s.inner
                            .chat
                            .receive_stream(&name, &declared, pieces)
                            .await?,
                    );
                }
                Some(name @ ("conversation_id" | "message_id")) => {
                    let name = name.to_owned();
                    let value = text_field(field, &name, limit).await?;
                    crate::wire::check_ref(&name, &value)?;
                    if name == "conversation_id" {
                        conversation = Some(value);
                    } else {
                        message = Some(value);
                    }
                }
                // Unknown fields are ignored (`docs/protocol.md`, *Conventions*, *Chat
                // upload*); multer skips what is not read.
                _ => {}
            }
        }
        Ok(())
    }
    .await;
    let refused = match (read, staged) {
        (Ok(()), Some(staged)) if staged.info().size == 0 => {
            s.inner.chat.abort_staged(staged).await;
            Error::InvalidField {
                field: "file".into(),
                problem: "is empty (0 bytes): an attachment needs content".into(),
            }
        }
        (Ok(()), Some(staged)) => {
            let owner = owner_scope(&headers);
            let Some(keyed) = keyed else {
                return commit(&s, staged, &owner, conversation, message, &base).await;
            };
            // A key is claimed once the whole file is read (its fingerprint is the file's
            // digest and the fields, whatever the multipart boundary), before the commit;
            // claim, commit and answer run in a task of their own, which the client going
            // away does not cut short.
            let info = staged.info();
            let fields = [
                info.file_name.as_bytes(),
                info.media_type.as_str().as_bytes(),
                &info.size.to_be_bytes(),
                &info.sha256.0,
                conversation.as_deref().unwrap_or("\0").as_bytes(),
                message.as_deref().unwrap_or("\0").as_bytes(),
            ];
            let fingerprint = keyed.fingerprint(&fields);
            let s = s.clone();
            return idempotent::detached(async move {
                match idempotent::claim(s.inner.store.clone(), (keyed, fingerprint)).await {
                    Err(e) => {
                        s.inner.chat.abort_staged(staged).await;
                        Err(e.into())
                    }
                    Ok(Begun::Replay(answer)) => {
                        s.inner.chat.abort_staged(staged).await;
                        Ok(answer)
                    }
                    Ok(Begun::Run(claim)) => {
                        let reply = commit(&s, staged, &owner, conversation, message, &base).await;
                        claim.settle(reply).await
                    }
                }
            })
            .await;
        }
        (Ok(()), None) => Error::InvalidField {
            field: "file".into(),
            problem: "is missing: send the file as the form part named `file`".into(),
        },
        (Err(e), staged) => {
            if let Some(staged) = staged {
                s.inner.chat.abort_staged(staged).await;
            }
            e
        }
    };
    Err(refused.into())
}

/// Commits a staged chat upload for `owner`, linked, with its conversation and message;
/// the answer names it at `base`.
async fn commit(
    s: &Sandbox,
    staged: Staged,
    owner: &str,
    conversation: Option<String>,
    message: Option<String>,
    base: &str,
) -> Reply<Chat> {
    let meta = s
        .inner
        .chat
        .commit_staged(staged, owner, |m| {
            m.conversation_id = conversation;
            m.message_id = message;
            // A resource kept until deleted, never swept as unlinked
            // (`docs/protocol.md`, *Lifetimes and the sweep*).
            m.linked = true;
        })
        .await?;
    tracing::info!(id = %meta.id, size = meta.file_size, file_type = %meta.file_type, "chat attachment stored");
    Ok(ok_json(&to_wire(&meta, base)))
}

/// The request body limit of an upload.
pub(super) fn body_limit(s: &Sandbox) -> usize {
    usize::try_from(s.inner.config.chat.limits.max_file_size())
        .unwrap_or(usize::MAX)
        .saturating_add(MULTIPART_OVERHEAD)
}

/// `body`'s pieces, each checked by `check` before it is passed on; the first one past a
/// limit ends the body with the [`FramingError`].
fn framed(
    body: Body,
    mut check: FramingCheck,
) -> impl Stream<Item = std::result::Result<Bytes, axum::BoxError>> + Send {
    futures::StreamExt::map(body.into_data_stream(), move |piece| {
        let piece = piece.map_err(axum::BoxError::from)?;
        check.feed(&piece)?;
        Ok(piece)
    })
}

fn multipart_error(e: MultipartError, limit: usize) -> Error {
    if let Some(framing) = super::extract::find_source::<FramingError>(&e) {
        Error::InvalidField {
            field: "multipart body".into(),
            problem: format!("is refused: {framing}"),
        }
    } else if let Some(idle) = super::extract::body_idle(&e) {
        Error::BodyTimeout {
            idle_secs: idle.as_secs().max(1),
        }
    } else if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        // The body passed the largest file plus the framing's room: the file is over
        // its limit, and is answered with the file's text, as a file just over it is
        // (SPEC, *Size-limit texts*), not the body's.
        let file_limit = limit.saturating_sub(MULTIPART_OVERHEAD) as u64;
        Error::TooLarge {
            size: file_limit + 1,
            limit: file_limit,
            kind: SizeLimit::Single,
        }
    } else {
        Error::InvalidField {
            field: "multipart body".into(),
            problem: format!("is malformed: {}", e.body_text()),
        }
    }
}

/// A small text field, read under [`MAX_REF_LEN`] bytes.
async fn text_field(
    mut field: axum::extract::multipart::Field<'_>,
    name: &str,
    limit: usize,
) -> Result<String> {
    let mut value = Vec::new();
    while let Some(piece) = field.chunk().await.map_err(|e| multipart_error(e, limit))? {
        if value.len() + piece.len() > MAX_REF_LEN {
            return Err(Error::InvalidField {
                field: name.to_owned(),
                problem: format!("is over the {MAX_REF_LEN}-byte limit"),
            });
        }
        value.extend_from_slice(&piece);
    }
    String::from_utf8(value).map_err(|_| Error::InvalidField {
        field: name.to_owned(),
        problem: "is not UTF-8 text".into(),
    })
}

/// `GET /v1/attachments/{id}`
pub(super) async fn retrieve(Owned { meta, base }: Owned) -> Reply<Chat> {
    Ok(ok_json(&to_wire(&meta, &base)))
}

/// `PUT /v1/attachments/{id}`: a form (`filename=...`, as the documented curl example sends
/// it) or JSON (`docs/protocol.md`, *Retrieve rename and delete*).
pub(super) async fn rename(
    State(s): State<Sandbox>,
    Owned { meta, base }: Owned,
    Extension(client): Extension<ClientKey>,
    headers: HeaderMap,
    body: Body,
) -> Reply<Chat> {
    let (body, _budget) = s.read_body(&client, body, MAX_SMALL_BODY).await?;
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim_start().starts_with("application/json"));
    let update: Update = if json {
        crate::wire::from_slice(&body)?
    } else {
        let pairs = form_pairs(&body)?;
        if pairs.iter().filter(|(n, _)| n == "filename").count() > 1 {
            return Err(Error::InvalidField {
                field: "filename".into(),
                problem: "is given twice; give it once".into(),
            }
            .into());
        }
        Update {
            filename: get(&pairs, "filename").map(str::to_owned),
        }
    };
    let meta = match update.filename {
        Some(name) => {
            s.inner.config.chat.check_file_name(&name)?;
            s.inner
                .store
                .update(&meta.id, &MetaChange::FileName(name))
                .await?
        }
        None => meta,
    };
    Ok(ok_json(&to_wire(&meta, &base)))
}

/// `DELETE /v1/attachments/{id}`: the attachment and its bytes, for good. 204.
pub(super) async fn delete(State(s): State<Sandbox>, Owned { meta, .. }: Owned) -> Reply<Chat> {
    s.inner.store.delete_attachment(&meta.id).await?;
    tracing::info!(id = %meta.id, "chat attachment deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v1/attachments/{id}/content`: the bytes, with `Range` (one range; RFC 9110),
/// `If-Match` (412), `If-Range`, `If-None-Match`, and the SHA-256 as a strong `ETag`; streamed from the
/// store [`STREAM_CHUNK`] bytes at a time.
pub(super) async fn content(
    State(s): State<Sandbox>,
    Owned { meta, .. }: Owned,
    headers: HeaderMap,
) -> Reply<Chat> {
    let etag = format!("\"{}\"", meta.sha256.to_hex());
    let size = meta.file_size;
    let mut response = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, "private, no-cache")
        .header(
            header::CONTENT_DISPOSITION,
            content_disposition(&meta.file_name),
        )
        .header("x-content-type-options", "nosniff");
    // If-Match (RFC 9110 13.1.1), evaluated first: the client wants the version it names
    // and no other; strong comparison, so a weak tag never matches.
    let mut if_match = headers.get_all(header::IF_MATCH).iter().peekable();
    if if_match.peek().is_some()
        && !if_match.any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',').any(|t| {
                    let t = t.trim();
                    t == "*" || t == etag
                })
            })
        })
    {
        return Err(Error::PreconditionFailed { etag }.into());
    }
    let none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    if none_match.is_some_and(|v| {
        v.trim() == "*"
            || v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag)
    }) {
        return Ok(response
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .unwrap_or_default());
    }
    // If-Range names the version the client holds: any other, and the whole file is sent.
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.to_str().is_ok_and(|v| v.trim() == etag));
    let range_header = headers.get(header::RANGE).map(HeaderValue::as_bytes);
    let request = if if_range_ok {
        RangeRequest::parse(range_header, size)
    } else {
        RangeRequest::Whole
    };
    let range = match request {
        RangeRequest::Whole => {
            response = response.status(StatusCode::OK);
            0..size
        }
        RangeRequest::Partial(range) => {
            response = response
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, content_range(&range, size));
            range
        }
        RangeRequest::Unsatisfiable => {
            let err = Error::InvalidField {
                field: "Range".into(),
                problem: format!(
                    "selects no byte of this {size}-byte file; ask for bytes 0 to {}",
                    size.saturating_sub(1)
                ),
            };
            let mut r = (
                StatusCode::RANGE_NOT_SATISFIABLE,
                json_headers(),
                to_json(&chat_error(416, &err.to_string())),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&unsatisfied_range(size)) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(r);
        }
    };
    let len = range.end - range.start;
    // The first piece is read before the status is sent: a damaged attachment (the store
    // checks the whole file's layout on a read) is then a 500 in the chat shape, not a
    // 200 whose body breaks off, which a client would take for the network's fault and retry.
    let first_end = range
        .start
        .saturating_add(STREAM_CHUNK as u64)
        .min(range.end);
    let first = if range.is_empty() {
        Bytes::new()
    } else {
        s.inner
            .store
            .read_range(&meta.id, range.start..first_end)
            .await?
    };
    let rest = read_stream(Arc::clone(&s.inner.store), meta.id, first_end..range.end);
    let first = futures::stream::iter([Ok::<_, Error>(first)]);
    let body = Body::from_stream(futures::StreamExt::chain(first, rest));
    Ok(response
        .header(header::CONTENT_TYPE, meta.file_type)
        .header(header::CONTENT_LENGTH, len)
        .body(body)
        .unwrap_or_default())
}

/// Bytes `range` of an attachment, read [`STREAM_CHUNK`] bytes at a time as the client
/// takes them.
fn read_stream(
    store: Arc<dyn Store>,
    id: String,
    range: std::ops::Range<u64>,
) -> impl Stream<Item = Result<Bytes>> + Send {
    futures::stream::try_unfold(range.start, move |at| {
        let (store, id) = (Arc::clone(&store), id.clone());
        async move {
            if at >= range.end {
                return Ok(None);
            }
            let to = (at + STREAM_CHUNK as u64).min(range.end);
            let bytes = store.read_range(&id, at..to).await?;
            Ok(Some((bytes, to)))
        }
    })
}

/// The bytes RFC 8187's `attr-char` leaves as they are in an extended parameter
/// (letters, digits and `!#$&+-.^_`|~`); every other byte is percent-encoded.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `attachment; filename="..."; filename*=UTF-8''...` (RFC 6266): an ASCII fallback with
/// anything unsafe replaced by `_`, and the exact name percent-encoded.
pub(super) fn content_disposition(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded = utf8_percent_encode(name, ATTR_CHAR);
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any name the chat policy accepts makes a header value HTTP can carry, whose
        /// `filename*` decodes back to the exact name and whose fallback is plain ASCII.
        #[test]
        fn content_disposition_carries_any_accepted_name(name in "\\PC{1,40}") {
            prop_assume!(crate::Policy::chat().check_file_name(&name).is_ok());
            let value = content_disposition(&name);
            prop_assert!(HeaderValue::from_str(&value).is_ok(), "{}", value);
            let (fallback, encoded) = value
                .strip_prefix("attachment; filename=\"")
                .and_then(|v| v.split_once("\"; filename*=UTF-8''"))
                .expect("both parameters");
            prop_assert!(fallback.bytes().all(|b| b.is_ascii_graphic() || b == b' '));
            prop_assert!(!fallback.contains('"') && !fallback.contains('\\'));
            // Only attr-chars and escapes; RFC 3986 percent-decoding (not form decoding:
            // `+` is itself) gives the name back.
            prop_assert!(encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"%!#$&+-.^_`|~".contains(&b)));
            let decoded = percent_encoding::percent_decode_str(encoded).decode_utf8();
            prop_assert_eq!(decoded.unwrap(), name.as_str());
        }
    }
}
