//! The HTTP client of the daemon's local API (see `docs/api.md`).

use std::fmt;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use kith_node::home::Home;
use kith_node::NodeError;
use serde::Serialize;
use serde_json::Value;
use ureq::http::Response;
use ureq::Body;

/// Largest response body read into memory (a full history of long messages can be large).
const MAX_BODY: u64 = 256 * 1024 * 1024;
/// How long one ordinary request may take, end to end. Registering a name computes a proof of
/// work and waits for the DHT, so this is generous; the event stream has no limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// A kept-alive connection idle longer than this is not reused (the daemon closes them at 10 s).
const POOL_IDLE: Duration = Duration::from_secs(5);
/// How long connecting to the daemon may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of one daemon's API.
#[derive(Debug)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
    auth: String,
    home: PathBuf,
}

/// An error answered by the daemon: `{"error": "...", "code": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    /// The machine code (`not_found`, `name_taken`, ...), empty if the daemon sent none.
    pub code: String,
    /// The message for a person.
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The event type (`message`, `status`, ...).
    pub kind: String,
    /// The data lines, joined by newlines.
    pub data: String,
}

impl Event {
    /// The data parsed as JSON.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.data)
            .with_context(|| format!("the daemon sent a {} event that is not JSON", self.kind))
    }
}

/// The events of `GET /v1/events`, in order, until the daemon closes the stream.
pub struct Events<R = BufReader<ureq::BodyReader<'static>>> {
    lines: std::io::Lines<R>,
}

impl<R> fmt::Debug for Events<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the daemon running on `home`, found through `api.addr` and `api.token`.
    pub fn from_home(home: &Home) -> Result<Client> {
        if !home.is_initialized() {
            return Err(NodeError::NotInitialized(home.dir().to_path_buf()).into());
        }
        let addr = match home.api_addr() {
            Ok(addr) => addr,
            Err(NodeError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(not_running(home.dir()));
            }
            Err(e) => return Err(e).context("cannot find the daemon's API address"),
        };
        let token = home.api_token().context("cannot read the API token")?;
        Ok(Client::new(addr, &token, home.dir()))
    }

    /// A client of the API at `addr` with the bearer `token`; `home` only appears in messages.
    pub fn new(addr: SocketAddr, token: &str, home: &Path) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(REQUEST_TIMEOUT))
            .max_redirects(0)
            // The daemon closes a connection idle for 10 s (its header timeout); reusing one
            // idle nearly that long races that close.
            .max_idle_age(POOL_IDLE)
            .build()
            .new_agent();
        Client {
            agent,
            base: format!("http://{addr}"),
            auth: format!("Bearer {token}"),
            home: home.to_path_buf(),
        }
    }

    /// `GET path` with optional query pairs, answering the JSON body.
    pub fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        let mut req = self.agent.get(self.url(path)).header("Authorization", &self.auth);
        for (k, v) in query {
            req = req.query(*k, v);
        }
        self.json(req.call())
    }

    /// `POST path` with a JSON body, answering the JSON body.
    pub fn post(&self, path: &str, body: &impl Serialize) -> Result<Value> {
        let req = self.agent.post(self.url(path)).header("Authorization", &self.auth);
        self.json(req.send_json(body))
    }

    /// `POST path` with query pairs and `body` streamed as the raw request body (no time
    /// limit: a large file takes as long as it takes), answering the JSON body.
    pub fn upload(
        &self,
        path: &str,
        query: &[(&str, String)],
        mime: &str,
        body: &mut dyn std::io::Read,
    ) -> Result<Value> {
        let mut req = self
            .agent
            .post(self.url(path))
            .header("Authorization", &self.auth)
            .header("Content-Type", mime)
            .config()
            .timeout_global(None)
            .build();
        for (k, v) in query {
            req = req.query(*k, v);
        }
        self.json(req.send(ureq::SendBody::from_reader(body)))
    }

    /// `GET path`, answering a reader of the raw body (no size or time limit) and its
    /// `Content-Length`, if given.
    pub fn download(&self, path: &str) -> Result<(Option<u64>, ureq::BodyReader<'static>)> {
        let req = self
            .agent
            .get(self.url(path))
            .header("Authorization", &self.auth)
            .config()
            .timeout_global(None)
            .build();
        let resp = self.check(req.call())?;
        let len = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ok((len, resp.into_body().into_reader()))
    }

    /// `PUT path` with a JSON body, answering the JSON body.
    pub fn put(&self, path: &str, body: &impl Serialize) -> Result<Value> {
        let req = self.agent.put(self.url(path)).header("Authorization", &self.auth);
        self.json(req.send_json(body))
    }

    /// `DELETE path`, answering the JSON body (`null` if there is none).
    pub fn delete(&self, path: &str) -> Result<Value> {
        let req = self.agent.delete(self.url(path)).header("Authorization", &self.auth);
        self.json(req.call())
    }

    /// Opens the event stream `GET /v1/events`. Once this returns, the daemon is subscribed:
    /// every later event is in the stream.
    pub fn events(&self) -> Result<Events> {
        let req = self
            .agent
            .get(self.url("/v1/events"))
            .header("Authorization", &self.auth)
            .header("Accept", "text/event-stream")
            .config()
            .timeout_global(None)
            .build();
        let resp = self.check(req.call())?;
        let reader = resp.into_body().into_reader();
        Ok(Events { lines: BufReader::new(reader).lines() })
    }

    /// The API's base URL, `http://ADDR`.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Turns transport failures into clear errors and error statuses into [`ApiError`].
    fn check(&self, result: Result<Response<Body>, ureq::Error>) -> Result<Response<Body>> {
        let mut resp = result.map_err(|e| self.transport_error(e))?;
        let status = resp.status().as_u16();
        if status < 400 {
            return Ok(resp);
        }
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        let field = |name: &str| {
            parsed.as_ref().and_then(|v| v.get(name)).and_then(Value::as_str).map(one_line)
        };
        let message = field("error").unwrap_or_else(|| {
            let reason = resp.status().canonical_reason().unwrap_or("error");
            match text.trim() {
                "" => format!("the daemon answered {status} {reason}"),
                body => format!("the daemon answered {status} {reason}: {}", one_line(body)),
            }
        });
        Err(ApiError { code: field("code").unwrap_or_default(), message }.into())
    }

    fn json(&self, result: Result<Response<Body>, ureq::Error>) -> Result<Value> {
        let mut resp = self.check(result)?;
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| self.transport_error(e))?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).context("the daemon's answer is not valid JSON")
    }

    fn transport_error(&self, e: ureq::Error) -> anyhow::Error {
        match &e {
            ureq::Error::Io(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                not_running(&self.home)
            }
            ureq::Error::ConnectionFailed => not_running(&self.home),
            ureq::Error::Timeout(_) => anyhow::anyhow!("the daemon did not answer in time ({e})"),
            _ => anyhow::anyhow!("talking to the daemon at {}: {e}", self.base),
        }
    }
}

impl<R: BufRead> Iterator for Events<R> {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Result<Event>> {
        let mut kind = String::new();
        let mut data: Vec<String> = Vec::new();
        loop {
            let line = match self.lines.next()? {
                Ok(line) => line,
                Err(e) => return Some(Err(e).context("reading the daemon's event stream")),
            };
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if line.is_empty() {
                if data.is_empty() {
                    kind.clear();
                    continue;
                }
                let kind = if kind.is_empty() { "message".to_owned() } else { kind };
                return Some(Ok(Event { kind, data: data.join("\n") }));
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => kind = value.to_owned(),
                "data" => data.push(value.to_owned()),
                _ => {}
            }
        }
    }
}

/// The error for "no daemon answers on this home".
pub fn not_running(home: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "the daemon is not running (start it with `kith --home {} daemon`)",
        shell_quote(&home.display().to_string())
    )
}

/// Quotes a word for a POSIX shell, if it needs it.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+:,@%=".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Collapses a text to one line.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &str) -> Vec<Event> {
        let events = Events { lines: std::io::Cursor::new(input.as_bytes()).lines() };
        events.map(|e| e.expect("event")).collect()
    }

    #[test]
    fn shell_quote_quotes_only_when_needed() {
        assert_eq!(shell_quote("/tmp/a-b"), "/tmp/a-b");
        assert_eq!(shell_quote("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn one_line_collapses_newlines() {
        assert_eq!(one_line("a\n  b\tc "), "a b c");
    }

    #[test]
    fn event_stream_format() {
        let events =
            parse(": keep-alive\n\nevent: status\ndata: {\"id\":\"1\"}\r\n\r\ndata: x\n\n");
        assert_eq!(
            events,
            vec![
                Event { kind: "status".into(), data: "{\"id\":\"1\"}".into() },
                Event { kind: "message".into(), data: "x".into() },
            ]
        );
    }
}
