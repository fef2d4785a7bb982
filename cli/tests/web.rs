//! `kith open` end to end: a fresh home becomes a running daemon serving the web app, whose
//! one-time login link gives the browser its session cookie.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::*;

/// Stops the daemon `kith open` started, also when the test fails.
struct Started(u32);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").arg(self.0.to_string()).status();
    }
}

/// One HTTP/1.1 request to `url`'s host (`http://HOST:PORT/PATH`), with `headers`; the whole
/// answer (the connection is closed after it).
fn http_get(url: &str, headers: &str) -> String {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_at(rest.find('/').expect("a path"));
    let mut s = TcpStream::connect(host).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{headers}\r\n")
        .expect("request");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("answer");
    answer
}

#[test]
fn kith_open_starts_everything_and_its_link_logs_in_once() {
    let node = Node::empty("opener");
    std::fs::create_dir_all(node.home()).expect("home");
    std::fs::write(
        node.home().join("config.toml"),
        "listen = [\"/ip4/127.0.0.1/tcp/0\"]\napi = \"127.0.0.1:0\"\npow_bits = 8\n",
    )
    .expect("config");
    let first = node.kith(&["open", "--no-browser", "--json"]).ok().json();
    let pid = first["daemon_pid"].as_u64().expect("a daemon was started") as u32;
    let _daemon = Started(pid);
    assert_eq!(first["initialized"], true, "{first}");
    assert_eq!(first["daemon_started"], true, "{first}");
    assert_eq!(first["browser_opened"], false, "{first}");
    let url = first["url"].as_str().expect("a url").to_owned();
    assert!(url.starts_with("http://127.0.0.1:") && url.contains("/login?code="), "{url}");
    assert!(node.status().is_some(), "the daemon answers the CLI");

    // The link: a session cookie and on to the app; the app's page; the link works once.
    let login = http_get(&url, "");
    assert!(login.starts_with("HTTP/1.1 303"), "{login}");
    let cookie = login
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .and_then(|l| l.split_once(':'))
        .and_then(|(_, v)| v.trim().split(';').next())
        .expect("a cookie")
        .to_owned();
    let base = &url[..url.find("/login").expect("path")];
    let status = http_get(&format!("{base}/v1/status"), &format!("Cookie: {cookie}\r\n"));
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let page = http_get(&format!("{base}/"), "");
    assert!(page.contains("<script type=\"module\" src=\"/app/app.js\">"), "{page}");
    assert!(http_get(&url, "").starts_with("HTTP/1.1 403"), "the link works once");

    // Again: the identity and the daemon are there already; a new link.
    let second = node.kith(&["open", "--no-browser", "--json"]).ok().json();
    assert_eq!(second["initialized"], false, "{second}");
    assert_eq!(second["daemon_started"], false, "{second}");
    assert!(second["url"].as_str().is_some_and(|u| u != url), "{second}");
    let human = node.kith(&["open", "--no-browser"]).ok();
    assert!(human.stdout.contains("works once"), "{}", human.stdout);
}
