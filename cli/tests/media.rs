//! End-to-end tests of files with the `kith` binary: real daemons on loopback.

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use support::*;

/// Writes `mib` MiB of pseudo-random bytes (seeded by `seed`) to `path`.
fn random_file(path: &Path, mib: usize, seed: u8) {
    let mut f = std::fs::File::create(path).expect("create");
    let mut state = [seed; 32];
    for _ in 0..mib * 1024 * 1024 / 32 {
        state = Sha256::digest(state).into();
        f.write_all(&state).expect("write");
    }
}

fn sha256_of(path: &Path) -> [u8; 32] {
    let mut f = std::fs::File::open(path).expect("open");
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            return h.finalize().into();
        }
        h.update(&buf[..n]);
    }
}

/// `kith send @to --file PATH caption --json`: the new message's id.
fn send_file(from: &Node, to: &str, path: &Path, caption: &str) -> String {
    let file = path.to_str().expect("utf-8 path");
    let out = from.kith(&["send", to, "--file", file, caption, "--json"]).ok();
    // Progress lines first, then the answer.
    let answer: Value = out
        .stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok().filter(|v: &Value| v.get("id").is_some()))
        .unwrap_or_else(|| {
            let all = out.stdout.trim_start_matches(|c| c != '{');
            serde_json::from_str(&all[all.rfind("\n{").map_or(0, |i| i + 1)..]).expect("an answer")
        });
    let id = answer["id"].as_str().expect("an id").to_owned();
    assert!(is_message_id(&id), "{answer}");
    id
}

/// The message `id` as `node` lists it.
fn message(node: &Node, id: &str) -> Option<Value> {
    let all = node.messages(&[])?;
    all.as_array()?.iter().find(|m| m["id"] == id).cloned()
}

/// One metric of `node`'s daemon (from `/metrics` on its API address).
fn metric(node: &Node, name: &str) -> u64 {
    let addr = std::fs::read_to_string(node.home().join("api.addr")).expect("api.addr");
    let mut s = std::net::TcpStream::connect(addr.trim()).expect("connect to the API");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("ask");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// Bytes from one sealed chunk's start to the next in a blob's `chunks` file (each at a page
/// boundary).
const SLOT: u64 = 256 * 1024 + 4096;

/// The chunks of blob `hash` (of whole chunks) written to `node`'s blob store: the slots of
/// its `chunks` file whose chunk's last 16 bytes (its tag) are not all zero (a slot not
/// written yet reads as zeros).
fn chunks_held(node: &Node, hash: &str) -> usize {
    use std::os::unix::fs::FileExt;
    let Ok(data) = std::fs::File::open(node.home().join("blobs").join(hash).join("chunks")) else {
        return 0;
    };
    let slots = data.metadata().map_or(0, |m| m.len() / SLOT);
    let mut tag = [0u8; 16];
    (0..slots)
        .filter(|i| data.read_exact_at(&mut tag, i * SLOT + 256 * 1024).is_ok() && tag != [0; 16])
        .count()
}

/// Flips a bit in every chunk of blob `hash` (of `chunks` whole chunks) in `node`'s store.
fn damage(node: &Node, hash: &str, chunks: u64) {
    use std::os::unix::fs::FileExt;
    let data = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(node.home().join("blobs").join(hash).join("chunks"))
        .expect("the blob's chunks");
    for i in 0..chunks {
        let mut byte = [0u8; 1];
        data.read_exact_at(&mut byte, i * SLOT + 7).expect("read");
        byte[0] ^= 0x40;
        data.write_all_at(&byte, i * SLOT + 7).expect("damage it");
    }
}

fn save(node: &Node, id: &str, out: &Path) -> PathBuf {
    let out = out.to_str().expect("utf-8");
    let saved = node.kith(&["save", id, "--out", out]).ok();
    PathBuf::from(saved.stdout.trim())
}

#[test]
fn files_arrive_whole_online_offline_after_a_crash_and_despite_a_bad_chunk() {
    let work = tempfile::tempdir().expect("tempdir");
    let (_mailbox, mb_addr, mut alice, mut bob) = mailbox_alice_bob();
    for n in [&alice, &bob] {
        n.kith(&["mailbox", "add", &mb_addr]).ok();
    }

    // Online: 20 MiB to bob, saved byte-identical.
    let f1 = work.path().join("one.bin");
    random_file(&f1, 20, 1);
    let id1 = send_file(&alice, "@bob", &f1, "the first");
    wait_until("bob to get the file's message", Duration::from_secs(60), || {
        message(&bob, &id1).filter(|m| m["attachment"]["state"] == "available")
    });
    let listed = bob.kith(&["messages", "@alice"]).ok().stdout;
    assert!(listed.contains("[file one.bin, 20.0 MiB, not downloaded"), "{listed}");
    let saved = save(&bob, &id1, &work.path().join("one-bob.bin"));
    assert_eq!(sha256_of(&saved), sha256_of(&f1));
    let listed = bob.kith(&["messages", "@alice"]).ok().stdout;
    assert!(listed.contains(&format!("saved at {}", saved.display())), "{listed}");

    // A download cut by kill -9 resumes where it stopped.
    let f2 = work.path().join("two.bin");
    random_file(&f2, 64, 2);
    let id2 = send_file(&alice, "@bob", &f2, "the second");
    let m2 = wait_until("bob to get the second file's message", Duration::from_secs(60), || {
        message(&bob, &id2)
    });
    let hash2 = m2["attachment"]["hash"].as_str().expect("hash").to_owned();
    let mut first_save = support::command(&bob.home())
        .args(["save", &id2, "--out", work.path().join("two-bob.bin").to_str().expect("utf-8")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kith save");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while chunks_held(&bob, &hash2) < 32 {
        assert!(std::time::Instant::now() < deadline, "the download never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    bob.kill();
    let _ = first_save.kill();
    let _ = first_save.wait();
    let held = chunks_held(&bob, &hash2);
    assert!(held < 256, "the download finished before it could be cut ({held} chunks)");
    bob.start(Some(&mb_addr));
    let saved = save(&bob, &id2, &work.path().join("two-bob.bin"));
    assert_eq!(sha256_of(&saved), sha256_of(&f2));
    // Since its restart bob fetched exactly the chunks he did not hold.
    let fetched = metric(&bob, "kith_blob_bytes_fetched_total");
    assert_eq!(fetched, (256 - held as u64) * (256 * 1024 + 16), "{held} chunks were held");

    // Offline: bob is away; alice sends, waits for her mailbox to hold it, goes away too.
    bob.stop();
    let f3 = work.path().join("three.bin");
    random_file(&f3, 20, 3);
    let id3 = send_file(&alice, "@bob", &f3, "the third");
    wait_until("the mailbox to hold the message and the file", Duration::from_secs(120), || {
        let m = message(&alice, &id3)?;
        (m["status"] == "stored" && m["attachment"]["held_by_mailbox"] == true).then_some(())
    });
    alice.stop();
    bob.start(Some(&mb_addr));
    wait_until("bob to fetch the message from his mailbox", Duration::from_secs(60), || {
        message(&bob, &id3)
    });
    let saved = save(&bob, &id3, &work.path().join("three-bob.bin"));
    assert_eq!(sha256_of(&saved), sha256_of(&f3));

    // Alice's copy is damaged (every chunk): what she serves is refused, and the mailbox's
    // copy completes the file.
    let hash3 =
        message(&bob, &id3).expect("m3")["attachment"]["hash"].as_str().expect("h").to_owned();
    damage(&alice, &hash3, 80);
    alice.start(Some(&mb_addr));
    bob.stop();
    std::fs::remove_dir_all(bob.home().join("blobs").join(&hash3)).expect("bob forgets it");
    bob.start(Some(&mb_addr));
    let saved = save(&bob, &id3, &work.path().join("three-again.bin"));
    assert_eq!(sha256_of(&saved), sha256_of(&f3));
    assert!(metric(&bob, "kith_blob_chunks_rejected_total") >= 1, "the bad chunk was taken");
}
