//! The web app each daemon serves on its API address (`docs/web.md`): its files, embedded in
//! the binary, and the browser's login. A person logs in with a one-time link that `kith open`
//! asks the API for ([`Sessions::new_code`]); the page then holds a session cookie (`HttpOnly`,
//! `SameSite=Strict`), never the API token. Requests the cookie authenticates that change
//! something must come from the page itself ([`same_origin`]).
//!
//! The rules (codes, sessions, their limits) are pure: time and randomness are passed in.

use std::collections::HashMap;

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

/// How long a login link works, once.
pub const LOGIN_CODE_TTL_MS: u64 = 120_000;
/// Login links not used yet, at most (the oldest goes first).
pub const MAX_LOGIN_CODES: usize = 16;
/// How long a browser stays logged in.
pub const SESSION_TTL_MS: u64 = 30 * 24 * 3600 * 1000;
/// Browsers logged in at once, at most (the one that would expire first goes first).
pub const MAX_SESSIONS: usize = 32;
/// The session cookie's name, before the API's port: `kith_session_7390`. Browsers do not keep
/// cookies apart by port, so two daemons on one machine (two people, or two test nodes) need
/// cookies of their own names, or each login would log the other out.
pub const COOKIE: &str = "kith_session";

/// The session cookie's name for an API on `port`.
pub fn cookie_name(port: u16) -> String {
    format!("{COOKIE}_{port}")
}

/// Login codes and sessions, in memory: a daemon that restarts forgets them (log in again with
/// `kith open`).
#[derive(Debug, Default)]
pub struct Sessions {
    /// Code → when it expires (ms).
    codes: HashMap<String, u64>,
    /// Session id → when it expires (ms).
    sessions: HashMap<String, u64>,
}

/// 32 random bytes as 64 hex digits, from `fill`.
fn secret(fill: &mut dyn FnMut(&mut [u8])) -> String {
    let mut bytes = [0u8; 32];
    fill(&mut bytes);
    hex::encode(bytes)
}

/// Adds a new secret to `map` (secret → when it expires), valid until `expires`, after
/// dropping the expired ones and, at `max`, those that expire first.
fn insert_secret(
    map: &mut HashMap<String, u64>,
    max: usize,
    now: u64,
    expires: u64,
    fill: &mut dyn FnMut(&mut [u8]),
) -> String {
    map.retain(|_, e| *e > now);
    while map.len() >= max {
        let Some(first) = map.iter().min_by_key(|(_, e)| **e).map(|(s, _)| s.clone()) else {
            break;
        };
        map.remove(&first);
    }
    let secret = secret(fill);
    map.insert(secret.clone(), expires);
    secret
}

impl Sessions {
    /// A new one-time login code, valid for [`LOGIN_CODE_TTL_MS`].
    pub fn new_code(&mut self, now: u64, fill: &mut dyn FnMut(&mut [u8])) -> String {
        insert_secret(&mut self.codes, MAX_LOGIN_CODES, now, now + LOGIN_CODE_TTL_MS, fill)
    }

    /// Redeems `code` (once): a new session id, or `None` for a code unknown, used or expired.
    pub fn redeem(
        &mut self,
        code: &str,
        now: u64,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Option<String> {
        let expires = self.codes.remove(code)?;
        if expires <= now {
            return None;
        }
        Some(insert_secret(&mut self.sessions, MAX_SESSIONS, now, now + SESSION_TTL_MS, fill))
    }

    /// Whether `session` is a live session.
    pub fn valid(&self, session: &str, now: u64) -> bool {
        self.sessions.iter().any(|(s, expires)| {
            *expires > now && crate::api::constant_time_eq(s.as_bytes(), session.as_bytes())
        })
    }

    /// Ends `session` (logging out).
    pub fn end(&mut self, session: &str) {
        self.sessions.remove(session);
    }
}

/// The value of the session cookie `name` in `headers`, if any.
pub fn session_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(name)?.strip_prefix('='))
}

/// The `Set-Cookie` value of a new session in cookie `name`.
pub fn set_cookie(name: &str, session: &str) -> String {
    format!(
        "{name}={session}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_TTL_MS / 1000
    )
}

/// Whether a request the session cookie authenticates may go on: one that only reads
/// (`GET`, `HEAD`) always (the cookie is `SameSite=Strict`, so another site's page cannot send
/// it); any other only with an `Origin` header naming this server (the authority of `Host`),
/// and not marked cross-site by the browser (`Sec-Fetch-Site`).
pub fn same_origin(method: &Method, headers: &HeaderMap) -> bool {
    if method == Method::GET || method == Method::HEAD {
        return true;
    }
    let text = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    if matches!(text(header::HeaderName::from_static("sec-fetch-site")), Some("cross-site")) {
        return false;
    }
    let (Some(origin), Some(host)) = (text(header::ORIGIN), text(header::HOST)) else {
        return false;
    };
    let authority =
        origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")).unwrap_or("");
    !authority.is_empty() && authority.eq_ignore_ascii_case(host)
}

/// The Content-Security-Policy of every page and file of the app: its own scripts, styles,
/// pictures and media only, no inline script, no other host, not framed.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' blob: data:; media-src 'self' blob:; connect-src 'self'; \
    manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Most bytes of text a QR code is made of (`GET /v1/qr`).
pub const MAX_QR_TEXT: usize = 512;

/// A QR code of `text` as an SVG picture (the app shows safety numbers and link codes so), or
/// why not.
pub fn qr_svg(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > MAX_QR_TEXT {
        return Err(format!("the text must be 1 to {MAX_QR_TEXT} bytes"));
    }
    let code = qrcode::QrCode::new(text.as_bytes()).map_err(|e| e.to_string())?;
    Ok(code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(200, 200).build())
}

/// A QR code as an SVG response, which runs nothing if opened as a page.
pub fn qr_response(svg: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'none'; style-src 'unsafe-inline'"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        svg,
    )
        .into_response()
}

/// A file of the app: its path under `/app/`, type and bytes.
struct Asset {
    name: &'static str,
    mime: &'static str,
    bytes: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        mime: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../web/app.js"),
    },
    Asset {
        name: "calls.js",
        mime: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../web/calls.js"),
    },
    Asset {
        name: "listen.js",
        mime: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../web/listen.js"),
    },
    Asset {
        name: "interactive.js",
        mime: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../web/interactive.js"),
    },
    Asset {
        name: "plans.js",
        mime: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../web/plans.js"),
    },
    Asset {
        name: "app.css",
        mime: "text/css; charset=utf-8",
        bytes: include_bytes!("../web/app.css"),
    },
    Asset { name: "icon.svg", mime: "image/svg+xml", bytes: include_bytes!("../web/icon.svg") },
];

const INDEX: &[u8] = include_bytes!("../web/index.html");

/// A response with the app's security headers.
fn page(status: StatusCode, mime: &'static str, body: &'static [u8]) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, mime),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The app's page (`/`): the same for everyone; it shows a login hint until a session exists.
pub fn index() -> Response {
    page(StatusCode::OK, "text/html; charset=utf-8", INDEX)
}

/// A file of the app (`/app/{name}`), or 404.
pub fn asset(name: &str) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => page(StatusCode::OK, a.mime, a.bytes),
        None => page(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", b"no such file\n"),
    }
}

/// The page a used or expired login link shows.
pub fn login_refused() -> Response {
    page(
        StatusCode::FORBIDDEN,
        "text/plain; charset=utf-8",
        b"This login link was already used or has expired (links work once, for 2 minutes).\n\
          Run `kith open` again for a new one.\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> impl FnMut(&mut [u8]) {
        let mut n = 0u8;
        move |b: &mut [u8]| {
            n += 1;
            b.fill(n);
        }
    }

    #[test]
    fn a_code_works_once_and_only_before_it_expires() {
        let mut s = Sessions::default();
        let mut fill = counter();
        let code = s.new_code(1_000, &mut fill);
        let session = s.redeem(&code, 2_000, &mut fill).expect("a session");
        assert!(s.valid(&session, 2_000));
        assert!(s.redeem(&code, 2_000, &mut fill).is_none(), "used");
        let late = s.new_code(10_000, &mut fill);
        assert!(s.redeem(&late, 10_000 + LOGIN_CODE_TTL_MS, &mut fill).is_none(), "expired");
        assert!(s.redeem("not-a-code", 10_000, &mut fill).is_none());
        assert!(!s.valid("not-a-session", 2_000));
        assert!(!s.valid(&session, 2_000 + SESSION_TTL_MS), "the session expired");
        s.end(&session);
        assert!(!s.valid(&session, 3_000), "logged out");
    }

    #[test]
    fn codes_and_sessions_are_bounded() {
        let mut s = Sessions::default();
        let mut fill = counter();
        let first = s.new_code(0, &mut fill);
        for i in 1..=MAX_LOGIN_CODES as u64 {
            s.new_code(i, &mut fill);
        }
        assert_eq!(s.codes.len(), MAX_LOGIN_CODES);
        assert!(s.redeem(&first, 100, &mut fill).is_none(), "the oldest code went first");
        let mut sessions = Vec::new();
        for i in 0..MAX_SESSIONS as u64 + 1 {
            let code = s.new_code(1_000 + i, &mut fill);
            sessions.push(s.redeem(&code, 1_000 + i, &mut fill).expect("session"));
        }
        assert_eq!(s.sessions.len(), MAX_SESSIONS);
        assert!(!s.valid(&sessions[0], 2_000), "the first to expire went first");
        assert!(s.valid(&sessions[MAX_SESSIONS], 2_000));
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_the_page_itself_may_change_things_with_the_cookie() {
        let post = Method::POST;
        let host = ("host", "127.0.0.1:7390");
        assert!(same_origin(&Method::GET, &headers(&[])), "reading needs no origin");
        assert!(same_origin(&post, &headers(&[host, ("origin", "http://127.0.0.1:7390")])));
        assert!(same_origin(&post, &headers(&[host, ("origin", "https://127.0.0.1:7390")])));
        assert!(!same_origin(&post, &headers(&[host])), "no origin");
        assert!(!same_origin(&post, &headers(&[host, ("origin", "http://evil.example")])));
        assert!(!same_origin(&post, &headers(&[host, ("origin", "null")])));
        assert!(!same_origin(&post, &headers(&[host, ("origin", "http://127.0.0.1:7391")])));
        assert!(!same_origin(
            &post,
            &headers(&[
                host,
                ("origin", "http://127.0.0.1:7390"),
                ("sec-fetch-site", "cross-site")
            ])
        ));
        assert!(!same_origin(&Method::DELETE, &headers(&[("origin", "http://127.0.0.1:7390")])));
    }

    #[test]
    fn a_qr_code_is_an_svg_and_its_text_is_bounded() {
        let svg = qr_svg("19090 74835 12345").expect("svg");
        assert!(svg.contains("<svg") && !svg.contains("<script"), "{svg}");
        assert!(qr_svg("").is_err());
        assert!(qr_svg(&"9".repeat(MAX_QR_TEXT + 1)).is_err());
        assert!(qr_svg(&"9".repeat(MAX_QR_TEXT)).is_ok());
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let name = cookie_name(7390);
        let h = headers(&[("cookie", "a=1; kith_session_7391=other; kith_session_7390=abc; b=2")]);
        assert_eq!(session_cookie(&h, &name), Some("abc"));
        let wrong = headers(&[("cookie", "kith_session_73901=1; kith_session=2")]);
        assert_eq!(session_cookie(&wrong, &name), None);
        assert!(set_cookie(&name, "abc")
            .starts_with("kith_session_7390=abc; HttpOnly; SameSite=Strict"));
    }
}
