//! Files: `kith send --file` and `kith save`, with a progress bar on a terminal and JSON
//! progress lines with `--json`.

use std::fs;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::client::Client;
use crate::commands::{emit, emit_json};

/// How often `kith save` asks how far a download got.
const POLL: Duration = Duration::from_millis(200);
/// Bytes between two JSON progress lines.
const JSON_STEP: u64 = 4 << 20;

/// Reports progress: a bar on a terminal (standard error), JSON lines on standard output with
/// `--json`, nothing otherwise.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    json: Option<&'static str>,
    total: Option<u64>,
    last_json: u64,
}

impl Progress {
    /// Progress of `what` (`upload`, `download`, `save`) over `total` bytes when known.
    pub(crate) fn new(what: &'static str, total: Option<u64>, json: bool) -> Progress {
        let bar = (!json && io::stderr().is_terminal()).then(|| {
            let bar = match total {
                Some(n) => ProgressBar::new(n),
                None => ProgressBar::new_spinner(),
            };
            let template = match total {
                Some(_) => "{msg:8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                None => "{msg:8} {spinner} {bytes} {bytes_per_sec}",
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(what);
            bar
        });
        Progress { bar, json: json.then_some(what), total, last_json: 0 }
    }

    /// `done` bytes of the total are through.
    pub(crate) fn at(&mut self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        }
        if let Some(what) = self.json {
            if done == 0 || done >= self.last_json + JSON_STEP || Some(done) == self.total {
                self.last_json = done;
                let line = json!({ "progress": what, "bytes": done, "total": self.total });
                let _ = emit(line);
            }
        }
    }

    /// Removes the bar.
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// A reader that reports how much was read.
struct Counting<'a, R> {
    inner: R,
    read: u64,
    progress: &'a mut Progress,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        self.progress.at(self.read);
        Ok(n)
    }
}

/// The MIME type of a file by its extension (what a recipient's viewer goes by).
pub(crate) fn mime_of(path: &str) -> &'static str {
    let ext = Path::new(path)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "mp4" | "m4v" => "video/mp4",
        "mov" => "video/quicktime",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "ogg" | "oga" | "opus" => "audio/ogg",
        "wav" => "audio/wav",
        "pdf" => "application/pdf",
        "txt" | "md" => "text/plain",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

/// Uploads the file at `path` (`-`: standard input) to `to` through the daemon, which seals
/// and sends it; answers the message the daemon created.
pub(crate) fn upload(
    client: &Client,
    to: &str,
    path: &str,
    caption: &str,
    json: bool,
) -> Result<Value> {
    let (mut reader, total, name): (Box<dyn Read>, Option<u64>, Option<String>) = if path == "-" {
        (Box::new(io::stdin().lock()), None, None)
    } else {
        let file = fs::File::open(path).with_context(|| format!("cannot open {path}"))?;
        let meta = file.metadata().with_context(|| format!("cannot read {path}"))?;
        if !meta.is_file() {
            bail!("{path} is not a file");
        }
        let name = Path::new(path).file_name().map(|n| n.to_string_lossy().into_owned());
        (Box::new(io::BufReader::with_capacity(1 << 20, file)), Some(meta.len()), name)
    };
    let mut query = vec![("to", to.to_owned())];
    if let Some(name) = name {
        query.push(("name", name));
    }
    if !caption.trim().is_empty() {
        query.push(("caption", caption.to_owned()));
    }
    let mut progress = Progress::new("upload", total, json);
    progress.at(0);
    let answer = {
        let mut body = Counting { inner: &mut reader, read: 0, progress: &mut progress };
        client.upload("/v1/attachments", &query, mime_of(path), &mut body)
    };
    progress.finish();
    answer
}

/// Human size: `787.4 KiB`.
pub(crate) fn size(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A file name safe to create in the current directory, from the sender's name.
fn local_name(name: Option<&str>, id: &str) -> String {
    let base = name
        .and_then(|n| Path::new(n).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && !n.trim().is_empty());
    base.unwrap_or_else(|| format!("attachment-{}", id.get(..8).unwrap_or(id)))
}

/// `kith save ID [--out PATH]`: waits for the download, writes the plaintext, tells the
/// daemon where.
pub(crate) fn save(client: &Client, id: &str, out: Option<&Path>, json: bool) -> Result<()> {
    let id = &full_id(client, id)?;
    let message = client.get(&format!("/v1/messages/{id}"), &[])?;
    let Some(a) = message.get("attachment").filter(|a| a.is_object()) else {
        bail!("message {id} carries no file");
    };
    let total = a.get("size").and_then(Value::as_u64).unwrap_or(0);
    let name = a.get("name").and_then(Value::as_str);
    let dest: PathBuf = match out {
        Some(p) if p.is_dir() => p.join(local_name(name, id)),
        Some(p) => p.to_owned(),
        None => PathBuf::from(local_name(name, id)),
    };
    if dest.exists() && out.is_none_or(Path::is_dir) {
        bail!("{} exists; choose another name with --out PATH", dest.display());
    }
    wait_for_download(client, id, total, json)?;
    let (len, mut body) = client.download(&format!("/v1/messages/{id}/file"))?;
    let dir = dest.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile_in(dir)?;
    let mut progress = Progress::new("save", len.or(Some(total)), json);
    let mut buf = vec![0u8; 1 << 20];
    let mut written = 0u64;
    loop {
        let n = body.read(&mut buf).context("the download broke off")?;
        if n == 0 {
            break;
        }
        tmp.1.write_all(&buf[..n]).with_context(|| format!("cannot write {}", tmp.0.display()))?;
        written += n as u64;
        progress.at(written);
    }
    progress.finish();
    if written != total {
        let _ = fs::remove_file(&tmp.0);
        bail!("the daemon sent {written} bytes of a {total}-byte file");
    }
    tmp.1.sync_all().context("cannot write the file")?;
    fs::rename(&tmp.0, &dest).with_context(|| format!("cannot write {}", dest.display()))?;
    let shown = fs::canonicalize(&dest).unwrap_or(dest);
    let path = shown.to_string_lossy().into_owned();
    client.post(&format!("/v1/messages/{id}/saved"), &json!({ "path": path }))?;
    if json {
        emit_json(&json!({ "id": id, "path": path, "bytes": written }))
    } else {
        emit(path)
    }
}

/// The id of the one message with a file whose id starts with `prefix` (8 to 32 hex digits).
fn full_id(client: &Client, prefix: &str) -> Result<String> {
    message_id(client, prefix, |m| m.get("attachment").is_some_and(Value::is_object)).map_err(|e| {
        anyhow::anyhow!(e.to_string().replace("no message has", "no message with a file has"))
    })
}

/// The id of the one message that `keep` accepts whose id starts with `prefix` (8 to 32 hex
/// digits; 32 are taken as they are).
pub(crate) fn message_id(
    client: &Client,
    prefix: &str,
    keep: impl Fn(&Value) -> bool,
) -> Result<String> {
    let prefix = prefix.trim().to_ascii_lowercase();
    if !(8..=32).contains(&prefix.len()) || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{prefix:?} is not a message id (8 to 32 hex digits, as `kith messages` shows)");
    }
    if prefix.len() == 32 {
        return Ok(prefix);
    }
    let all = client.get("/v1/messages", &[])?;
    let ids: Vec<&str> = all
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|m| keep(m))
        .filter_map(|m| m.get("id").and_then(Value::as_str))
        .filter(|id| id.starts_with(&prefix))
        .collect();
    match ids[..] {
        [one] => Ok(one.to_owned()),
        [] => bail!("no message has an id starting with {prefix}"),
        _ => bail!("{} messages have ids starting with {prefix}; give more digits", ids.len()),
    }
}

/// A new file in `dir` to write into before it is renamed into place.
fn tempfile_in(dir: &Path) -> Result<(PathBuf, fs::File)> {
    let path = dir.join(format!(".kith-save-{:08x}.part", std::process::id()));
    let file =
        fs::File::create(&path).with_context(|| format!("cannot write in {}", dir.display()))?;
    Ok((path, file))
}

/// Starts the download if needed and follows it to the end.
fn wait_for_download(client: &Client, id: &str, total: u64, json: bool) -> Result<()> {
    let state = |a: &Value| a.get("state").and_then(Value::as_str).unwrap_or("").to_owned();
    // Asked even when it says complete: the daemon checks its blob store and fetches what is
    // missing.
    let started = client.post(&format!("/v1/messages/{id}/download"), &json!({}))?;
    if state(&started["attachment"]) == "complete" {
        return Ok(());
    }
    let mut progress = Progress::new("download", Some(total), json);
    let mut asked = Instant::now();
    loop {
        let m = client.get(&format!("/v1/messages/{id}"), &[])?;
        let a = m.get("attachment").cloned().unwrap_or(Value::Null);
        match state(&a).as_str() {
            "complete" => {
                progress.at(total);
                progress.finish();
                return Ok(());
            }
            "failed" => {
                progress.finish();
                let why = a.get("error").and_then(Value::as_str).unwrap_or("no reason given");
                bail!("the download failed: {why}; `kith save {id}` tries again");
            }
            "available" | "evicted" if asked.elapsed() > Duration::from_secs(5) => {
                // The fetch ended without a state change we saw: ask again (every 5 s).
                client.post(&format!("/v1/messages/{id}/download"), &json!({}))?;
                asked = Instant::now();
            }
            _ => {}
        }
        progress.at(a.get("bytes_held").and_then(Value::as_u64).unwrap_or(0));
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_types_and_names() {
        assert_eq!(size(1000), "1000 B");
        assert_eq!(size(787_432), "769.0 KiB");
        assert_eq!(size(20 << 20), "20.0 MiB");
        assert_eq!(mime_of("Cat.JPG"), "image/jpeg");
        assert_eq!(mime_of("-"), "application/octet-stream");
        assert_eq!(local_name(Some("../../etc/passwd"), "0123456789"), "passwd");
        assert_eq!(local_name(Some(".bashrc"), "0123456789"), "attachment-01234567");
        assert_eq!(local_name(None, "0123456789"), "attachment-01234567");
    }
}
