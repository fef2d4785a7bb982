//! The home directory of a node: key files, the API token and the API address.
//!
//! | file | content |
//! |---|---|
//! | `identity.key` | identity secret key, 64 hex digits, mode 0600; only on devices that hold it |
//! | `identity.pub` | identity public key, 64 hex digits |
//! | `device.key` | device secret key (also the libp2p key), 64 hex digits, mode 0600 |
//! | `static.key` | device static X25519 secret, 64 hex digits, mode 0600 |
//! | `device.cert` | the device certificate, hex of its CBOR encoding |
//! | `api.token` | bearer token of the local API, 64 hex digits, mode 0600 |
//! | `api.addr` | `127.0.0.1:PORT` of the running daemon's API (exists while it runs) |
//! | `store/` | the sled store |

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use kith_protocol::{
    DeviceCertificate, DeviceKeypair, IdentityKeypair, IdentityPublic, UserId, X25519Secret,
};
use rand::RngCore;

use crate::error::NodeError;

/// A home directory.
#[derive(Clone, Debug)]
pub struct Home {
    dir: PathBuf,
}

/// The keys of this device, loaded from the home directory.
#[derive(Debug)]
pub struct Keys {
    /// The user's identity key, on a device that holds it (created or recovered here; a linked
    /// device has only the public key).
    pub identity: Option<IdentityKeypair>,
    /// The user's identity public key.
    pub identity_public: IdentityPublic,
    /// This device's key.
    pub device: DeviceKeypair,
    /// This device's static X25519 key.
    pub static_key: X25519Secret,
    /// This device's certificate.
    pub cert: DeviceCertificate,
}

/// What `init` created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitInfo {
    /// The new user id.
    pub user_id: UserId,
    /// The device's peer id.
    pub peer_id: String,
    /// The safety number of the identity key.
    pub fingerprint: String,
}

const IDENTITY: &str = "identity.key";
const IDENTITY_PUB: &str = "identity.pub";
const DEVICE: &str = "device.key";
const STATIC: &str = "static.key";
const CERT: &str = "device.cert";
const TOKEN: &str = "api.token";
const ADDR: &str = "api.addr";

impl Home {
    /// A home at `dir` (nothing is touched until used).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Home { dir: dir.into() }
    }

    /// The default home: `$XDG_DATA_HOME/kith`, else `$HOME/.local/share/kith`, else `./.kith`.
    pub fn default_dir() -> PathBuf {
        if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
            return PathBuf::from(x).join("kith");
        }
        if let Some(h) = std::env::var_os("HOME").filter(|x| !x.is_empty()) {
            return PathBuf::from(h).join(".local/share/kith");
        }
        PathBuf::from(".kith")
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the sled store lives.
    pub fn store_path(&self) -> PathBuf {
        self.dir.join("store")
    }

    /// Whether an identity exists here.
    pub fn is_initialized(&self) -> bool {
        self.dir.join(IDENTITY).exists() || self.dir.join(IDENTITY_PUB).exists()
    }

    /// Creates a new identity, device keys, certificate and API token. Refuses to overwrite an
    /// existing identity.
    pub fn init(&self, label: &str, now: u64) -> Result<InitInfo, NodeError> {
        self.init_with(IdentityKeypair::generate(&mut rand::rngs::OsRng), label, now)
    }

    /// Like [`Home::init`], with an existing identity key (restored from its recovery phrase)
    /// and a new device key.
    pub fn init_with(
        &self,
        identity: IdentityKeypair,
        label: &str,
        now: u64,
    ) -> Result<InitInfo, NodeError> {
        self.refuse_initialized()?;
        let mut rng = rand::rngs::OsRng;
        let device = DeviceKeypair::generate(&mut rng);
        let static_key = X25519Secret::generate(&mut rng);
        let cert = DeviceCertificate::issue(&identity, &device, &static_key, now, label);
        self.write_device(Some(&identity), &identity.public(), &device, &static_key, &cert)
    }

    /// Creates the directory, readable by the owner only.
    pub fn create_dir(&self) -> Result<(), NodeError> {
        create_private_dir(&self.dir)
    }

    /// Refuses a directory that already holds an identity.
    pub fn refuse_initialized(&self) -> Result<(), NodeError> {
        if self.is_initialized() {
            return Err(NodeError::AlreadyInitialized(self.dir.clone()));
        }
        Ok(())
    }

    /// Writes the key files of a device. `identity` is `None` on a linked device, which holds
    /// only the public key and a certificate issued by another device.
    pub fn write_device(
        &self,
        identity: Option<&IdentityKeypair>,
        public: &IdentityPublic,
        device: &DeviceKeypair,
        static_key: &X25519Secret,
        cert: &DeviceCertificate,
    ) -> Result<InitInfo, NodeError> {
        self.refuse_initialized()?;
        create_private_dir(&self.dir)?;
        let mut token = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut token);
        // The identity files are written last: their presence marks the home initialized.
        self.write_private(DEVICE, &hex::encode(*device.secret()))?;
        self.write_private(STATIC, &hex::encode(*static_key.to_bytes()))?;
        self.write_private(CERT, &hex::encode(cert.to_bytes()))?;
        self.write_private(TOKEN, &hex::encode(token))?;
        if let Some(identity) = identity {
            self.write_private(IDENTITY, &hex::encode(*identity.secret()))?;
        }
        self.write_private(IDENTITY_PUB, &hex::encode(public.to_bytes()))?;
        Ok(InitInfo {
            user_id: public.user_id(),
            peer_id: device.peer_id().to_string(),
            fingerprint: public.fingerprint(),
        })
    }

    /// Loads this device's keys.
    pub fn load_keys(&self) -> Result<Keys, NodeError> {
        if !self.is_initialized() {
            return Err(NodeError::NotInitialized(self.dir.clone()));
        }
        let identity = if self.dir.join(IDENTITY).exists() {
            Some(IdentityKeypair::from_secret(&self.read_key(IDENTITY)?))
        } else {
            None
        };
        let identity_public = match &identity {
            Some(k) => k.public(),
            None => IdentityPublic::from_bytes(&self.read_key(IDENTITY_PUB)?).map_err(|e| {
                NodeError::Corrupt { path: self.dir.join(IDENTITY_PUB), what: e.to_string() }
            })?,
        };
        let device = DeviceKeypair::from_secret(&self.read_key(DEVICE)?);
        let static_key = X25519Secret::from_bytes(self.read_key(STATIC)?);
        let path = self.dir.join(CERT);
        let cert_hex = self.read_text(CERT)?;
        let cert = hex::decode(cert_hex.trim())
            .ok()
            .and_then(|b| DeviceCertificate::from_bytes(&b).ok())
            .ok_or_else(|| NodeError::Corrupt {
                path: path.clone(),
                what: "not a device certificate".into(),
            })?;
        let v = cert
            .verify(Some(&identity_public))
            .map_err(|e| NodeError::Corrupt { path: path.clone(), what: e.to_string() })?;
        if v.device != device.public_bytes() || v.static_key != static_key.public() {
            return Err(NodeError::Corrupt {
                path,
                what: "certificate does not match the device keys".into(),
            });
        }
        Ok(Keys { identity, identity_public, device, static_key, cert })
    }

    /// The API bearer token.
    pub fn api_token(&self) -> Result<String, NodeError> {
        let token = self.read_text(TOKEN)?.trim().to_owned();
        if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(NodeError::Corrupt {
                path: self.dir.join(TOKEN),
                what: "not an API token (64 hex digits); delete the file and run `kith init` \
                       again, or write 64 hex digits into it"
                    .into(),
            });
        }
        Ok(token)
    }

    /// Records the address the API listens on.
    pub fn write_api_addr(&self, addr: SocketAddr) -> Result<(), NodeError> {
        self.write_private(ADDR, &addr.to_string())
    }

    /// The address of the running daemon's API, if one is running.
    pub fn api_addr(&self) -> Result<SocketAddr, NodeError> {
        let text = self.read_text(ADDR)?;
        text.trim().parse().map_err(|_| NodeError::Corrupt {
            path: self.dir.join(ADDR),
            what: format!("not an address: {:?}", text.trim()),
        })
    }

    /// Removes the API address file (the daemon is stopping).
    pub fn remove_api_addr(&self) {
        let _ = fs::remove_file(self.dir.join(ADDR));
    }

    fn read_text(&self, name: &str) -> Result<String, NodeError> {
        let path = self.dir.join(name);
        fs::read_to_string(&path).map_err(|e| NodeError::io(path, e))
    }

    fn read_key(&self, name: &str) -> Result<[u8; 32], NodeError> {
        let text = self.read_text(name)?;
        let mut key = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut key).map_err(|_| NodeError::Corrupt {
            path: self.dir.join(name),
            what: "expected 64 hex digits".into(),
        })?;
        Ok(key)
    }

    /// Writes a file readable by the owner only, atomically (temporary file, then rename).
    fn write_private(&self, name: &str, content: &str) -> Result<(), NodeError> {
        crate::private_fs::write_atomic(&self.dir, name, format!("{content}\n").as_bytes())
            .map_err(|e| NodeError::io(self.dir.join(name), e))
    }
}

fn create_private_dir(dir: &Path) -> Result<(), NodeError> {
    crate::private_fs::create_dir(dir).map_err(|e| NodeError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_creates_private_keys_and_refuses_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = Home::new(dir.path().join("h"));
        let info = home.init("laptop", 1).expect("init");
        let keys = home.load_keys().expect("keys load");
        assert_eq!(keys.identity_public.user_id(), info.user_id);
        assert!(keys.identity.is_some());
        assert!(matches!(home.init("again", 2), Err(NodeError::AlreadyInitialized(_))));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(home.dir().join(IDENTITY)).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(home.api_token().expect("token").len(), 64);
    }

    #[test]
    fn a_junk_api_token_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = Home::new(dir.path());
        home.init("x", 1).expect("init");
        for junk in ["", "secret", &"g".repeat(64), &"a".repeat(63)] {
            fs::write(dir.path().join(TOKEN), junk).expect("write");
            let err = home.api_token().expect_err("junk token").to_string();
            assert!(err.contains("not an API token"), "{err}");
        }
        fs::write(dir.path().join(TOKEN), format!("{}\n", "aB".repeat(32))).expect("write");
        assert_eq!(home.api_token().expect("64 hex digits"), "aB".repeat(32));
    }

    #[test]
    fn damaged_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = Home::new(dir.path());
        home.init("x", 1).expect("init");
        fs::write(dir.path().join(DEVICE), "zz").expect("write");
        let err = home.load_keys().expect_err("corrupt");
        assert!(err.to_string().contains("device.key"), "{err}");
    }
}
