//! The settings of `kith daemon`: command-line flags, the config file and the defaults, merged
//! in that order of precedence.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use kith_node::daemon::DaemonConfig;
use kith_node::mailbox::{self, MailboxConfig};
use kith_node::Multiaddr;
use kith_protocol::name::DEFAULT_POW_BITS;
use kith_protocol::UserId;
use serde::Deserialize;

/// The config file read from the home directory when `--config` is not given.
pub const CONFIG_FILE: &str = "config.toml";
/// Where the daemon listens for other peers unless told otherwise.
pub const DEFAULT_LISTEN: &str = "/ip4/0.0.0.0/tcp/4011";
/// Seconds in a day, the unit of the retention settings.
const DAY_SECS: u64 = 24 * 3600;

// The flags of `kith daemon`. Every setting is optional here, so that a flag that is not given
// leaves the config file's value in place; the defaults are applied after merging. The defaults
// named in the help are checked against the constants by a test.
#[derive(Debug, Default, clap::Args)]
pub struct DaemonArgs {
    /// Read settings from this TOML file; its keys are the flags' names with '_' for '-'
    /// (listen, bootstrap, api, pow_bits, mailbox, mailbox_allow, mailbox_max_messages, ...).
    /// Flags given on the command line win over the file; a repeated flag replaces the file's
    /// whole list [default: <home>/config.toml, if it exists]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// A multiaddr to listen on for other peers; repeat to listen on several
    /// [default: /ip4/0.0.0.0/tcp/4011]
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<Multiaddr>,

    /// A peer to join the network through, a multiaddr ending in /p2p/<peer id> (see the
    /// listen addresses in `kith status` on that peer); repeat for several
    #[arg(long, value_name = "MULTIADDR")]
    pub bootstrap: Vec<Multiaddr>,

    /// Where the local API listens: a loopback IP address and port; `127.0.0.1:0` lets the
    /// OS choose a free port (clients find it in the home directory's api.addr)
    /// [default: 127.0.0.1:7390]
    #[arg(long, value_name = "HOST:PORT")]
    pub api: Option<SocketAddr>,

    /// The proof-of-work difficulty, in bits, required of name records (every node of a
    /// network must agree on it) [default: 22]
    #[arg(
        long,
        value_name = "N",
        env = "KITH_POW_BITS",
        value_parser = clap::value_parser!(u32).range(0..=256),
    )]
    pub pow_bits: Option<u32>,

    /// Serve as a mailbox node: hold sealed envelopes for the enrolled devices of other users
    /// while they are offline, and be a DHT server, bootstrap peer and relay for others;
    /// `--mailbox=false` turns off a `mailbox = true` of the config file
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
    )]
    pub mailbox: Option<bool>,

    /// With --mailbox: only this user (32 hex digits, the user id `kith status` shows) may
    /// enroll devices; repeat for several. Without it, anyone may enroll
    #[arg(long, value_name = "USER_ID")]
    pub mailbox_allow: Vec<String>,

    /// With --mailbox: the most envelopes held for one recipient device [default: 10000]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub mailbox_max_messages: Option<u64>,

    /// With --mailbox: the most bytes of envelopes held for one recipient device
    /// [default: 268435456, i.e. 256 MiB]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub mailbox_max_bytes: Option<u64>,

    /// With --mailbox: how many days an envelope is kept before it expires [default: 30]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub mailbox_retention_days: Option<u64>,

    /// With --mailbox: the most envelopes one sending peer may deposit per minute
    /// [default: 120]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub mailbox_deposits_per_minute: Option<u32>,

    /// With --mailbox: the most bytes of attachment blobs held for one user (sealed)
    /// [default: 2147483648, i.e. 2 GiB]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub mailbox_blob_bytes: Option<u64>,

    /// The largest file this node sends as an attachment, in bytes
    /// [default: 2147483648, i.e. 2 GiB]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub media_max_file_size: Option<u64>,

    /// The most bytes the blob store holds (sealed attachments sent and received)
    /// [default: 21474836480, i.e. 20 GiB]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub media_quota: Option<u64>,

    /// Images up to this many bytes download as soon as their message arrives; 0 for none
    /// [default: 16777216, i.e. 16 MiB]
    #[arg(long, value_name = "N")]
    pub media_auto_download_images: Option<u64>,

    /// Any attachment up to this many bytes downloads as soon as its message arrives
    /// (larger ones wait for `kith save`) [default: 0]
    #[arg(long, value_name = "N")]
    pub media_auto_download_any: Option<u64>,

    /// How long a call rings on the other devices before it is missed, in seconds (5 to 300).
    /// STUN and TURN servers for calls are set in the config file only, as [[ice_servers]]
    /// tables with `urls` and, for TURN, `username` and `credential` (docs/self-hosting.md)
    /// [default: 45]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(5..=300))]
    pub call_ring_seconds: Option<u64>,

    /// Direct messages accepted from one user per minute; beyond it the sender is told to
    /// retry later, so nothing is lost [default: 300]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub inbound_per_minute: Option<u32>,

    /// Where a business's domain is checked, with {domain} in place of the domain; for tests
    /// against a local server [default: https://{domain}/.well-known/kith.json]
    #[arg(long, value_name = "URL")]
    pub domain_check_url: Option<String>,

    /// Connections kept open at most, to all peers (a business or bot serving many people at
    /// once needs more) [default: 512]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(16..))]
    pub max_connections: Option<u32>,

    /// Do not limit connections per remote address and subnet: only for many nodes on one
    /// machine, where every connection comes from 127.0.0.1 (benchmarks, simulations)
    #[arg(long)]
    pub no_address_limits: bool,
}

/// The config file: the same settings as the flags, every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<Vec<String>>,
    bootstrap: Option<Vec<String>>,
    api: Option<String>,
    pow_bits: Option<u32>,
    mailbox: Option<bool>,
    mailbox_allow: Option<Vec<String>>,
    mailbox_max_messages: Option<u64>,
    mailbox_max_bytes: Option<u64>,
    mailbox_retention_days: Option<u64>,
    mailbox_deposits_per_minute: Option<u32>,
    mailbox_blob_bytes: Option<u64>,
    media_max_file_size: Option<u64>,
    media_quota: Option<u64>,
    media_auto_download_images: Option<u64>,
    media_auto_download_any: Option<u64>,
    call_ring_seconds: Option<u64>,
    inbound_per_minute: Option<u32>,
    max_connections: Option<u32>,
    ice_servers: Option<Vec<IceServerFile>>,
}

/// One `[[ice_servers]]` table of the config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IceServerFile {
    urls: Vec<String>,
    username: Option<String>,
    credential: Option<String>,
}

/// Checks the STUN and TURN servers of the config file.
fn ice_servers(list: Vec<IceServerFile>) -> Result<Vec<kith_node::node::IceServer>> {
    let mut out = Vec::with_capacity(list.len());
    for s in list {
        if s.urls.is_empty() {
            return Err(anyhow!("a server with no urls"));
        }
        for url in &s.urls {
            let scheme = url.split(':').next().unwrap_or_default();
            if !["stun", "stuns", "turn", "turns"].contains(&scheme)
                || url.len() <= scheme.len() + 1
            {
                return Err(anyhow!(
                    "{url:?} is not a STUN or TURN url (stun:host:port, turn:host:port, turns:...)"
                ));
            }
            if scheme.starts_with("turn") && (s.username.is_none() || s.credential.is_none()) {
                return Err(anyhow!("{url:?}: a TURN server needs a username and a credential"));
            }
        }
        out.push(kith_node::node::IceServer {
            urls: s.urls,
            username: s.username,
            credential: s.credential,
        });
    }
    Ok(out)
}

/// The merged settings.
#[derive(Debug)]
pub struct Resolved {
    /// What the daemon runs with.
    pub config: DaemonConfig,
    /// The config file that was read, if any.
    pub file: Option<PathBuf>,
    /// Mailbox settings were given while the mailbox is off: they have no effect.
    pub unused_mailbox_settings: bool,
}

impl DaemonArgs {
    /// Merges these flags with the config file (`--config`, else `<home>/config.toml` if it
    /// exists) and the defaults. Errors are one line and name the file and key or the flag.
    pub fn resolve(self, home: &Path) -> Result<Resolved> {
        let path = match &self.config {
            Some(path) => Some(path.clone()),
            None => Some(home.join(CONFIG_FILE)).filter(|p| p.is_file()),
        };
        let file = match &path {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let shown = path.as_deref().map(Path::display).map(|p| p.to_string()).unwrap_or_default();
        // Reports a bad value of the config file as `FILE: KEY: ...`.
        let in_file = |key: &str, e: anyhow::Error| anyhow!("{shown}: {key}: {e:#}");

        let listen = if !self.listen.is_empty() {
            self.listen
        } else if let Some(list) = &file.listen {
            if list.is_empty() {
                return Err(in_file(
                    "listen",
                    anyhow!("the list is empty; remove the key to listen on {DEFAULT_LISTEN}"),
                ));
            }
            parse_multiaddrs(list).map_err(|e| in_file("listen", e))?
        } else {
            vec![DEFAULT_LISTEN.parse().context("the default listen address")?]
        };
        let bootstrap = if !self.bootstrap.is_empty() {
            self.bootstrap
        } else {
            parse_multiaddrs(file.bootstrap.as_deref().unwrap_or_default())
                .map_err(|e| in_file("bootstrap", e))?
        };
        let api = match (self.api, &file.api) {
            (Some(api), _) => api,
            (None, Some(api)) => api.trim().parse().map_err(|_| {
                in_file(
                    "api",
                    anyhow!("{api:?} is not an IP address and port, like 127.0.0.1:7390"),
                )
            })?,
            (None, None) => kith_node::DEFAULT_API.parse().context("the default API address")?,
        };
        let pow_bits = match (self.pow_bits, file.pow_bits) {
            (Some(bits), _) => bits,
            (None, Some(bits)) if bits > 256 => {
                return Err(in_file("pow_bits", anyhow!("{bits} is more than 256")));
            }
            (None, Some(bits)) => bits,
            (None, None) => DEFAULT_POW_BITS,
        };

        let allow = if !self.mailbox_allow.is_empty() {
            parse_user_ids(&self.mailbox_allow, "--mailbox-allow")?
        } else {
            parse_user_ids(file.mailbox_allow.as_deref().unwrap_or_default(), "user id")
                .map_err(|e| in_file("mailbox_allow", e))?
        };
        let zeros = [
            ("mailbox_max_messages", file.mailbox_max_messages == Some(0)),
            ("mailbox_max_bytes", file.mailbox_max_bytes == Some(0)),
            ("mailbox_retention_days", file.mailbox_retention_days == Some(0)),
            ("mailbox_deposits_per_minute", file.mailbox_deposits_per_minute == Some(0)),
            ("mailbox_blob_bytes", file.mailbox_blob_bytes == Some(0)),
            ("media_max_file_size", file.media_max_file_size == Some(0)),
            ("media_quota", file.media_quota == Some(0)),
        ];
        if let Some((key, _)) = zeros.iter().find(|(_, zero)| *zero) {
            return Err(in_file(key, anyhow!("must be at least 1")));
        }
        let max_messages = self.mailbox_max_messages.or(file.mailbox_max_messages);
        let max_bytes = self.mailbox_max_bytes.or(file.mailbox_max_bytes);
        let retention_days = self.mailbox_retention_days.or(file.mailbox_retention_days);
        let deposits = self.mailbox_deposits_per_minute.or(file.mailbox_deposits_per_minute);
        let enabled = self.mailbox.or(file.mailbox).unwrap_or(false);
        let unused_mailbox_settings = !enabled
            && (!allow.is_empty()
                || max_messages.is_some()
                || max_bytes.is_some()
                || retention_days.is_some()
                || deposits.is_some());
        let mailbox = MailboxConfig {
            enabled,
            allow,
            max_messages: max_messages.unwrap_or(mailbox::DEFAULT_MAX_MESSAGES),
            max_bytes: max_bytes.unwrap_or(mailbox::DEFAULT_MAX_BYTES),
            retention: retention_days.map_or(mailbox::DEFAULT_RETENTION, |d| {
                Duration::from_secs(d.saturating_mul(DAY_SECS))
            }),
            deposits_per_minute: deposits.unwrap_or(mailbox::DEFAULT_DEPOSITS_PER_MINUTE),
        };
        let d = kith_node::node::MediaConfig::default();
        let media = kith_node::node::MediaConfig {
            max_file_size: self
                .media_max_file_size
                .or(file.media_max_file_size)
                .unwrap_or(d.max_file_size),
            quota: self.media_quota.or(file.media_quota).unwrap_or(d.quota),
            auto_download_images: self
                .media_auto_download_images
                .or(file.media_auto_download_images)
                .unwrap_or(d.auto_download_images),
            auto_download_any: self
                .media_auto_download_any
                .or(file.media_auto_download_any)
                .unwrap_or(d.auto_download_any),
            mailbox_blob_bytes: self
                .mailbox_blob_bytes
                .or(file.mailbox_blob_bytes)
                .unwrap_or(d.mailbox_blob_bytes),
        };
        let ring_seconds = match (self.call_ring_seconds, file.call_ring_seconds) {
            (Some(s), _) => s,
            (None, Some(s)) if !(5..=300).contains(&s) => {
                return Err(in_file("call_ring_seconds", anyhow!("{s} is not between 5 and 300")));
            }
            (None, Some(s)) => s,
            (None, None) => kith_node::node::CallConfig::default().ring_ms / 1000,
        };
        let calls = kith_node::node::CallConfig {
            ring_ms: ring_seconds * 1000,
            ice_servers: ice_servers(file.ice_servers.unwrap_or_default())
                .map_err(|e| in_file("ice_servers", e))?,
        };
        let accounts = kith_node::node::AccountsConfig {
            inbound_per_minute: match (self.inbound_per_minute, file.inbound_per_minute) {
                (Some(n), _) => Some(n),
                (None, Some(0)) => {
                    return Err(in_file("inbound_per_minute", anyhow!("must be at least 1")))
                }
                (None, Some(n)) => Some(n),
                (None, None) => kith_node::node::AccountsConfig::default().inbound_per_minute,
            },
            well_known_url: self.domain_check_url.clone(),
        };
        let max_connections = match (self.max_connections, file.max_connections) {
            (Some(n), _) => n,
            (None, Some(n)) if n < 16 => {
                return Err(in_file("max_connections", anyhow!("{n} is below 16")));
            }
            (None, Some(n)) => n,
            (None, None) => kith_node::network::MAX_CONNECTIONS,
        };
        let limits = kith_node::network::Limits {
            max_connections,
            per_address: !self.no_address_limits,
            dht_server: true,
        };
        Ok(Resolved {
            config: DaemonConfig {
                home: home.to_path_buf(),
                listen,
                bootstrap,
                api,
                pow_bits,
                mailbox,
                media,
                calls,
                accounts,
                limits,
            },
            file: path,
            unused_mailbox_settings,
        })
    }
}

impl FileConfig {
    /// Reads and parses a config file; errors are one line naming the file (and the line).
    fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            let message = crate::client::one_line(e.message());
            // serde speaks of fields; a config file has keys.
            let message = match message.strip_prefix("unknown field ") {
                Some(rest) => format!("unknown key {rest}"),
                None => message,
            };
            match e.span() {
                Some(span) => {
                    let line = text.get(..span.start).map_or(0, |t| t.matches('\n').count()) + 1;
                    anyhow!("{}, line {line}: {message}", path.display())
                }
                None => anyhow!("{}: {message}", path.display()),
            }
        })
    }
}

fn parse_multiaddrs(list: &[String]) -> Result<Vec<Multiaddr>> {
    list.iter()
        .map(|s| s.trim().parse().map_err(|e| anyhow!("{s:?} is not a valid multiaddr ({e})")))
        .collect()
}

/// Parses user ids; `what` names their source in the error (`--mailbox-allow`).
fn parse_user_ids(list: &[String], what: &str) -> Result<Vec<UserId>> {
    let mut ids: Vec<UserId> = Vec::with_capacity(list.len());
    for s in list {
        let id = UserId::parse(s.trim()).map_err(|_| {
            anyhow!(
                "invalid {what} {s:?}: a user id is 32 hex digits, as `kith status` shows it on \
                 the user's device"
            )
        })?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    const ALICE: &str = "00112233445566778899aabbccddeeff";
    const BOB: &str = "ffeeddccbbaa99887766554433221100";

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: DaemonArgs,
    }

    fn args(flags: &[&str]) -> DaemonArgs {
        let argv = std::iter::once("kith-daemon").chain(flags.iter().copied());
        Cli::try_parse_from(argv).expect("flags parse").args
    }

    /// A home directory, with `config.toml` holding `toml` if given.
    fn home(toml: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::TempDir::new().expect("tempdir");
        if let Some(toml) = toml {
            std::fs::write(dir.path().join(CONFIG_FILE), toml).expect("write config");
        }
        dir
    }

    fn resolve(flags: &[&str], toml: Option<&str>) -> Result<Resolved> {
        let dir = home(toml);
        args(flags).resolve(dir.path())
    }

    fn error(flags: &[&str], toml: Option<&str>) -> String {
        let e = resolve(flags, toml).expect_err("should fail");
        let text = format!("{e:#}");
        assert!(!text.contains('\n'), "error is not one line: {text:?}");
        text
    }

    const FULL: &str = r#"
listen = ["/ip4/0.0.0.0/tcp/4999", "/ip6/::/tcp/4999"]
bootstrap = ["/ip4/203.0.113.7/tcp/4011/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"]
api = "127.0.0.1:7400"
pow_bits = 20
mailbox = true
mailbox_allow = ["00112233445566778899aabbccddeeff", "FFEEDDCCBBAA99887766554433221100"]
mailbox_max_messages = 500
mailbox_max_bytes = 1048576
mailbox_retention_days = 7
mailbox_deposits_per_minute = 30
mailbox_blob_bytes = 1000000
media_max_file_size = 5000000
media_quota = 9000000
media_auto_download_images = 0
media_auto_download_any = 1024
call_ring_seconds = 20
inbound_per_minute = 60
max_connections = 2048

[[ice_servers]]
urls = ["stun:stun.example.org:3478"]

[[ice_servers]]
urls = ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"]
username = "kith"
credential = "secret"
"#;

    #[test]
    fn nothing_given_means_the_defaults() {
        let r = resolve(&[], None).expect("resolves");
        let c = &r.config;
        assert_eq!(r.file, None);
        assert_eq!(c.listen, vec![DEFAULT_LISTEN.parse::<Multiaddr>().expect("addr")]);
        assert!(c.bootstrap.is_empty());
        assert_eq!(c.api.to_string(), kith_node::DEFAULT_API);
        assert_eq!(c.mailbox, MailboxConfig::default());
        assert!(!r.unused_mailbox_settings);
    }

    #[test]
    fn file_only() {
        let r = resolve(&[], Some(FULL)).expect("resolves");
        let c = &r.config;
        assert!(r.file.is_some_and(|f| f.ends_with(CONFIG_FILE)));
        let listen: Vec<String> = c.listen.iter().map(ToString::to_string).collect();
        assert_eq!(listen, ["/ip4/0.0.0.0/tcp/4999", "/ip6/::/tcp/4999"]);
        assert_eq!(c.bootstrap.len(), 1);
        assert_eq!(c.api.to_string(), "127.0.0.1:7400");
        assert_eq!(c.pow_bits, 20);
        let ids = [ALICE, BOB].map(|s| UserId::parse(s).expect("id")).to_vec();
        assert_eq!(
            c.mailbox,
            MailboxConfig {
                enabled: true,
                allow: ids,
                max_messages: 500,
                max_bytes: 1_048_576,
                retention: Duration::from_secs(7 * DAY_SECS),
                deposits_per_minute: 30,
            }
        );
        let m = &c.media;
        assert_eq!(
            (m.mailbox_blob_bytes, m.max_file_size, m.quota, m.auto_download_images),
            (1_000_000, 5_000_000, 9_000_000, 0)
        );
        assert_eq!(m.auto_download_any, 1024);
        assert_eq!(c.calls.ring_ms, 20_000);
        assert_eq!(c.accounts.inbound_per_minute, Some(60));
        assert_eq!(c.limits.max_connections, 2048);
        assert_eq!(c.calls.ice_servers.len(), 2);
        assert_eq!(c.calls.ice_servers[1].username.as_deref(), Some("kith"));
    }

    #[test]
    fn bad_call_settings_name_the_key() {
        let e = error(&[], Some("call_ring_seconds = 2\n"));
        assert!(e.contains("call_ring_seconds: 2 is not between 5 and 300"), "{e}");
        let e = error(&[], Some("[[ice_servers]]\nurls = [\"http://x\"]\n"));
        assert!(e.contains("ice_servers: \"http://x\" is not a STUN or TURN url"), "{e}");
        let e = error(&[], Some("[[ice_servers]]\nurls = [\"turn:x:3478\"]\n"));
        assert!(e.contains("needs a username and a credential"), "{e}");
    }

    #[test]
    fn flag_only() {
        let r = resolve(
            &[
                "--listen=/ip4/127.0.0.1/tcp/0",
                "--api=127.0.0.1:0",
                "--pow-bits=8",
                "--mailbox",
                "--mailbox-allow",
                ALICE,
                "--mailbox-max-messages=5",
                "--mailbox-max-bytes=6",
                "--mailbox-retention-days=2",
                "--mailbox-deposits-per-minute=9",
            ],
            None,
        )
        .expect("resolves");
        let c = &r.config;
        assert_eq!(c.listen[0].to_string(), "/ip4/127.0.0.1/tcp/0");
        assert_eq!(c.api.to_string(), "127.0.0.1:0");
        assert_eq!(c.pow_bits, 8);
        assert_eq!(
            c.mailbox,
            MailboxConfig {
                enabled: true,
                allow: vec![UserId::parse(ALICE).expect("id")],
                max_messages: 5,
                max_bytes: 6,
                retention: Duration::from_secs(2 * DAY_SECS),
                deposits_per_minute: 9,
            }
        );
    }

    #[test]
    fn flags_override_the_file_and_the_file_fills_the_rest() {
        let r = resolve(
            &["--listen=/ip4/127.0.0.1/tcp/1", "--mailbox=false", "--mailbox-allow", BOB],
            Some(FULL),
        )
        .expect("resolves");
        let c = &r.config;
        assert_eq!(c.listen.len(), 1, "a list flag replaces the file's list");
        assert_eq!(c.listen[0].to_string(), "/ip4/127.0.0.1/tcp/1");
        assert!(!c.mailbox.enabled);
        assert_eq!(c.mailbox.allow, vec![UserId::parse(BOB).expect("id")]);
        assert_eq!(c.api.to_string(), "127.0.0.1:7400");
        assert_eq!(c.mailbox.max_messages, 500);
        assert_eq!(c.mailbox.deposits_per_minute, 30);
        assert!(r.unused_mailbox_settings);
    }

    #[test]
    fn an_explicit_config_file_is_read_instead_of_the_home_one() {
        let dir = home(Some("pow_bits = 1"));
        let other = dir.path().join("other.toml");
        std::fs::write(&other, "pow_bits = 2").expect("write");
        let flags = ["--config", other.to_str().expect("utf-8")];
        assert_eq!(args(&flags).resolve(dir.path()).expect("resolves").config.pow_bits, 2);
        let missing = dir.path().join("missing.toml");
        let e = args(&["--config", missing.to_str().expect("utf-8")])
            .resolve(dir.path())
            .expect_err("missing file");
        assert!(format!("{e:#}").contains("cannot read the config file"), "{e:#}");
    }

    #[test]
    fn unknown_keys_are_an_error_naming_file_key_and_line() {
        let e = error(&[], Some("pow_bits = 8\nmailbox_alow = []\n"));
        assert!(e.contains(CONFIG_FILE) && e.contains("line 2: unknown key `mailbox_alow`"), "{e}");
    }

    #[test]
    fn bad_values_in_the_file_name_the_key() {
        let e = error(&[], Some("listen = [\"not an address\"]"));
        assert!(e.contains("listen: \"not an address\" is not a valid multiaddr"), "{e}");
        let e = error(&[], Some("api = \"localhost\""));
        assert!(e.contains("api: \"localhost\""), "{e}");
        let e = error(&[], Some("mailbox_max_bytes = 0"));
        assert!(e.contains("mailbox_max_bytes: must be at least 1"), "{e}");
        let e = error(&[], Some("pow_bits = 300"));
        assert!(e.contains("pow_bits: 300 is more than 256"), "{e}");
        let e = error(&[], Some("pow_bits = \"8\""));
        assert!(e.contains("line 1") && e.contains("invalid type"), "{e}");
        let e = error(&[], Some("listen = []"));
        assert!(e.contains("listen: the list is empty"), "{e}");
    }

    #[test]
    fn bad_user_ids_are_an_error_naming_the_value() {
        let e = error(&["--mailbox", "--mailbox-allow", ALICE, "--mailbox-allow", "nothex"], None);
        assert!(e.starts_with("invalid --mailbox-allow \"nothex\": a user id is 32 hex"), "{e}");
        let e = error(&[], Some("mailbox_allow = [\"abc\"]"));
        assert!(e.contains("config.toml: mailbox_allow: invalid user id \"abc\""), "{e}");
    }

    #[test]
    fn help_shows_the_defaults() {
        let help = Cli::command().render_long_help().to_string();
        for default in [
            DEFAULT_LISTEN.to_owned(),
            kith_node::DEFAULT_API.to_owned(),
            format!("[default: {DEFAULT_POW_BITS}]"),
            format!("[default: {}]", mailbox::DEFAULT_MAX_MESSAGES),
            format!("[default: {},", mailbox::DEFAULT_MAX_BYTES),
            format!("[default: {}]", mailbox::DEFAULT_RETENTION.as_secs() / DAY_SECS),
            format!("[default: {}]", mailbox::DEFAULT_DEPOSITS_PER_MINUTE),
            format!("[default: {},", kith_node::services::media::DEFAULT_MAX_FILE),
            format!("[default: {},", kith_node::services::media::DEFAULT_BLOB_QUOTA),
            format!("[default: {},", kith_node::services::media::DEFAULT_AUTO_IMAGES),
            format!("[default: {}]", kith_node::services::media::DEFAULT_AUTO_ANY),
            format!("[default: {},", kith_node::services::media::DEFAULT_MAILBOX_BLOB_BYTES),
            format!("[default: {}]", kith_node::node::CallConfig::default().ring_ms / 1000),
            format!("[default: {}]", kith_node::services::accounts::DEFAULT_INBOUND_PER_MINUTE),
            format!("[default: {}]", kith_node::network::MAX_CONNECTIONS),
        ] {
            assert!(help.contains(&default), "the help does not show {default}:\n{help}");
        }
    }
}
