//! `kith-sim bench`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use kith_node::home::Home;
use kith_node::mailbox::MailboxConfig;
use kith_node::network::{FrameCodec, TransportKind};
use kith_node::node::NodeEvent;
use kith_node::store::{Direction, Status, Store, StoredMessage};
use kith_node::{Multiaddr, Node, NodeConfig};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux, StreamProtocol};
use serde::Serialize;
use serde_json::json;

const POW_BITS: u32 = 8;

#[derive(Debug, Serialize, Clone, Copy)]
struct Figures {
    msgs_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// CPU time of the whole process (both sides, user + system) per message, in µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_us_per_msg: Option<f64>,
    /// Store flushes per message on the sending and the receiving node (Kith only).
    #[serde(skip_serializing_if = "Option::is_none")]
    sender_flushes_per_msg: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recipient_flushes_per_msg: Option<f64>,
    /// The first message to the device (Kith only: it starts the session), from `send_text`
    /// to `delivered`, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    first_message_ms: Option<f64>,
}

fn figures(mut lat: Vec<Duration>, total: Duration) -> Figures {
    lat.sort();
    let pct = |p: f64| {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        lat[i.min(lat.len() - 1)].as_secs_f64() * 1e3
    };
    Figures {
        msgs_per_sec: lat.len() as f64 / total.as_secs_f64(),
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        cpu_us_per_msg: None,
        sender_flushes_per_msg: None,
        recipient_flushes_per_msg: None,
        first_message_ms: None,
    }
}

struct Params {
    sequential: usize,
    parallel: usize,
    network: usize,
}

pub(crate) fn run(json_out: bool, quick: bool, file_only: bool, direct_only: bool) -> Result<()> {
    let params = if quick {
        Params { sequential: 100, parallel: 640, network: 20 }
    } else {
        Params { sequential: 1000, parallel: 6400, network: 100 }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let started = Instant::now();
    if file_only {
        let mib = if quick { 32 } else { 256 };
        let report = rt.block_on(async move {
            let dir = tempfile::tempdir().context("temporary directory")?;
            let kith = media_transfer(dir.path(), mib).await?;
            let (stream, stream_cpu) = bare_stream(mib).await?;
            let rr = bare_libp2p(mib * 4, 4, 64, 256 * 1024 + 32).await?.msgs_per_sec / 4.0;
            Ok::<_, anyhow::Error>(json!({"mib": mib, "kith": kith,
                "libp2p_stream_mib_per_sec": stream, "libp2p_stream_cpu": stream_cpu,
                "libp2p_request_response_mib_per_sec": rr}))
        })?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    if direct_only {
        let report = rt.block_on(async move {
            let dir = tempfile::tempdir().context("temporary directory")?;
            let (size, ack) = kith_sizes();
            let kith1 = kith_direct(dir.path(), params.sequential, 1).await?;
            let kith64 = kith_direct(dir.path(), params.parallel, 64).await?;
            let bare1 = bare_libp2p(params.sequential, 1, size, ack).await?;
            let bare64 = bare_libp2p(params.parallel, 64, size, ack).await?;
            Ok::<_, anyhow::Error>(direct_json(size, &kith1, &bare1, &kith64, &bare64))
        })?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let report = rt.block_on(async move {
        let dir = tempfile::tempdir().context("temporary directory")?;
        // First, while the process runs nothing else: the nodes of the later parts keep tasks
        // (timers, connections) running for a while after they are dropped, which took the
        // file's figure from about 300 MiB/s to 181 when it came after them.
        let mib = if quick { 32 } else { 256 };
        eprintln!("a {mib} MiB file: Kith and a bare libp2p stream ...");
        let file = media_transfer(dir.path(), mib).await?;
        let (bare_file, bare_file_cpu) = bare_stream(mib).await?;
        // The same bytes as 256 KiB answers to small requests, 4 in flight: Kith's exchange
        // without Kith.
        let chunks = mib * 4;
        let bare_rr = bare_libp2p(chunks, 4, 64, 256 * 1024 + 32).await?.msgs_per_sec / 4.0;
        eprintln!("direct messages: Kith ...");
        let (size, ack) = kith_sizes();
        let kith1 = kith_direct(dir.path(), params.sequential, 1).await?;
        let kith64 = kith_direct(dir.path(), params.parallel, 64).await?;
        eprintln!("direct messages: bare libp2p ...");
        let bare1 = bare_libp2p(params.sequential, 1, size, ack).await?;
        let bare64 = bare_libp2p(params.parallel, 64, size, ack).await?;
        eprintln!("network of {} nodes: names and a group ...", params.network);
        let net = network(dir.path(), params.network).await?;
        let members = if quick { 8 } else { 20 };
        eprintln!("a 5 MiB photo to a group of {members} ...");
        let photo = group_photo(dir.path(), members, 5).await?;
        eprintln!("history read ...");
        let history = history(dir.path())?;
        eprintln!("idle daemon memory ...");
        let rss = idle_rss(dir.path());
        Ok::<_, anyhow::Error>(json!({
            "message_bytes": size,
            "direct": direct_json(size, &kith1, &bare1, &kith64, &bare64)["direct"],
            "network": net,
            "file": {"mib": mib, "kith": file, "libp2p_stream_mib_per_sec": bare_file,
                "libp2p_stream_cpu": bare_file_cpu,
                "libp2p_request_response_mib_per_sec": bare_rr,
                "throughput_ratio": file["mib_per_sec"].as_f64().unwrap_or(0.0) / bare_file},
            "group_photo": photo,
            "history_last_50_of_100000_ms": history,
            "idle_daemon_rss_mib": rss,
        }))
    })?;
    let mut report = report;
    report["seconds"] = json!(started.elapsed().as_secs_f64());
    if json_out {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// The direct-message figures, as `{"message_bytes", "direct": {"in_flight_1", "in_flight_64"}}`.
fn direct_json(
    size: usize,
    kith1: &Figures,
    bare1: &Figures,
    kith64: &Figures,
    bare64: &Figures,
) -> serde_json::Value {
    json!({
        "message_bytes": size,
        "direct": {
            "in_flight_1": {"kith": kith1, "libp2p": bare1,
                "throughput_ratio": kith1.msgs_per_sec / bare1.msgs_per_sec,
                "p50_diff_ms": kith1.p50_ms - bare1.p50_ms},
            "in_flight_64": {"kith": kith64, "libp2p": bare64,
                "throughput_ratio": kith64.msgs_per_sec / bare64.msgs_per_sec,
                "p50_diff_ms": kith64.p50_ms - bare64.p50_ms},
        },
    })
}

fn print_table(r: &serde_json::Value) {
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    println!(
        "Kith benchmarks ({:.0} s; message of {} bytes)",
        f(&r["seconds"]),
        r["message_bytes"]
    );
    println!("{:<32} {:>12} {:>10} {:>10}", "direct messages", "msgs/s", "p50 ms", "p99 ms");
    for k in ["in_flight_1", "in_flight_64"] {
        for who in ["kith", "libp2p"] {
            let x = &r["direct"][k][who];
            println!(
                "{:<32} {:>12.0} {:>10.2} {:>10.2}",
                format!("  {k} {who}"),
                f(&x["msgs_per_sec"]),
                f(&x["p50_ms"]),
                f(&x["p99_ms"])
            );
        }
        println!(
            "  {k}: Kith/libp2p throughput {:.2}, p50 difference {:+.2} ms",
            f(&r["direct"][k]["throughput_ratio"]),
            f(&r["direct"][k]["p50_diff_ms"])
        );
    }
    let n = &r["network"];
    println!("network of {} nodes (memory transport):", n["nodes"]);
    println!(
        "  register      p50 {:.1} ms  p99 {:.1} ms",
        f(&n["register"]["p50_ms"]),
        f(&n["register"]["p99_ms"])
    );
    println!(
        "  resolve       p50 {:.1} ms  p99 {:.1} ms",
        f(&n["resolve"]["p50_ms"]),
        f(&n["resolve"]["p99_ms"])
    );
    println!(
        "  group fan-out to {} members: p50 {:.1} ms  max {:.1} ms",
        n["group_members"],
        f(&n["fanout"]["p50_ms"]),
        f(&n["fanout"]["max_ms"])
    );
    let file = &r["file"];
    println!(
        "a {} MiB file over TCP: Kith {:.0} MiB/s, bare libp2p stream {:.0} MiB/s (ratio {:.2}); \
         process memory grew by {:.1} MiB during it",
        file["mib"],
        f(&file["kith"]["mib_per_sec"]),
        f(&file["libp2p_stream_mib_per_sec"]),
        f(&file["throughput_ratio"]),
        f(&file["kith"]["rss_growth_mib"])
    );
    println!(
        "  CPU (both nodes, user + system): Kith {:.2} + {:.2} s, bare stream {:.2} + {:.2} s",
        f(&file["kith"]["cpu"]["user_s"]),
        f(&file["kith"]["cpu"]["system_s"]),
        f(&file["libp2p_stream_cpu"]["user_s"]),
        f(&file["libp2p_stream_cpu"]["system_s"])
    );
    println!(
        "  the same as 256 KiB answers over bare libp2p request-response, 4 in flight: {:.0} MiB/s",
        f(&file["libp2p_request_response_mib_per_sec"])
    );
    let photo = &r["group_photo"];
    println!(
        "a {} MiB photo to a group of {}: last member after {:.0} ms; the sender served {:.1} MiB \
         ({:.1} MiB to all members if it sent every copy)",
        photo["mib"],
        photo["members"],
        f(&photo["last_member_ms"]),
        f(&photo["sender_served_mib"]),
        f(&photo["every_copy_mib"])
    );
    println!("last 50 of 100,000 messages: {:.3} ms", f(&r["history_last_50_of_100000_ms"]));
    match r["idle_daemon_rss_mib"].as_f64() {
        Some(m) => println!("idle daemon resident memory: {m:.1} MiB"),
        None => {
            println!("idle daemon resident memory: not measured (no kith binary next to kith-sim)")
        }
    }
}

/// The size of a sealed text envelope and of its acknowledgement, for the bare exchange.
fn kith_sizes() -> (usize, usize) {
    use kith_protocol::envelope::Recipient;
    use kith_protocol::*;
    let mut rng = rand::rngs::OsRng;
    let id = IdentityKeypair::generate(&mut rng);
    let dev = DeviceKeypair::generate(&mut rng);
    let st = X25519Secret::generate(&mut rng);
    let cert = DeviceCertificate::issue(&id, &dev, &st, 0, "bench");
    let to = Recipient {
        device: dev.public_bytes(),
        prekey_id: 1,
        prekey: X25519Secret::generate(&mut rng).public(),
    };
    let m = Message {
        v: VERSION,
        id: MessageId::random(&mut rng),
        conversation: ConversationId([0; 16]),
        sender: id.user_id(),
        sent_at: 0,
        content: Content::Text(Text { body: "x".repeat(100) }),
    };
    let env = Envelope::seal(&cert, &st, &to, &m, Some("alice"))
        .map(|e| e.to_bytes().len())
        .unwrap_or(700);
    (env, DeliveryAck::new(AckStatus::Stored, None).to_bytes().len())
}

async fn node_at(
    base: &std::path::Path,
    name: &str,
    transport: TransportKind,
    bootstrap: Vec<Multiaddr>,
) -> Result<Node> {
    node_limited(base, name, transport, bootstrap, kith_node::network::Limits::default()).await
}

/// [`node_at`] with given connection limits (and DHT mode).
pub(crate) async fn node_limited(
    base: &std::path::Path,
    name: &str,
    transport: TransportKind,
    bootstrap: Vec<Multiaddr>,
    limits: kith_node::network::Limits,
) -> Result<Node> {
    let home = base.join(name);
    Home::new(&home).init(name, kith_node::now_ms())?;
    let listen = match transport {
        TransportKind::Tcp => "/ip4/127.0.0.1/tcp/0",
        TransportKind::Memory | TransportKind::Custom(_) => "/memory/0",
    };
    let node = Node::start(NodeConfig {
        home,
        transport,
        listen: vec![listen.parse()?],
        bootstrap,
        pow_bits: POW_BITS,
        mailbox: MailboxConfig::default(),
        media: kith_node::node::MediaConfig::default(),
        calls: kith_node::node::CallConfig::default(),
        // The simulator measures delivery, not the per-sender limit.
        accounts: kith_node::node::AccountsConfig {
            inbound_per_minute: None,
            ..Default::default()
        },
        limits,
    })
    .await?;
    Ok(node)
}

pub(crate) async fn first_addr(n: &Node) -> Result<Multiaddr> {
    for _ in 0..200 {
        if let Some(a) = n.status().await?.listen_addrs.first() {
            return Ok(a.parse()?);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("node did not listen")
}

/// Registers `name` for a benchmark's setup (not timed), trying again a few times: in a
/// network of two, the first put can find no peer while the other's identify is still under
/// way.
async fn register(n: &Node, name: &str) -> Result<()> {
    let mut tries = 0;
    loop {
        match n.register(name).await {
            Ok(_) => return Ok(()),
            Err(e) if tries < 5 => {
                tries += 1;
                eprintln!("registering {name} failed ({e}); trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn connected(n: &Node) -> Result<()> {
    for _ in 0..500 {
        if n.status().await?.connected_peers > 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("node did not connect")
}

/// Kith's direct-message path between two nodes over TCP on loopback: sealed, queued durably,
/// delivered, stored durably by the recipient, acknowledged. Latency: from `send_text` to the
/// `delivered` status.
async fn kith_direct(base: &std::path::Path, count: usize, in_flight: usize) -> Result<Figures> {
    let tag = format!("d{in_flight}");
    let bob = node_at(base, &format!("{tag}-bob"), TransportKind::Tcp, vec![]).await?;
    let alice =
        node_at(base, &format!("{tag}-alice"), TransportKind::Tcp, vec![first_addr(&bob).await?])
            .await?;
    connected(&alice).await?;
    register(&bob, &format!("{tag}bob")).await?;
    register(&alice, &format!("{tag}alice")).await?;
    let to = format!("{tag}bob");
    // Warm up: resolve, connect, first delivery.
    let mut events = alice.subscribe();
    let first = Instant::now();
    let warm = alice.send_text(&to, "warm-up").await?;
    wait_delivered(&mut events, &[warm.id]).await?;
    let first_ms = first.elapsed().as_secs_f64() * 1000.0;
    let flushes = (alice.store_flushes(), bob.store_flushes());
    let cpu = cpu_times();
    let text = "x".repeat(100);
    let mut sent: HashMap<String, Instant> = HashMap::new();
    let mut lat = Vec::with_capacity(count);
    let start = Instant::now();
    let mut queued = 0;
    // Sends are issued concurrently, as several API clients would, up to `in_flight`
    // messages not yet delivered; each send returns once the message is durably queued.
    let mut sending = tokio::task::JoinSet::new();
    // Deliveries reported before their send returned (the event can win the race).
    let mut early: HashMap<String, Instant> = HashMap::new();
    while lat.len() < count {
        while queued < count && sent.len() + sending.len() < in_flight {
            let (a, to, text) = (alice.clone(), to.clone(), text.clone());
            sending.spawn(async move {
                let t = Instant::now();
                a.send_text(&to, &text).await.map(|m| (m.id, t))
            });
            queued += 1;
        }
        while let Some(done) = sending.try_join_next() {
            let (id, t) = done??;
            match early.remove(&id) {
                Some(at) => lat.push(at.duration_since(t)),
                None => {
                    sent.insert(id, t);
                }
            }
        }
        if sent.is_empty() {
            if let Some(done) = sending.join_next().await {
                let (id, t) = done??;
                match early.remove(&id) {
                    Some(at) => lat.push(at.duration_since(t)),
                    None => {
                        sent.insert(id, t);
                    }
                }
            }
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
            Ok(Ok(NodeEvent::Status { id, status: "delivered" })) => {
                if let Some(t) = sent.remove(&id) {
                    lat.push(t.elapsed());
                } else {
                    early.insert(id, Instant::now());
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {
                // Recount from the store.
                let ids: Vec<String> = sent.keys().cloned().collect();
                for id in ids {
                    if alice.message(&id).map(|m| m.status == "delivered").unwrap_or(false) {
                        if let Some(t) = sent.remove(&id) {
                            lat.push(t.elapsed());
                        }
                    }
                }
            }
            Ok(Err(e)) => bail!("event stream: {e}"),
            Err(_) => bail!("no delivery within 30 s ({} of {count} done)", lat.len()),
        }
    }
    let total = start.elapsed();
    let per = |n: u64| n as f64 / count as f64;
    let (a, b) = (per(alice.store_flushes() - flushes.0), per(bob.store_flushes() - flushes.1));
    let used = cpu_times();
    let cpu = (used.0 - cpu.0 + used.1 - cpu.1) / count as f64 * 1e6;
    alice.shutdown().await?;
    bob.shutdown().await?;
    Ok(Figures {
        cpu_us_per_msg: Some(cpu),
        sender_flushes_per_msg: Some(a),
        recipient_flushes_per_msg: Some(b),
        first_message_ms: Some(first_ms),
        ..figures(lat, total)
    })
}

async fn wait_delivered(
    events: &mut tokio::sync::broadcast::Receiver<NodeEvent>,
    ids: &[String],
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut left: Vec<String> = ids.to_vec();
    while !left.is_empty() {
        let wait = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(wait, events.recv()).await {
            Ok(Ok(NodeEvent::Status { id, status: "delivered" })) => left.retain(|x| *x != id),
            Ok(_) => {}
            Err(_) => bail!("not delivered within 30 s"),
        }
    }
    Ok(())
}

/// Two bare swarms of `behaviour` over TCP + Noise + Yamux on loopback, the first listening:
/// (it, the other, its peer id and address).
async fn bare_pair<B: libp2p::swarm::NetworkBehaviour>(
    behaviour: impl Fn() -> B,
) -> Result<(libp2p::Swarm<B>, libp2p::Swarm<B>, libp2p::PeerId, Multiaddr)> {
    let make = || -> Result<libp2p::Swarm<B>> {
        Ok(libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_behaviour(|_| behaviour())?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build())
    };
    let mut server = make()?;
    let client = make()?;
    server.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
            break address;
        }
    };
    let id = *server.local_peer_id();
    Ok((server, client, id, addr))
}

/// Bare rust-libp2p: request-response over TCP + Noise + Yamux on loopback, same sizes.
async fn bare_libp2p(count: usize, in_flight: usize, size: usize, ack: usize) -> Result<Figures> {
    const PROTO: StreamProtocol = StreamProtocol::new("/bench/1");
    let (mut server, mut client, server_id, addr) = bare_pair(|| {
        request_response::Behaviour::with_codec(
            FrameCodec::new(size + 1024, ack + 1024),
            [(PROTO, ProtocolSupport::Full)],
            request_response::Config::default().with_max_concurrent_streams(256),
        )
    })
    .await?;
    client.add_peer_address(server_id, addr);
    let response = vec![7u8; ack];
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(request_response::Event::Message {
                message: request_response::Message::Request { channel, .. },
                ..
            }) = server.select_next_some().await
            {
                let _ = server.behaviour_mut().send_response(channel, response.clone());
            }
        }
    });
    let payload = vec![1u8; size];
    let mut sent = HashMap::new();
    let mut lat = Vec::with_capacity(count);
    // Warm up the connection.
    client.behaviour_mut().send_request(&server_id, payload.clone());
    loop {
        if let SwarmEvent::Behaviour(request_response::Event::Message { .. }) =
            client.select_next_some().await
        {
            break;
        }
    }
    let start = Instant::now();
    let cpu = cpu_times();
    let mut queued = 0;
    while lat.len() < count {
        while queued < count && sent.len() < in_flight {
            let id = client.behaviour_mut().send_request(&server_id, payload.clone());
            sent.insert(id, Instant::now());
            queued += 1;
        }
        match client.select_next_some().await {
            SwarmEvent::Behaviour(request_response::Event::Message {
                message: request_response::Message::Response { request_id, .. },
                ..
            }) => {
                if let Some(t) = sent.remove(&request_id) {
                    lat.push(t.elapsed());
                }
            }
            SwarmEvent::Behaviour(request_response::Event::OutboundFailure { error, .. }) => {
                bail!("bare libp2p request failed: {error}")
            }
            _ => {}
        }
    }
    let total = start.elapsed();
    let used = cpu_times();
    let cpu = (used.0 - cpu.0 + used.1 - cpu.1) / count as f64 * 1e6;
    Ok(Figures { cpu_us_per_msg: Some(cpu), ..figures(lat, total) })
}

/// Forms a group of every node (registered as `names`, in order) by one message of the first
/// to the second mentioning the others, waits until every node knows every member (at most
/// 300 s), then 3 s for the gossipsub mesh to settle. Returns the conversation (`#id`).
async fn group_of_everyone(nodes: &[Node], names: &[String]) -> Result<String> {
    let mention: Vec<String> = names.iter().skip(2).map(|n| format!("@{n}")).collect();
    let second = names.get(1).context("a group needs two members")?;
    let first = nodes[0].send_to(second, &format!("welcome {}", mention.join(" "))).await?;
    let conv = format!("#{}", first.conversation);
    let deadline = Instant::now() + Duration::from_secs(300);
    for n in nodes {
        while n.members(&conv).map(|m| m.len()).unwrap_or(0) < nodes.len() {
            if Instant::now() > deadline {
                bail!("the group did not form within 300 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    Ok(conv)
}

/// Names and a group in an in-process network over the memory transport.
async fn network(base: &std::path::Path, size: usize) -> Result<serde_json::Value> {
    let boot = node_at(base, "net-boot", TransportKind::Memory, vec![]).await?;
    let b = first_addr(&boot).await?;
    let mut nodes = Vec::with_capacity(size);
    let mut register = Vec::with_capacity(size);
    for i in 0..size {
        let n = node_at(base, &format!("net-{i}"), TransportKind::Memory, vec![b.clone()]).await?;
        connected(&n).await?;
        let t = Instant::now();
        n.register(&format!("member{i:03}")).await?;
        register.push(t.elapsed());
        nodes.push(n);
    }
    let mut resolve = Vec::new();
    for i in 0..size.min(50) {
        let from = &nodes[(i * 7 + 3) % size];
        let target = format!("member{:03}", (i * 13 + 1) % size);
        let t = Instant::now();
        from.resolve_fresh(&target).await?;
        resolve.push(t.elapsed());
    }
    // A group of everyone, formed by one message; then time messages from several members to
    // everyone.
    let names: Vec<String> = (0..size).map(|i| format!("member{i:03}")).collect();
    let conv = group_of_everyone(&nodes, &names).await?;
    let mut fanout = Vec::new();
    for round in 0..5 {
        let mut subs: Vec<_> = nodes.iter().map(|n| n.subscribe()).collect();
        let from = (round * 17 + 5) % size;
        let t = Instant::now();
        let m = nodes[from].send_to(&conv, &format!("round {round}")).await?;
        let mut worst = Duration::ZERO;
        for (i, sub) in subs.iter_mut().enumerate() {
            if i == from {
                continue;
            }
            let got = loop {
                match tokio::time::timeout(Duration::from_secs(60), sub.recv()).await {
                    Ok(Ok(NodeEvent::Message(v))) if v.id == m.id => break t.elapsed(),
                    Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
                    _ => bail!("member {i} did not receive round {round} within 60 s"),
                }
            };
            worst = worst.max(got);
        }
        fanout.push(worst);
    }
    let reg = figures(register, Duration::from_secs(1));
    let res = figures(resolve, Duration::from_secs(1));
    let fo = figures(fanout.clone(), Duration::from_secs(1));
    let max = fanout.iter().max().map(|d| d.as_secs_f64() * 1e3).unwrap_or(0.0);
    for n in nodes {
        let _ = n.shutdown().await;
    }
    let _ = boot.shutdown().await;
    Ok(json!({
        "nodes": size,
        "register": {"p50_ms": reg.p50_ms, "p99_ms": reg.p99_ms},
        "resolve": {"p50_ms": res.p50_ms, "p99_ms": res.p99_ms},
        "group_members": size,
        "fanout": {"p50_ms": fo.p50_ms, "max_ms": max, "note": "time until the last member stored the message"},
    }))
}

/// Resident memory of this process, in MiB.
/// This process's CPU time so far, user and system, in seconds (Linux: `/proc/self/stat`, in
/// ticks of 10 ms; zeros elsewhere). The file part reports it beside its rates: with both
/// nodes on two cores, CPU per byte decides the rate.
fn cpu_times() -> (f64, f64) {
    cpu_times_of("self")
}

/// User and system CPU seconds of process `pid` (a number, or `self`), from `/proc`.
pub(crate) fn cpu_times_of(pid: &str) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses; utime and stime
    // are the 14th and 15th of the line.
    let rest: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| rest.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
    (ticks(11), ticks(12))
}

/// CPU seconds spent since `before` (from [`cpu_times`]), as JSON.
fn cpu_since(before: (f64, f64)) -> serde_json::Value {
    let now = cpu_times();
    json!({"user_s": now.0 - before.0, "system_s": now.1 - before.1})
}

fn rss_mib() -> f64 {
    memory_mib("self", "VmRSS:")
}

/// A memory figure of process `pid` (a number, or `self`) from `/proc/PID/status`, in MiB:
/// `VmRSS:` (now) or `VmHWM:` (the peak).
pub(crate) fn memory_mib(pid: &str, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// Writes `mib` MiB of pseudo-random bytes to a new file under `base`.
fn random_file(base: &std::path::Path, name: &str, mib: usize) -> Result<std::path::PathBuf> {
    use rand::{RngCore, SeedableRng};
    use std::io::Write;
    let path = base.join(name);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(mib as u64);
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        rng.fill_bytes(&mut buf);
        f.write_all(&buf)?;
    }
    f.flush()?;
    Ok(path)
}

/// Kith's attachment path between two nodes over TCP on loopback: bob fetches the blob of a
/// `mib` MiB file alice sent (timed from his download request until every chunk is checked and
/// on disk). Memory: the growth of this process's resident memory (both nodes) during it.
async fn media_transfer(base: &std::path::Path, mib: usize) -> Result<serde_json::Value> {
    let bob = node_at(base, "file-bob", TransportKind::Tcp, vec![]).await?;
    let alice =
        node_at(base, "file-alice", TransportKind::Tcp, vec![first_addr(&bob).await?]).await?;
    connected(&alice).await?;
    register(&bob, "filebob").await?;
    register(&alice, "filealice").await?;
    let src = random_file(base, "file.bin", mib)?;
    let meta = kith_node::node::FileMeta {
        name: Some("file.bin".into()),
        mime: "application/octet-stream".into(),
        ..Default::default()
    };
    let sent = alice.send_file("@filebob", &src, meta).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while bob.message(&sent.id).is_err() {
        if Instant::now() > deadline {
            bail!("the file's message did not arrive within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = rss_mib();
    let peak = std::sync::Arc::new(std::sync::Mutex::new(before));
    let sampling = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                let now = rss_mib();
                if let Ok(mut p) = peak.lock() {
                    *p = p.max(now);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let (t, cpu) = (Instant::now(), cpu_times());
    bob.download(&sent.id).await?;
    let took = t.elapsed();
    let cpu = cpu_since(cpu);
    sampling.abort();
    let peak = peak.lock().map(|p| *p).unwrap_or(f64::NAN);
    alice.shutdown().await?;
    bob.shutdown().await?;
    Ok(json!({
        "mib_per_sec": mib as f64 / took.as_secs_f64(),
        "seconds": took.as_secs_f64(),
        "rss_growth_mib": peak - before,
        "cpu": cpu,
    }))
}

/// A bare libp2p stream (TCP + Noise + Yamux on loopback): `mib` MiB written in 256 KiB
/// writes and read to the end; MiB/s and the CPU time it took.
async fn bare_stream(mib: usize) -> Result<(f64, serde_json::Value)> {
    use futures::{AsyncReadExt, AsyncWriteExt};
    const PROTO: StreamProtocol = StreamProtocol::new("/bench/stream/1");
    let (mut server, mut client, server_id, addr) =
        bare_pair(libp2p_stream::Behaviour::new).await?;
    let mut incoming = server.behaviour().new_control().accept(PROTO)?;
    let mut control = client.behaviour().new_control();
    client.dial(addr)?;
    loop {
        tokio::select! {
            e = client.select_next_some() => {
                if let SwarmEvent::ConnectionEstablished { .. } = e {
                    break;
                }
            }
            _ = server.select_next_some() => {}
        }
    }
    tokio::spawn(async move {
        loop {
            server.select_next_some().await;
        }
    });
    tokio::spawn(async move {
        loop {
            client.select_next_some().await;
        }
    });
    let total = (mib as u64) << 20;
    let reader = tokio::spawn(async move {
        let (_, mut stream) = incoming.next().await.context("no incoming stream")?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0u64;
        while got < total {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        Ok::<_, anyhow::Error>((got, Instant::now()))
    });
    let mut stream = control
        .open_stream(server_id, PROTO)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open a stream: {e}"))?;
    let chunk = vec![7u8; 256 * 1024];
    let (t, cpu) = (Instant::now(), cpu_times());
    for _ in 0..(total / chunk.len() as u64) {
        stream.write_all(&chunk).await?;
    }
    stream.flush().await?;
    let (got, done) = reader.await??;
    if got != total {
        bail!("the bare stream delivered {got} of {total} bytes");
    }
    let cpu = cpu_since(cpu);
    Ok((mib as f64 / done.duration_since(t).as_secs_f64(), cpu))
}

/// A photo of `mib` MiB posted to a group of `members` on the memory transport: the time until
/// the last member holds it (downloaded by itself, as photos are), and what its sender served.
async fn group_photo(
    base: &std::path::Path,
    members: usize,
    mib: usize,
) -> Result<serde_json::Value> {
    let boot = node_at(base, "photo-boot", TransportKind::Memory, vec![]).await?;
    let b = first_addr(&boot).await?;
    let mut nodes = Vec::with_capacity(members);
    for i in 0..members {
        let n =
            node_at(base, &format!("photo-{i}"), TransportKind::Memory, vec![b.clone()]).await?;
        connected(&n).await?;
        register(&n, &format!("photo{i:02}")).await?;
        nodes.push(n);
    }
    let names: Vec<String> = (0..members).map(|i| format!("photo{i:02}")).collect();
    let conv = group_of_everyone(&nodes, &names).await?;
    let src = random_file(base, "photo.jpg", mib)?;
    let meta = kith_node::node::FileMeta {
        name: Some("photo.jpg".into()),
        mime: "image/jpeg".into(),
        ..Default::default()
    };
    let t = Instant::now();
    let sent = nodes[0].send_file(&conv, &src, meta).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    for (i, n) in nodes.iter().enumerate().skip(1) {
        loop {
            let state = n.message(&sent.id).ok().and_then(|m| m.attachment).map(|a| a.state);
            if state == Some("complete") {
                break;
            }
            if Instant::now() > deadline {
                bail!("member {i} did not hold the photo within 300 s (state {state:?})");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let last = t.elapsed();
    let served = |n: &Node| -> f64 {
        n.metrics_text()
            .lines()
            .find_map(|l| l.strip_prefix("kith_blob_bytes_served_total ")?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / (1024.0 * 1024.0)
    };
    let sender = served(&nodes[0]);
    let others: f64 = nodes[1..].iter().map(served).sum();
    for n in nodes {
        let _ = n.shutdown().await;
    }
    let _ = boot.shutdown().await;
    Ok(json!({
        "members": members,
        "mib": mib,
        "last_member_ms": last.as_secs_f64() * 1e3,
        "sender_served_mib": sender,
        "members_served_mib": others,
        "every_copy_mib": (mib * (members - 1)) as f64,
    }))
}

/// The last 50 messages of a conversation holding 100,000.
fn history(base: &std::path::Path) -> Result<f64> {
    let store = Store::open(&base.join("history-store"))?;
    let conv = [9u8; 16];
    for i in 0..100_000u64 {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&i.to_be_bytes());
        store.insert_incoming(&StoredMessage {
            id,
            conversation: conv,
            direction: Direction::In,
            sender: [1; 16],
            peer: [1; 16],
            kind: "text".into(),
            text: Some(format!("message number {i} with some words in it")),
            sent_at: 1_700_000_000_000 + i,
            stored_at: 1_700_000_000_000 + i,
            status: Status::Received,
            raw: vec![0; 200],
            waiting_for: None,
            target: None,
            removed: false,
            point: None,
            plan: None,
            hidden: false,
            claimed_name: None,
        })?;
    }
    let mut times = Vec::new();
    for _ in 0..101 {
        let t = Instant::now();
        let got = store.messages(Some(&conv), 50)?;
        times.push(t.elapsed());
        if got.len() != 50 {
            bail!("expected 50 messages, got {}", got.len());
        }
    }
    times.sort();
    Ok(times[50].as_secs_f64() * 1e3)
}

/// Resident memory of an idle `kith daemon` (the binary next to this one), after 5 s.
fn idle_rss(base: &std::path::Path) -> Option<f64> {
    let exe = std::env::current_exe().ok()?.with_file_name("kith");
    if !exe.exists() {
        return None;
    }
    let home = base.join("idle");
    std::process::Command::new(&exe).arg("--home").arg(&home).arg("init").output().ok()?;
    let mut child = std::process::Command::new(&exe)
        .arg("--home")
        .arg(&home)
        .args(["daemon", "--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_secs(5));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok();
    let _ = child.kill();
    let _ = child.wait();
    let kib: f64 = status?
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}
