//! Resumable uploads: tus 1.0 (under [`ServerConfig::tus_path`](super::ServerConfig),
//! default `/files`) and the IETF draft `draft-ietf-httpbis-resumable-upload-10`
//! (interop version 8; under `ietf_path`, default `/uploads`). Thin shells: headers are
//! parsed by [`wire::resumable`](crate::wire::resumable), the upload is run by the chat
//! receiver's [`UploadReceiver`](crate::stream::UploadReceiver) resumable methods, and
//! a finished upload is a chat attachment of the bearer token's owner, its id the
//! upload's (`/v1/attachments/{id}` serves it).

use std::time::SystemTime;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::Sandbox;
use super::chat::{base_url, owner_scope, to_wire};
use super::listen::Interim;
use super::quota::ClientKey;
use super::reply::{Failure, Ietf, Reply, Tus, to_json};
use crate::error::{Error, Result, ResumableProblem, shorten};
use crate::stream::{Append, ResumableStatus};
use crate::upload::Creation;
use crate::wire::resumable::{
    Checksum, IETF_INTEROP_VERSION, Metadata, OFFSET_OCTET_STREAM, PARTIAL_UPLOAD,
    TUS_CHECKSUM_ALGORITHMS, TUS_EXTENSIONS, TUS_VERSION, interop_version, sf_boolean, sf_count,
    tus_integer, tus_version, upload_limit,
};

/// An upload id from the path, in its canonical text (the quota and the store key it so);
/// one that is no upload id is kept as sent (it is not found).
pub(super) struct CanonicalId(String);

impl<'de> serde::Deserialize<'de> for CanonicalId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let sent = String::deserialize(d)?;
        Ok(CanonicalId(
            sent.parse::<crate::upload::RandomId>()
                .map_or(sent, |id| id.to_string()),
        ))
    }
}

/// The file name of an upload whose client gave none.
const DEFAULT_NAME: &str = "upload";

/// How many pieces of a body are read ahead of the append: 16 (a piece is at most the
/// connection's read buffer, 64 KiB: 1 MiB).
const READ_AHEAD: usize = 16;

/// How long writing the `104` may take before it is given up: 5 s.
const INTERIM_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The longest `Content-Disposition` read for a file name: 1 KiB.
const MAX_DISPOSITION: usize = 1024;

/// Header `name` as text, if present.
fn text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| Error::InvalidField {
            field: name.to_owned(),
            problem: "is not visible ASCII".into(),
        }),
    }
}

fn required<'a>(headers: &'a HeaderMap, name: &str, why: &str) -> Result<&'a str> {
    text(headers, name)?.ok_or_else(|| Error::InvalidField {
        field: name.to_owned(),
        problem: format!("is missing: {why}"),
    })
}

/// Refuses a body whose `Content-Type` is not `expected` (parameters aside).
fn check_content_type(headers: &HeaderMap, expected: &'static str) -> Result<()> {
    let got = text(headers, "Content-Type")?.unwrap_or("");
    let essence = got.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(expected) {
        return Ok(());
    }
    Err(Error::Resumable(ResumableProblem::ContentType {
        expected,
        got: shorten(got, 64).into_owned(),
    }))
}

/// The length an IETF request gives: `Upload-Length`, or where the body ends when
/// `Upload-Complete: ?1` comes with a `Content-Length` (both, when given, must agree).
fn ietf_length(headers: &HeaderMap, offset: u64, complete: bool) -> Result<Option<u64>> {
    let declared = text(headers, "Upload-Length")?
        .map(|v| sf_count("Upload-Length", v))
        .transpose()?;
    let ends = match (complete, text(headers, "Content-Length")?) {
        (true, Some(len)) => Some(offset.saturating_add(tus_integer("Content-Length", len)?)),
        _ => None,
    };
    match (declared, ends) {
        (Some(declared), Some(now)) if declared != now => {
            Err(Error::Resumable(ResumableProblem::InconsistentLength {
                declared,
                now,
            }))
        }
        (declared, ends) => Ok(declared.or(ends)),
    }
}

/// Whether the request has a body to read (a `Content-Length` over 0, or a chunked one).
fn has_body(body: &Body) -> bool {
    axum::body::HttpBody::size_hint(body).exact() != Some(0)
}

/// A request body as a stream of pieces, each counted against the client's upload quota
/// while it streams; its read errors become this crate's (a pause past the idle timeout:
/// 408; a connection cut: 400).
fn pieces(s: &Sandbox, id: &str, body: Body) -> impl Stream<Item = Result<Bytes>> + Send + use<> {
    let quota = s.clone();
    let id = id.to_owned();
    body.into_data_stream().map(move |piece| {
        let piece = piece.map_err(|e| match super::extract::body_idle(&e) {
            Some(idle) => Error::BodyTimeout {
                idle_secs: idle.as_secs().max(1),
            },
            None => Error::InvalidField {
                field: "request body".into(),
                problem: format!("stopped before its end ({e}); the bytes that came are kept"),
            },
        })?;
        quota.stage_upload(&id, piece.len() as u64)?;
        Ok(piece)
    })
}

/// Runs an append in a task of its own: the connection's task keeps reading the body
/// from the socket while this one checks, hashes and stores what it has read, on the
/// other core (measured: `benches/tus.rs`). The append also runs to its end (its body's
/// end or error) when the client goes away, so its lease is given back at once.
async fn append_apart(
    s: &Sandbox,
    id: &str,
    owner: &str,
    append: Append,
    body: impl Stream<Item = Result<Bytes>> + Send + 'static,
) -> Result<ResumableStatus> {
    let (s, id, owner) = (s.clone(), id.to_owned(), owner.to_owned());
    // The body is read ahead, up to READ_AHEAD pieces, by a task of its own.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes>>(READ_AHEAD);
    tokio::spawn(async move {
        let mut body = std::pin::pin!(body);
        while let Some(piece) = body.next().await {
            if tx.send(piece).await.is_err() {
                break;
            }
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|piece| (piece, rx))
    });
    let task = tokio::spawn(async move {
        let appended = s
            .inner
            .chat
            .append_resumable(&id, &owner, append, body)
            .await;
        // The upload's place in the quota lasts as long as the upload: given back once
        // it is finished, refused, expired or gone, not when a request of it fails.
        let ended = match &appended {
            Ok(status) => status.finished,
            Err(_) => match s.inner.chat.resumable_status(&id, &owner).await {
                Ok(status) => status.finished,
                Err(e) => !(e.status() >= 500 || matches!(e.status(), 408 | 409 | 423 | 429)),
            },
        };
        if ended {
            s.close_upload(&id);
        }
        appended
    });
    match task.await {
        Ok(result) => result,
        Err(e) => Err(Error::io_other(
            "appending to a resumable upload",
            std::io::ErrorKind::Other,
            e.to_string(),
        )),
    }
}

/// Holds upload `id`'s place in `client`'s quota before an append: opened here, with the
/// bytes it holds already, unless it is open here (it was created by another process
/// sharing the store, or its place idled out).
async fn hold(s: &Sandbox, client: &ClientKey, id: &str, owner: &str) -> Result<()> {
    if s.holds_upload(id) {
        return Ok(());
    }
    let status = status_apart(s, id, owner).await?;
    s.hold_upload(client, id, status.offset)
}

/// Where an upload stands, in a task of its own: the commit it may run (an upload whose
/// last byte's request went away) runs to its end whatever the client does.
async fn status_apart(s: &Sandbox, id: &str, owner: &str) -> Result<ResumableStatus> {
    let (s, id, owner) = (s.clone(), id.to_owned(), owner.to_owned());
    let task = tokio::spawn(async move { s.inner.chat.resumable_status(&id, &owner).await });
    task.await.unwrap_or_else(|e| {
        Err(Error::io_other(
            "reading a resumable upload",
            std::io::ErrorKind::Other,
            e.to_string(),
        ))
    })
}

fn expires(status: &ResumableStatus) -> Option<HeaderValue> {
    let at = status.expires?;
    HeaderValue::from_str(&httpdate::fmt_http_date(at)).ok()
}

fn insert(response: &mut Response, name: &'static str, value: HeaderValue) {
    response
        .headers_mut()
        .insert(HeaderName::from_static(name), value);
}

fn tus_headers(response: &mut Response) {
    insert(
        response,
        "tus-resumable",
        HeaderValue::from_static(TUS_VERSION),
    );
}

/// What the tus headers of an upload's state say: `Upload-Offset`, the length (or its
/// deferral), `Upload-Expires`.
fn tus_state(response: &mut Response, status: &ResumableStatus) {
    tus_headers(response);
    insert(response, "upload-offset", HeaderValue::from(status.offset));
    if let Some(expires) = expires(status) {
        insert(response, "upload-expires", expires);
    }
}

/// `OPTIONS` on the tus endpoint: what this server speaks.
pub(super) async fn tus_options(State(s): State<Sandbox>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    tus_headers(&mut response);
    let max = max_size(&s);
    insert(
        &mut response,
        "tus-version",
        HeaderValue::from_static(TUS_VERSION),
    );
    insert(
        &mut response,
        "tus-extension",
        HeaderValue::from_static(TUS_EXTENSIONS),
    );
    insert(&mut response, "tus-max-size", HeaderValue::from(max));
    insert(
        &mut response,
        "tus-checksum-algorithm",
        HeaderValue::from_static(TUS_CHECKSUM_ALGORITHMS),
    );
    response
}

fn max_size(s: &Sandbox) -> u64 {
    s.inner.config.chat.limits.max_file_size()
}

/// The address of upload `id` under `prefix`.
fn location(base: &str, prefix: &str, id: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(&format!("{base}{prefix}/{id}")).map_err(|_| Error::InvalidField {
        field: "Host".into(),
        problem: "cannot be used in an address".into(),
    })
}

/// `POST` on the tus endpoint: creation, with its body when there is one
/// (creation-with-upload) and a deferred length (creation-defer-length).
pub(super) async fn tus_create(
    State(s): State<Sandbox>,
    Extension(client): Extension<ClientKey>,
    req: Request,
) -> Reply<Tus> {
    let headers = req.headers().clone();
    tus_version(text(&headers, "Tus-Resumable")?)?;
    let base = base_url(&s, req.uri(), &headers)?;
    let length = text(&headers, "Upload-Length")?
        .map(|v| tus_integer("Upload-Length", v))
        .transpose()?;
    let deferred = match text(&headers, "Upload-Defer-Length")? {
        None => false,
        Some("1") => true,
        Some(other) => {
            return Err(Error::InvalidField {
                field: "Upload-Defer-Length".into(),
                problem: format!("must be 1, not {:?}", shorten(other, 16)),
            }
            .into());
        }
    };
    if length.is_some() == deferred {
        return Err(Error::InvalidField {
            field: "Upload-Length".into(),
            problem: "send either Upload-Length or Upload-Defer-Length: 1 (exactly one)".into(),
        }
        .into());
    }
    let raw = text(&headers, "Upload-Metadata")?.unwrap_or("");
    let metadata = Metadata::parse(raw)?;
    let file_name = metadata
        .text("filename")?
        .or(metadata.text("name")?)
        .unwrap_or_else(|| DEFAULT_NAME.to_owned());
    let file_type = metadata
        .text("filetype")?
        .or(metadata.text("type")?)
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let body = req.into_body();
    let upload = has_body(&body);
    let checksum = if upload {
        check_content_type(&headers, OFFSET_OCTET_STREAM)?;
        text(&headers, "Upload-Checksum")?
            .map(Checksum::parse)
            .transpose()?
    } else {
        None
    };
    let owner = owner_scope(&headers);
    let opened = s.open_upload(&client, None, 0)?;
    let receiver = &s.inner.chat;
    let creation = Creation {
        file_name: &file_name,
        file_type: &file_type,
        length,
        metadata: raw,
    };
    let mut status = receiver.create_resumable(creation, &owner).await?;
    // The upload holds its place in the client's quota until it ends.
    opened.name(&status.id);
    let at = location(&base, &s.inner.config.tus_path, &status.id)?;
    if upload {
        let append = Append::at(0).with_checksum(checksum);
        let body = pieces(&s, &status.id, body);
        match append_apart(&s, &status.id, &owner, append, body).await {
            Ok(after) => status = after,
            Err(e) => {
                // The upload exists all the same: its address goes with the error.
                let mut response = Failure::<Tus>::from(e).into_response();
                insert(&mut response, "location", at);
                return Ok(response);
            }
        }
    }
    let mut response = StatusCode::CREATED.into_response();
    tus_state(&mut response, &status);
    if !upload {
        response.headers_mut().remove("upload-offset");
    }
    insert(&mut response, "location", at);
    Ok(response)
}

/// `HEAD` on a tus upload: its offset, length and metadata.
pub(super) async fn tus_head(
    State(s): State<Sandbox>,
    Path(CanonicalId(id)): Path<CanonicalId>,
    headers: HeaderMap,
) -> Reply<Tus> {
    tus_version(text(&headers, "Tus-Resumable")?)?;
    let status = status_apart(&s, &id, &owner_scope(&headers)).await?;
    let mut response = StatusCode::OK.into_response();
    tus_state(&mut response, &status);
    match status.length {
        Some(length) => insert(&mut response, "upload-length", HeaderValue::from(length)),
        None => insert(
            &mut response,
            "upload-defer-length",
            HeaderValue::from_static("1"),
        ),
    }
    if !status.metadata.is_empty()
        && let Ok(v) = HeaderValue::from_str(&status.metadata)
    {
        insert(&mut response, "upload-metadata", v);
    }
    insert(
        &mut response,
        "cache-control",
        HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

/// `PATCH` on a tus upload: an append at `Upload-Offset`, with `Upload-Length` for a
/// deferred length and `Upload-Checksum` for the checksum extension.
pub(super) async fn tus_patch(
    State(s): State<Sandbox>,
    Extension(client): Extension<ClientKey>,
    Path(CanonicalId(id)): Path<CanonicalId>,
    req: Request,
) -> Reply<Tus> {
    let headers = req.headers().clone();
    tus_version(text(&headers, "Tus-Resumable")?)?;
    check_content_type(&headers, OFFSET_OCTET_STREAM)?;
    let offset = tus_integer(
        "Upload-Offset",
        required(&headers, "Upload-Offset", "an append names where it starts")?,
    )?;
    let length = text(&headers, "Upload-Length")?
        .map(|v| tus_integer("Upload-Length", v))
        .transpose()?;
    let checksum = text(&headers, "Upload-Checksum")?
        .map(Checksum::parse)
        .transpose()?;
    let append = Append::at(offset)
        .with_length(length)
        .with_checksum(checksum);
    hold(&s, &client, &id, &owner_scope(&headers)).await?;
    let body = pieces(&s, &id, req.into_body());
    let status = append_apart(&s, &id, &owner_scope(&headers), append, body).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    tus_state(&mut response, &status);
    Ok(response)
}

/// `POST` on a tus upload with `X-HTTP-Method-Override` (the protocol's way through
/// proxies that pass only `GET` and `POST`): handled as the method it names, `PATCH`,
/// `DELETE` or `HEAD`.
pub(super) async fn tus_override(
    state: State<Sandbox>,
    client: Extension<ClientKey>,
    id: Path<CanonicalId>,
    req: Request,
) -> Reply<Tus> {
    let method = text(req.headers(), "X-HTTP-Method-Override")?.unwrap_or("");
    match method.to_ascii_uppercase().as_str() {
        "PATCH" => tus_patch(state, client, id, req).await,
        "DELETE" => tus_delete(state, id, req.headers().clone()).await,
        "HEAD" => tus_head(state, id, req.headers().clone()).await,
        _ => Err(Error::MethodNotAllowed {
            method: format!("POST (X-HTTP-Method-Override: {})", shorten(method, 16)),
            path: req.uri().path().to_owned(),
        }
        .into()),
    }
}

/// `DELETE` on a tus upload (termination).
pub(super) async fn tus_delete(
    State(s): State<Sandbox>,
    Path(CanonicalId(id)): Path<CanonicalId>,
    headers: HeaderMap,
) -> Reply<Tus> {
    tus_version(text(&headers, "Tus-Resumable")?)?;
    s.inner
        .chat
        .cancel_resumable(&id, &owner_scope(&headers))
        .await?;
    s.close_upload(&id);
    let mut response = StatusCode::NO_CONTENT.into_response();
    tus_headers(&mut response);
    Ok(response)
}

/// The IETF `Upload-Limit` of this server, with the seconds `status` has left.
fn ietf_limit(s: &Sandbox, status: Option<&ResumableStatus>) -> HeaderValue {
    let age = status.and_then(|st| st.expires).map(|at| {
        at.duration_since(SystemTime::now())
            .unwrap_or_default()
            .as_secs()
    });
    HeaderValue::from_str(&upload_limit(max_size(s), age))
        .unwrap_or_else(|_| HeaderValue::from_static("max-size=0"))
}

fn sf_bool(value: bool) -> HeaderValue {
    HeaderValue::from_static(if value { "?1" } else { "?0" })
}

/// The file name of a `Content-Disposition` (`filename="..."` or `filename=token`), if
/// it gives one.
fn disposition_name(headers: &HeaderMap) -> Result<Option<String>> {
    let Some(value) = text(headers, "Content-Disposition")? else {
        return Ok(None);
    };
    if value.len() > MAX_DISPOSITION {
        return Err(Error::InvalidField {
            field: "Content-Disposition".into(),
            problem: format!("is over {MAX_DISPOSITION} bytes"),
        });
    }
    for param in value.split(';').skip(1) {
        let Some((key, raw)) = param.split_once('=') else {
            continue;
        };
        if !key.trim().eq_ignore_ascii_case("filename") {
            continue;
        }
        let raw = raw.trim();
        let name = match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
            Some(quoted) => quoted.replace("\\\"", "\"").replace("\\\\", "\\"),
            None => raw.to_owned(),
        };
        return Ok(Some(name));
    }
    Ok(None)
}

/// The IETF answer once the upload is an attachment: 200 (201 for a creation) with the
/// chat attachment as JSON and `Upload-Complete: ?1`.
async fn ietf_finished(
    s: &Sandbox,
    base: &str,
    status: &ResumableStatus,
    created: bool,
) -> Result<Response> {
    let meta = s.inner.store.metadata(&status.id).await?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = (
        code,
        super::reply::json_headers(),
        to_json(&to_wire(&meta, base)),
    )
        .into_response();
    insert(&mut response, "upload-complete", sf_bool(true));
    insert(
        &mut response,
        "upload-offset",
        HeaderValue::from(status.offset),
    );
    Ok(response)
}

/// `POST` on the IETF endpoint: an upload creation (`Upload-Complete` required), its
/// body the file or its first part. With `Upload-Draft-Interop-Version: 8` over
/// HTTP/1.1 (served by [`serve`](super::serve)), a `104 Upload Resumption Supported`
/// carries the upload's address before the body is read.
pub(super) async fn ietf_create(
    State(s): State<Sandbox>,
    Extension(client): Extension<ClientKey>,
    req: Request,
) -> Reply<Ietf> {
    let headers = req.headers().clone();
    let base = base_url(&s, req.uri(), &headers)?;
    let complete = sf_boolean(
        "Upload-Complete",
        required(
            &headers,
            "Upload-Complete",
            "a resumable upload says whether the body is the whole file (?1) or not (?0)",
        )?,
    )?;
    let length = ietf_length(&headers, 0, complete)?;
    let file_type = text(&headers, "Content-Type")?
        .unwrap_or("application/octet-stream")
        .to_owned();
    let file_name = disposition_name(&headers)?.unwrap_or_else(|| DEFAULT_NAME.to_owned());
    let owner = owner_scope(&headers);
    let opened = s.open_upload(&client, None, 0)?;
    let interim = req.extensions().get::<Interim>().cloned();
    let wants_interim = req.version() == Version::HTTP_11
        && text(&headers, "Upload-Draft-Interop-Version")?.and_then(interop_version)
            == Some(IETF_INTEROP_VERSION);
    let receiver = &s.inner.chat;
    let creation = Creation {
        file_name: &file_name,
        file_type: &file_type,
        length,
        metadata: "",
    };
    let status = receiver.create_resumable(creation, &owner).await?;
    opened.name(&status.id);
    let at = location(&base, &s.inner.config.ietf_path, &status.id)?;
    if let (true, Some(interim)) = (wants_interim, interim) {
        let head = format!(
            "HTTP/1.1 104 Upload Resumption Supported\r\nlocation: {}\r\nupload-limit: {}\r\nupload-draft-interop-version: {IETF_INTEROP_VERSION}\r\n\r\n",
            at.to_str().unwrap_or_default(),
            ietf_limit(&s, Some(&status)).to_str().unwrap_or_default(),
        );
        // A client that reads nothing (its socket buffer full) gets no 104 rather than
        // holding the request (if part of the 104 was written, its connection is spoiled:
        // its own doing).
        match tokio::time::timeout(INTERIM_WAIT, interim.send(head.as_bytes())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "104 not sent"),
            Err(_) => tracing::debug!("104 not sent: the client reads nothing"),
        }
    }
    let append = Append::at(0).with_length(length).completing(complete);
    let body = pieces(&s, &status.id, req.into_body());
    let status = match append_apart(&s, &status.id, &owner, append, body).await {
        Ok(status) => status,
        Err(e) => {
            let mut response = Failure::<Ietf>::from(e).into_response();
            insert(&mut response, "location", at);
            return Ok(response);
        }
    };
    if status.finished {
        let mut response = ietf_finished(&s, &base, &status, true).await?;
        insert(&mut response, "location", at);
        return Ok(response);
    }
    let mut response = StatusCode::CREATED.into_response();
    insert(&mut response, "location", at);
    insert(&mut response, "upload-complete", sf_bool(false));
    insert(
        &mut response,
        "upload-offset",
        HeaderValue::from(status.offset),
    );
    insert(&mut response, "upload-limit", ietf_limit(&s, Some(&status)));
    Ok(response)
}

/// `HEAD` on an IETF upload: offset retrieval.
pub(super) async fn ietf_head(
    State(s): State<Sandbox>,
    Path(CanonicalId(id)): Path<CanonicalId>,
    headers: HeaderMap,
) -> Reply<Ietf> {
    let status = status_apart(&s, &id, &owner_scope(&headers)).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    insert(
        &mut response,
        "upload-offset",
        HeaderValue::from(status.offset),
    );
    insert(&mut response, "upload-complete", sf_bool(status.finished));
    if let Some(length) = status.length {
        insert(&mut response, "upload-length", HeaderValue::from(length));
    }
    insert(&mut response, "upload-limit", ietf_limit(&s, Some(&status)));
    insert(
        &mut response,
        "cache-control",
        HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

/// `PATCH` on an IETF upload (`application/partial-upload`): an append at
/// `Upload-Offset`; `Upload-Complete: ?1` ends the file with this body.
pub(super) async fn ietf_patch(
    State(s): State<Sandbox>,
    Extension(client): Extension<ClientKey>,
    Path(CanonicalId(id)): Path<CanonicalId>,
    req: Request,
) -> Reply<Ietf> {
    let headers = req.headers().clone();
    let base = base_url(&s, req.uri(), &headers)?;
    check_content_type(&headers, PARTIAL_UPLOAD)?;
    let offset = sf_count(
        "Upload-Offset",
        required(&headers, "Upload-Offset", "an append names where it starts")?,
    )?;
    let complete = sf_boolean(
        "Upload-Complete",
        required(
            &headers,
            "Upload-Complete",
            "an append says whether it ends the file (?1) or not (?0)",
        )?,
    )?;
    let length = ietf_length(&headers, offset, complete)?;
    let append = Append::at(offset).with_length(length).completing(complete);
    hold(&s, &client, &id, &owner_scope(&headers)).await?;
    let body = pieces(&s, &id, req.into_body());
    let status = append_apart(&s, &id, &owner_scope(&headers), append, body).await?;
    if status.finished {
        return Ok(ietf_finished(&s, &base, &status, false).await?);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    insert(&mut response, "upload-complete", sf_bool(false));
    insert(
        &mut response,
        "upload-offset",
        HeaderValue::from(status.offset),
    );
    Ok(response)
}

/// `DELETE` on an IETF upload: cancellation.
pub(super) async fn ietf_delete(
    State(s): State<Sandbox>,
    Path(CanonicalId(id)): Path<CanonicalId>,
    headers: HeaderMap,
) -> Reply<Ietf> {
    s.inner
        .chat
        .cancel_resumable(&id, &owner_scope(&headers))
        .await?;
    s.close_upload(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `OPTIONS` on the IETF endpoint: the append type and the limits.
pub(super) async fn ietf_options(State(s): State<Sandbox>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    insert(
        &mut response,
        "accept-patch",
        HeaderValue::from_static(PARTIAL_UPLOAD),
    );
    insert(&mut response, "upload-limit", ietf_limit(&s, None));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disposition_names_quoted_or_bare() {
        let mut headers = HeaderMap::new();
        assert_eq!(disposition_name(&headers).unwrap(), None);
        headers.insert(
            "content-disposition",
            HeaderValue::from_static("attachment; filename=\"a \\\"b\\\".jpg\""),
        );
        assert_eq!(
            disposition_name(&headers).unwrap().as_deref(),
            Some("a \"b\".jpg")
        );
        headers.insert(
            "content-disposition",
            HeaderValue::from_static("inline; filename=c.png"),
        );
        assert_eq!(
            disposition_name(&headers).unwrap().as_deref(),
            Some("c.png")
        );
    }
}
