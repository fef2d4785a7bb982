//! The attachment routes of the API (`docs/api.md`, "Attachments"): upload a file as a raw
//! body, start a download, read the plaintext (with range requests), the inline preview, and
//! where a client saved it.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::multipart::Field;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use kith_protocol::blob::CHUNK_SIZE;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::{ApiError, ApiResult, AppState};
use crate::node::FileMeta;

/// The attachment routes (behind the token, like every route but `/metrics`).
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        // The body is streamed to disk and limited by `media_max_file_size`, not the API's
        // JSON limit.
        .route("/v1/attachments", post(upload).layer(axum::extract::DefaultBodyLimit::disable()))
        .route("/v1/messages/{id}/download", post(download))
        .route("/v1/messages/{id}/file", get(file))
        .route("/v1/messages/{id}/preview", get(preview))
        .route("/v1/messages/{id}/saved", post(saved))
}

#[derive(Deserialize)]
struct UploadQuery {
    to: Option<String>,
    name: Option<String>,
    caption: Option<String>,
    mime: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    duration_ms: Option<u64>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the file is larger than the limit of {max} bytes (media_max_file_size)"),
    )
}

/// A MIME type as a client gave it: `type/subtype`, visible ASCII, at most 255 bytes.
fn check_mime(mime: &str) -> Result<(), ApiError> {
    let ok = mime.len() < 256
        && mime.split_once('/').is_some_and(|(t, s)| !t.is_empty() && !s.is_empty())
        && mime.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if ok {
        Ok(())
    } else {
        Err(bad(format!("{mime:?} is not a MIME type (type/subtype)")))
    }
}

/// Largest poster frame in a multipart upload.
const MAX_POSTER: usize = 16 << 20;
/// Largest text field in a multipart upload.
const MAX_FIELD: usize = 8 * 1024;

/// `POST /v1/attachments?to=TARGET[&name=][&caption=][&mime=]...`: the file as the raw body,
/// or a `multipart/form-data` body with a `file` part (its file name and type are used) and
/// optional `poster` (a video's poster frame), `to`, `name`, `caption` and `mime` parts.
async fn upload(
    State(s): State<AppState>,
    q: Result<Query<UploadQuery>, QueryRejection>,
    headers: HeaderMap,
    request: Request,
) -> ApiResult<impl IntoResponse> {
    let Query(mut q) = q.map_err(|e| bad(e.body_text()))?;
    let max = s.node.media_config().max_file_size;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max + MAX_POSTER as u64 + 64 * 1024) {
        return Err(too_large(max));
    }
    let content_type =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let multipart = content_type.as_deref().is_some_and(|t| t.starts_with("multipart/form-data"));
    let path = s.node.upload_path()?;
    let sent = async {
        let io = |e: std::io::Error| ApiError::from(crate::NodeError::io(&path, e));
        let mut file = tokio::fs::File::create(&path).await.map_err(io)?;
        let mut poster = None;
        let mut part_type = None;
        if multipart {
            let mut form = Multipart::from_request(request, &())
                .await
                .map_err(|e| bad(format!("not a multipart body: {}", e.body_text())))?;
            let mut had_file = false;
            while let Some(mut field) =
                form.next_field().await.map_err(|e| bad(format!("a broken multipart body: {e}")))?
            {
                match field.name().unwrap_or_default().to_owned().as_str() {
                    "file" => {
                        had_file = true;
                        q.name = q.name.take().or(field.file_name().map(str::to_owned));
                        part_type = field.content_type().map(str::to_owned);
                        let mut n = 0u64;
                        while let Some(chunk) = field.chunk().await.map_err(broke_off)? {
                            write_within(&mut file, &chunk, &mut n, max).await.map_err(io)??;
                        }
                    }
                    "poster" => poster = Some(read_field(&mut field, MAX_POSTER).await?),
                    name @ ("to" | "name" | "caption" | "mime") => {
                        let bytes = read_field(&mut field, MAX_FIELD).await?;
                        let text = String::from_utf8(bytes)
                            .map_err(|_| bad(format!("the {name} part is not UTF-8")))?;
                        let slot = match name {
                            "name" => &mut q.name,
                            "caption" => &mut q.caption,
                            "mime" => &mut q.mime,
                            _ => &mut q.to,
                        };
                        *slot = Some(text);
                    }
                    other => return Err(bad(format!("unknown multipart part {other:?}"))),
                }
            }
            if !had_file {
                return Err(bad("a multipart upload needs a `file` part"));
            }
        } else {
            part_type = content_type;
            let mut stream = request.into_body().into_data_stream();
            let mut n = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(broke_off)?;
                write_within(&mut file, &chunk, &mut n, max).await.map_err(io)??;
            }
        }
        file.sync_all().await.map_err(io)?;
        drop(file);
        let mime = q.mime.or(part_type).unwrap_or_else(|| "application/octet-stream".into());
        check_mime(&mime)?;
        let to = q.to.ok_or_else(|| bad("`to` is missing: @name or #id"))?;
        let meta = FileMeta {
            name: q.name,
            mime,
            caption: q.caption,
            size_px: q.width.zip(q.height),
            duration_ms: q.duration_ms,
            poster,
        };
        Ok(s.node.send_file(&to, &path, meta).await?)
    }
    .await;
    let _ = tokio::fs::remove_file(&path).await;
    Ok((StatusCode::ACCEPTED, Json(sent?)))
}

fn broke_off(e: impl std::fmt::Display) -> ApiError {
    bad(format!("the upload broke off: {e}"))
}

/// Appends `chunk` of an upload to `file`, `n` bytes in so far; `Ok(Err)` once it would pass
/// `max` (nothing more is written).
async fn write_within(
    file: &mut tokio::fs::File,
    chunk: &[u8],
    n: &mut u64,
    max: u64,
) -> std::io::Result<Result<(), ApiError>> {
    *n += chunk.len() as u64;
    if *n > max {
        return Ok(Err(too_large(max)));
    }
    file.write_all(chunk).await.map(Ok)
}

/// A multipart part read whole, refused beyond `max` bytes.
async fn read_field(field: &mut Field<'_>, max: usize) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(broke_off)? {
        if out.len() + chunk.len() > max {
            return Err(bad(format!("a multipart part over {max} bytes")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// `POST /v1/messages/{id}/download`: starts fetching the attachment.
async fn download(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok((StatusCode::ACCEPTED, Json(s.node.start_download(&id)?)))
}

#[derive(Deserialize)]
struct SavedBody {
    path: String,
}

/// `POST /v1/messages/{id}/saved` `{"path": ...}`: where a client saved the plaintext.
async fn saved(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<SavedBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    if b.path.is_empty() || b.path.len() > 4096 {
        return Err(bad("a path of 1 to 4,096 bytes"));
    }
    s.node.mark_saved(&id, &b.path)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/messages/{id}/preview`: the inline preview image.
async fn preview(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let Some(p) = s.node.preview(&id)? else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no preview came with it"));
    };
    Ok((
        [(header::CONTENT_TYPE, p.mime), (header::X_CONTENT_TYPE_OPTIONS, "nosniff".into())],
        p.bytes,
    )
        .into_response())
}

/// Types a browser may show inline from the API's origin: pictures, sound and video that
/// cannot run script. Anything else is served as `application/octet-stream`, as a download.
fn inline_type(mime: &str) -> Option<&str> {
    let m = mime.trim().to_ascii_lowercase();
    let safe = matches!(m.as_str(), "image/png" | "image/jpeg" | "image/gif" | "image/webp")
        || ((m.starts_with("video/") || m.starts_with("audio/"))
            && m.bytes().all(|b| b.is_ascii_alphanumeric() || b"/.+-".contains(&b)));
    safe.then_some(mime.trim())
}

/// A file name safe in a `Content-Disposition` header.
fn header_name(name: Option<&str>) -> String {
    let name: String = name
        .unwrap_or("attachment")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "._- ".contains(c) { c } else { '_' })
        .take(200)
        .collect();
    if name.trim().is_empty() {
        "attachment".into()
    } else {
        name
    }
}

/// The one byte range of a `Range` header (`bytes=a-b`, `bytes=a-`, `bytes=-n`), inclusive.
/// `Ok(None)`: no header (the whole file). `Err`: not satisfiable.
fn parse_range(value: Option<&HeaderValue>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(v) = value else { return Ok(None) };
    let v = v.to_str().map_err(|_| ())?.trim();
    let spec = v.strip_prefix("bytes=").ok_or(())?;
    if spec.contains(',') {
        return Err(());
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size.saturating_sub(1))
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() { size.saturating_sub(1) } else { b.parse().map_err(|_| ())? };
        (start, end.min(size.saturating_sub(1)))
    };
    if size == 0 || start > end || start >= size {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// `GET /v1/messages/{id}/file`: the plaintext, opened chunk by chunk as it is sent; one byte
/// range with `Range`.
async fn file(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (a, manifest, complete) = s.node.attachment(&id)?;
    let manifest = match manifest {
        Some(m) if complete => Arc::new(m),
        _ => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_downloaded",
                format!(
                "the attachment is not downloaded yet; POST /v1/messages/{id}/download starts it"
            ),
            ))
        }
    };
    let size = a.size;
    let range = parse_range(headers.get(header::RANGE), size).map_err(|()| {
        ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "bad_range",
            format!("one byte range within the {size} bytes of the file"),
        )
    })?;
    let (start, end) = range.unwrap_or((0, size.saturating_sub(1)));
    let len = if size == 0 { 0 } else { end - start + 1 };
    let chunk = CHUNK_SIZE as u64;
    let (first, last) = (start / chunk, if size == 0 { 0 } else { end / chunk });
    let node = s.node.clone();
    let a = Arc::new(a);
    let name = header_name(a.name.as_deref());
    let (mime, disposition) = match inline_type(&a.mime) {
        Some(m) => (m.to_owned(), format!("inline; filename=\"{name}\"")),
        None => ("application/octet-stream".to_owned(), format!("attachment; filename=\"{name}\"")),
    };
    let stream = futures::stream::unfold(first, move |index| {
        let (node, a, manifest) = (node.clone(), a.clone(), manifest.clone());
        async move {
            if index > last || len == 0 {
                return None;
            }
            let item = match node.read_attachment(&a, manifest, index as usize).await {
                Ok(plain) => {
                    let at = index * chunk;
                    let from = start.saturating_sub(at) as usize;
                    let to = ((end + 1 - at) as usize).min(plain.len());
                    Ok(Bytes::from(plain[from.min(to)..to].to_vec()))
                }
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            Some((item, index + 1))
        }
    });
    let mut response = Response::new(Body::from_stream(stream));
    let h = response.headers_mut();
    let value = |v: String| HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("?"));
    h.insert(header::CONTENT_TYPE, value(mime));
    h.insert(header::CONTENT_LENGTH, value(len.to_string()));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_DISPOSITION, value(disposition));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
    if range.is_some() {
        h.insert(header::CONTENT_RANGE, value(format!("bytes {start}-{end}/{size}")));
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_parsed_and_clamped() {
        let r = |s: &str, size| parse_range(Some(&HeaderValue::from_str(s).unwrap()), size);
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(r("bytes=0-4", 10), Ok(Some((0, 4))));
        assert_eq!(r("bytes=5-", 10), Ok(Some((5, 9))));
        assert_eq!(r("bytes=-3", 10), Ok(Some((7, 9))));
        assert_eq!(r("bytes=8-100", 10), Ok(Some((8, 9))));
        for bad in ["bytes=10-", "bytes=4-2", "bytes=0-1,3-4", "items=0-1", "bytes=-0", "bytes=x-"]
        {
            assert_eq!(r(bad, 10), Err(()), "{bad}");
        }
        assert_eq!(r("bytes=0-", 0), Err(()));
    }

    #[test]
    fn only_harmless_types_are_shown_inline() {
        assert_eq!(inline_type("image/png"), Some("image/png"));
        assert_eq!(inline_type("video/mp4"), Some("video/mp4"));
        for t in ["text/html", "image/svg+xml", "application/pdf", "video/mp4;<script>"] {
            assert_eq!(inline_type(t), None, "{t}");
        }
        assert_eq!(header_name(Some("a\"b\r\n.jpg")), "a_b__.jpg");
    }
}
