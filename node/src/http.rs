//! The API's HTTP server: hyper's HTTP/1.1 with explicit limits, so that no local user can make
//! the API unresponsive to its owner without the token.
//!
//! - At most [`MAX_CONNECTIONS`] connections. When a new one arrives at the limit, the oldest
//!   connection that never presented the token is closed to make room; failing that, the one
//!   idle the longest among those with no request under way; failing that (every connection is
//!   busy with an authenticated request), the new connection is refused.
//! - A request's headers must arrive within [`HEADER_READ_TIMEOUT`] (slow-loris). hyper starts
//!   that timer whenever it waits for a request, also the next one on a kept-alive connection,
//!   so an idle connection is closed after it too.
//! - A connection with no request under way that hyper is not waiting on (a response still
//!   being written to a client that stopped reading) is closed after [`IDLE_TIMEOUT`].
//!
//! The rule that picks the connection to close is [`pick_victim`], pure and tested on its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tower::Service;
use tracing::{debug, warn};

/// Most API connections open at once.
pub const MAX_CONNECTIONS: usize = 128;
/// Time a client has to send a request's headers, from the moment the server waits for them.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no request under way is closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a connection closed to make room (or at shutdown) may take to finish.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What the server knows of one connection.
#[derive(Debug)]
pub(crate) struct Slot {
    id: u64,
    opened: Instant,
    /// Set once a request on it presented the right token.
    authenticated: AtomicBool,
    /// Requests whose response (body included) is not finished.
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` of the last request's end.
    last_active_ms: AtomicU64,
    /// Asks the connection's task to close it.
    close: Notify,
}

impl Slot {
    fn idle_for(&self, now: Instant) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = self.opened + Duration::from_millis(self.last_active_ms.load(Ordering::Acquire));
        Some(now.saturating_duration_since(last))
    }

    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(ms, Ordering::Release);
    }

    /// Marks the connection as its owner's (the auth middleware calls it).
    pub(crate) fn authenticated(&self) {
        self.authenticated.store(true, Ordering::Release);
    }
}

/// The request extension through which the auth middleware reaches the connection's slot.
#[derive(Clone, Debug)]
pub(crate) struct ConnSlot(pub(crate) Arc<Slot>);

/// A connection as [`pick_victim`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The connection's id.
    pub id: u64,
    /// Whether a request on it presented the token.
    pub authenticated: bool,
    /// How long it has been open.
    pub age: Duration,
    /// How long it has been idle; `None` while a request is under way.
    pub idle: Option<Duration>,
}

/// Which connection to close so that a new one fits: the oldest that never presented the
/// token; else the one idle the longest; else none (the new connection is refused).
pub fn pick_victim(connections: &[Candidate]) -> Option<u64> {
    let unauthenticated =
        connections.iter().filter(|c| !c.authenticated).max_by_key(|c| (c.age, c.id));
    if let Some(c) = unauthenticated {
        return Some(c.id);
    }
    connections.iter().filter_map(|c| c.idle.map(|idle| (idle, c.id))).max().map(|(_, id)| id)
}

#[derive(Default)]
struct Slots {
    next: u64,
    open: HashMap<u64, Arc<Slot>>,
}

/// Serves `router` on `listener` until `stop` completes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: impl std::future::Future<Output = ()>,
) {
    let slots: Arc<Mutex<Slots>> = Arc::default();
    let tasks = tokio_util::task::TaskTracker::new();
    // Tells every connection to finish once `stop` completes.
    let shutdown = CancellationToken::new();
    tokio::pin!(stop);
    loop {
        let (stream, remote) = tokio::select! {
            _ = &mut stop => {
                shutdown.cancel();
                break;
            }
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, usually: wait instead of spinning.
                    warn!("API: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let slot = {
            let mut s = slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if s.open.len() >= MAX_CONNECTIONS {
                let now = Instant::now();
                let candidates: Vec<Candidate> = s
                    .open
                    .values()
                    .map(|slot| Candidate {
                        id: slot.id,
                        authenticated: slot.authenticated.load(Ordering::Acquire),
                        age: now.saturating_duration_since(slot.opened),
                        idle: slot.idle_for(now),
                    })
                    .collect();
                match pick_victim(&candidates).and_then(|id| s.open.remove(&id)) {
                    Some(victim) => victim.close.notify_one(),
                    None => {
                        debug!(%remote, "API: every connection is busy; a new one is refused");
                        continue;
                    }
                }
            }
            s.next += 1;
            let slot = Arc::new(Slot {
                id: s.next,
                opened: Instant::now(),
                authenticated: AtomicBool::new(false),
                in_flight: AtomicUsize::new(0),
                last_active_ms: AtomicU64::new(0),
                close: Notify::new(),
            });
            s.open.insert(slot.id, slot.clone());
            slot
        };
        let (router, slots, shutdown) = (router.clone(), slots.clone(), shutdown.clone());
        tasks.spawn(async move {
            let id = slot.id;
            connection(stream, router, slot, shutdown).await;
            slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner).open.remove(&id);
        });
    }
    tasks.close();
    tasks.wait().await;
}

/// Serves one connection until it ends, is idle too long, is closed to make room, or the
/// server shuts down.
async fn connection(
    stream: tokio::net::TcpStream,
    router: Router,
    slot: Arc<Slot>,
    shutdown: CancellationToken,
) {
    let service_slot = slot.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let slot = service_slot.clone();
        let mut router = router.clone();
        req.extensions_mut().insert(ConnSlot(slot.clone()));
        slot.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight(slot);
        async move {
            let response = router.call(req.map(Body::new)).await?;
            // The request is under way until its body is sent (an event stream lasts).
            Ok::<_, std::convert::Infallible>(
                response.map(|inner| Body::new(Guarded { inner, _guard: guard })),
            )
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut check = tokio::time::interval(Duration::from_secs(1));
    let ended = loop {
        tokio::select! {
            r = conn.as_mut() => break Some(r),
            _ = slot.close.notified() => break None,
            _ = shutdown.cancelled() => break None,
            _ = check.tick() => {
                if slot.idle_for(Instant::now()).is_some_and(|idle| idle >= IDLE_TIMEOUT) {
                    break None;
                }
            }
        }
    };
    match ended {
        Some(Err(e)) => debug!("API connection ended: {e}"),
        Some(Ok(())) => {}
        None => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
        }
    }
}

/// A response body that keeps its request counted as under way until it is sent or dropped.
struct Guarded {
    inner: Body,
    _guard: InFlight,
}

impl hyper::body::Body for Guarded {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Counts a request as under way until dropped (with its response body).
struct InFlight(Arc<Slot>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: u64, authenticated: bool, age: u64, idle: Option<u64>) -> Candidate {
        Candidate {
            id,
            authenticated,
            age: Duration::from_secs(age),
            idle: idle.map(Duration::from_secs),
        }
    }

    #[test]
    fn the_oldest_connection_without_the_token_makes_room_first() {
        let open = [c(1, true, 50, Some(40)), c(2, false, 5, None), c(3, false, 9, Some(9))];
        assert_eq!(pick_victim(&open), Some(3));
    }

    #[test]
    fn then_the_longest_idle_one_of_the_owners() {
        let open = [c(1, true, 50, Some(10)), c(2, true, 5, None), c(3, true, 30, Some(20))];
        assert_eq!(pick_victim(&open), Some(3));
    }

    #[test]
    fn busy_owner_connections_are_never_closed_for_a_newcomer() {
        let open = [c(1, true, 50, None), c(2, true, 5, None)];
        assert_eq!(pick_victim(&open), None);
        assert_eq!(pick_victim(&[]), None);
    }
}
