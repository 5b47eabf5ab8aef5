//! The admin endpoint: a small HTTP/1.1 server for operators and monitoring, on its own listener
//! (`[admin] listen`, default 127.0.0.1:9060) and its own threads, never on a SIP shard.
//!
//! - `GET /metrics` — Prometheus text format 0.0.4 ([`crate::metrics`]).
//! - `GET /health` — 200 while the process runs (liveness).
//! - `GET /ready` — 200 when every shard is listening and, in Redis mode, a Redis master is
//!   known; 503 otherwise and while draining, with a one-line reason (readiness).
//! - `GET /bindings?aor=sip:alice@example.org` — the AOR's live contacts as JSON, asked of the
//!   AOR's owner shard; 404 when there are none. In memory mode they come from the registrar's
//!   store. In Redis mode they are read from Redis (the lookup script, as a read: a replica
//!   answers while no master is known), because the shard's cache is only a cache: it forgets an
//!   AOR on every change notification, the node's own writes included; `"cached"` says whether
//!   it holds the AOR at the moment. A read Redis does not answer in time is a 503.
//!
//! # Why it cannot slow the SIP shards
//!
//! The shards never wait on this module. Metrics come from snapshots each shard publishes once a
//! second ([`crate::metrics`]); readiness from atomics ([`Lifecycle`]). `/bindings` is a bounded
//! request ([`SHARD_QUERY_QUEUE`] per shard, `try_send`: a full queue is a 503 here) that the
//! owner shard takes on its 10 ms timer tick, answering on a one-slot channel (in Redis mode
//! once the read completes, as a bounded database wait of its core); this side waits
//! [`SHARD_ANSWER_TIMEOUT`] at most.
//!
//! # Bounds on what a client can make it do
//!
//! At most [`MAX_CONNECTIONS`] requests are served at once (one thread each; one more is answered
//! 503 and closed), each within [`REQUEST_TIMEOUT`] from its accept (read and write), with a
//! request head of at most [`MAX_HEAD_BYTES`] (431 beyond, 414 when the request line alone is
//! too long) and [`MAX_HEADERS`] header lines (431). One request per connection
//! (`Connection: close`). Statuses follow RFC 9110 §15: 400 for a request that does not parse
//! as HTTP/1.x (RFC 9112 §2.2, §3) or an HTTP/1.1 one without exactly one Host (§3.2), 404 for
//! an unknown path, 405 with `Allow` for a method other
//! than GET and HEAD (§15.5.6), 414 and 431 (RFC 6585 §5) for sizes. The endpoint has no
//! authentication: keep it on loopback or a management network.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde_json::{Value, json};
use sipshard_registrar::redis_data::StoredBinding;
use sipshard_registrar::redis_thread::RedisObserver;
use sipshard_registrar::{Aor, Binding, Source, owner_shard};
use tracing::{debug, info, warn};

use crate::lifecycle::{Lifecycle, Phase};
use crate::metrics::{self, NodeState, RedisSnapshot, ShardSnapshot};

/// Longest request head read (request line and headers).
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Longest request line.
pub const MAX_REQUEST_LINE_BYTES: usize = 2 * 1024;
/// Most header lines in a request.
pub const MAX_HEADERS: usize = 32;
/// Requests served at once.
pub const MAX_CONNECTIONS: usize = 4;
/// Time a client has, from its accept, to send its request and read the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Admin requests waiting for one shard.
pub const SHARD_QUERY_QUEUE: usize = 4;
/// How long `/bindings` waits for the owner shard (in Redis mode: and Redis, whose requests
/// time out after `redis-timeout`, 1 s by default).
pub const SHARD_ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

/// A question for a shard, taken on its timer tick.
#[derive(Debug)]
pub enum Query {
    /// The bindings of an AOR the shard owns.
    Bindings {
        aor: Aor,
        reply: Sender<BindingsAnswer>,
    },
}

/// A shard's answer to [`Query::Bindings`].
#[derive(Debug, Clone, PartialEq)]
pub struct BindingsAnswer {
    /// Read from Redis (`db-implementation=redis`), else from the registrar's memory.
    pub redis: bool,
    /// Redis mode: the shard's cache holds the AOR.
    pub cached: bool,
    /// One JSON object per live binding ([`ContactView::to_json`]), or why they could not be
    /// read.
    pub contacts: Result<Vec<Value>, String>,
}

/// What one shard shares with the admin thread, on the shard's side.
#[derive(Debug)]
pub struct ShardOps {
    /// Where the shard publishes its figures once a second.
    pub snapshot: Arc<Mutex<ShardSnapshot>>,
    pub queries: Receiver<Query>,
    pub lifecycle: Arc<Lifecycle>,
}

/// The admin thread's view of one shard.
#[derive(Debug, Clone)]
struct ShardView {
    snapshot: Arc<Mutex<ShardSnapshot>>,
    queries: Sender<Query>,
}

/// Everything the endpoint reads: cheap to clone, shared by its threads.
#[derive(Debug, Clone)]
pub struct Observed {
    shards: Vec<ShardView>,
    lifecycle: Arc<Lifecycle>,
    redis: Option<RedisObserver>,
}

/// The two ends of the node's monitoring: the endpoint's and each shard's.
pub fn wire(lifecycle: Arc<Lifecycle>, redis: Option<RedisObserver>) -> (Observed, Vec<ShardOps>) {
    let mut views = Vec::new();
    let mut ops = Vec::new();
    for _ in 0..lifecycle.shards() {
        let snapshot = Arc::new(Mutex::new(ShardSnapshot::default()));
        let (tx, rx) = crossbeam_channel::bounded(SHARD_QUERY_QUEUE);
        views.push(ShardView {
            snapshot: snapshot.clone(),
            queries: tx,
        });
        ops.push(ShardOps {
            snapshot,
            queries: rx,
            lifecycle: lifecycle.clone(),
        });
    }
    let observed = Observed {
        shards: views,
        lifecycle,
        redis,
    };
    (observed, ops)
}

/// Binds `addr` and serves the endpoint on a thread of its own; returns the bound address.
pub fn start(addr: SocketAddr, observed: Observed) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("sipshard-admin".into())
        .spawn(move || accept_loop(listener, observed))?;
    info!(%local, "admin endpoint listening");
    Ok(local)
}

fn accept_loop(listener: TcpListener, observed: Observed) {
    let busy = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let mut stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                debug!("admin accept failed: {e}");
                // Out of descriptors, say: do not spin.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if busy.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            busy.fetch_sub(1, Ordering::AcqRel);
            let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
            let busy = Response::text(503, "too many admin requests at once\n");
            let _ = stream.write_all(&busy.to_bytes(false));
            continue;
        }
        let observed = observed.clone();
        let done = busy.clone();
        let spawned = std::thread::Builder::new()
            .name("sipshard-admin-req".into())
            .spawn(move || {
                let answered = serve(stream, &observed);
                // A request counts until it is answered; the close that follows is bounded on
                // its own (`linger`), and counting it made a quick next request find the
                // endpoint busy.
                done.fetch_sub(1, Ordering::AcqRel);
                if let Some(mut stream) = answered {
                    linger(&mut stream);
                }
            });
        if let Err(e) = spawned {
            busy.fetch_sub(1, Ordering::AcqRel);
            warn!("admin request thread not started: {e}");
        }
    }
}

/// Reads one request within [`REQUEST_TIMEOUT`] and answers it; the stream to close with
/// [`linger`] once answered.
fn serve(mut stream: TcpStream, observed: &Observed) -> Option<TcpStream> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let request = loop {
        match parse_request(&head) {
            Parsed::Incomplete => {}
            Parsed::Request(request) => break Ok(request),
            Parsed::Error(response) => break Err(response),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return None;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => {
                let room = (MAX_HEAD_BYTES + 1).saturating_sub(head.len());
                head.extend_from_slice(&chunk[..n.min(room)]);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // Timed out, or reset: nobody to answer.
            Err(_) => return None,
        }
    };
    let (response, head_only) = match request {
        Ok(request) => (respond(&request, observed), request.head_only),
        // An error answer to a HEAD has no body either (RFC 9110 §9.3.2).
        Err(response) => (response, head.starts_with(b"HEAD ")),
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let _ = stream.set_write_timeout(Some(left.max(Duration::from_millis(100))));
    stream
        .write_all(&response.to_bytes(head_only))
        .is_ok()
        .then_some(stream)
}

/// Most bytes read and discarded after an answer, and for how long.
const LINGER_BYTES: usize = 64 * 1024;
const LINGER_TIME: Duration = Duration::from_millis(500);

/// Closes in stages (RFC 9112 §9.6): a request that was answered before it was read whole (a
/// 414 or 431, a body) leaves bytes unread, and closing a socket with unread bytes sends a
/// reset that can destroy the answer before the client reads it. So: end our side, then read
/// and discard what the client still sends, within bounds, before closing.
fn linger(stream: &mut TcpStream) {
    if stream.shutdown(std::net::Shutdown::Write).is_err()
        || stream.set_read_timeout(Some(LINGER_TIME)).is_err()
    {
        return;
    }
    let until = Instant::now() + LINGER_TIME;
    let mut discarded = 0;
    let mut sink = [0u8; 4096];
    while discarded < LINGER_BYTES && Instant::now() < until {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => discarded += n,
        }
    }
}

/// A request the endpoint will answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub route: Route,
    /// HEAD: the same answer without its body.
    pub head_only: bool,
}

/// The paths served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Metrics,
    Health,
    Ready,
    /// `/bindings?aor=…`, the AOR's text as given (percent-decoded).
    Bindings(String),
}

/// What [`parse_request`] made of the bytes so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// The head is not complete yet (and within bounds): read more.
    Incomplete,
    Request(Request),
    /// Answer this and close.
    Error(Response),
}

/// Parses a request head (RFC 9112 §2–3) and routes it. Bytes after the head (a body) are never
/// read: each connection carries one request and is closed after its answer.
pub fn parse_request(buf: &[u8]) -> Parsed {
    let line_end = buf.iter().position(|&b| b == b'\n');
    if line_end.map_or(buf.len(), |end| end + 1) > MAX_REQUEST_LINE_BYTES {
        return Parsed::Error(Response::text(414, "request line too long\n"));
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Parsed::Error(Response::text(431, "request head too large\n"));
        }
        Ok(httparse::Status::Partial) => return Parsed::Incomplete,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Error(Response::text(431, "too many header lines\n"));
        }
        Err(e) => return Parsed::Error(Response::text(400, &format!("malformed request: {e}\n"))),
    }
    let (Some(method), Some(target)) = (request.method, request.path) else {
        return Parsed::Error(Response::text(400, "malformed request\n"));
    };
    // RFC 9112 §3.2: a server responds 400 to an HTTP/1.1 request without a Host header or
    // with more than one.
    let hosts = request
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .count();
    if request.version == Some(1) && hosts != 1 {
        return Parsed::Error(Response::text(
            400,
            "an HTTP/1.1 request needs exactly one Host header\n",
        ));
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            let mut response = Response::text(405, "only GET and HEAD\n");
            response.allow = true;
            return Parsed::Error(response);
        }
    };
    match route(target) {
        Ok(route) => Parsed::Request(Request { route, head_only }),
        Err(response) => Parsed::Error(response),
    }
}

/// The route of a request target: origin form (`/path?query`), or absolute form
/// (`http://host/path`, RFC 9112 §3.2.2).
pub fn route(target: &str) -> Result<Route, Response> {
    let origin = match target.strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    let (path, query) = origin.split_once('?').unwrap_or((origin, ""));
    match path {
        "/metrics" => Ok(Route::Metrics),
        "/health" => Ok(Route::Health),
        "/ready" => Ok(Route::Ready),
        "/bindings" => {
            let aor = query
                .split('&')
                .find_map(|pair| pair.strip_prefix("aor="))
                .ok_or_else(|| {
                    Response::text(
                        400,
                        "missing aor= (e.g. /bindings?aor=sip:alice@example.org)\n",
                    )
                })?;
            let aor = percent_decode(aor)
                .ok_or_else(|| Response::text(400, "aor: bad percent-encoding\n"))?;
            Ok(Route::Bindings(aor))
        }
        _ => Err(Response::text(
            404,
            "no such path: try /metrics, /health, /ready, /bindings?aor=\n",
        )),
    }
}

/// `%XX` escapes decoded (RFC 3986 §2.1); `+` is kept (it is a character of telephone-number
/// users, not a space, in an AOR). `None` for a bad escape or a result that is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// Carries `Allow: GET, HEAD` (405).
    pub allow: bool,
}

const TEXT: &str = "text/plain; charset=utf-8";
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";
const JSON: &str = "application/json";

impl Response {
    pub fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: TEXT,
            body: body.to_owned(),
            allow: false,
        }
    }

    fn json(status: u16, body: &Value) -> Response {
        Response {
            status,
            content_type: JSON,
            body: format!("{body}\n"),
            allow: false,
        }
    }

    /// The status line, headers and (unless `head_only`) body.
    pub fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            414 => "URI Too Long",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "",
        };
        let mut head = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        if self.allow {
            head.push_str("Allow: GET, HEAD\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if !head_only {
            bytes.extend_from_slice(self.body.as_bytes());
        }
        bytes
    }
}

/// Answers a routed request from what the node published.
fn respond(request: &Request, observed: &Observed) -> Response {
    match &request.route {
        Route::Health => Response::text(200, "alive\n"),
        Route::Ready => match not_ready(observed) {
            None => Response::text(200, "ready\n"),
            Some(why) => Response::text(503, &format!("{why}\n")),
        },
        Route::Metrics => {
            let shards: Vec<ShardSnapshot> = observed
                .shards
                .iter()
                .map(|s| {
                    s.snapshot
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone()
                })
                .collect();
            let node = NodeState {
                draining: observed.lifecycle.phase() != Phase::Running,
                listening_shards: observed.lifecycle.listening_shards(),
            };
            let redis = observed.redis.as_ref().map(|r| RedisSnapshot {
                health: r.health(),
                round_trips: r.round_trips(),
            });
            Response {
                status: 200,
                content_type: PROMETHEUS,
                body: metrics::render(&shards, node, redis.as_ref()),
                allow: false,
            }
        }
        Route::Bindings(aor) => bindings(aor, observed),
    }
}

/// Why the node is not ready, or `None` when it is.
fn not_ready(observed: &Observed) -> Option<String> {
    let life = &observed.lifecycle;
    if life.phase() != Phase::Running {
        return Some("draining: the node is shutting down".into());
    }
    let listening = life.listening_shards();
    if listening < life.shards() {
        return Some(format!("{listening} of {} shards listening", life.shards()));
    }
    let redis = observed.redis.as_ref()?;
    match redis.health().master {
        Some(_) => None,
        None => Some("no Redis master known".into()),
    }
}

/// Asks the AOR's owner shard for its bindings.
fn bindings(text: &str, observed: &Observed) -> Response {
    let Ok(aor) = Aor::parse(text) else {
        return Response::text(400, "aor: not a sip: or sips: URI\n");
    };
    let shard = owner_shard(&aor, observed.shards.len());
    let Some(view) = observed.shards.get(shard) else {
        return Response::text(503, "no shard\n");
    };
    let (reply, answer) = crossbeam_channel::bounded(1);
    let query = Query::Bindings {
        aor: aor.clone(),
        reply,
    };
    match view.queries.try_send(query) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            return Response::text(503, "the owner shard has too many admin requests\n");
        }
        Err(TrySendError::Disconnected(_)) => {
            return Response::text(503, "the owner shard has stopped\n");
        }
    }
    let Ok(answer) = answer.recv_timeout(SHARD_ANSWER_TIMEOUT) else {
        return Response::text(503, "the owner shard did not answer in time\n");
    };
    let contacts = match answer.contacts {
        Ok(contacts) => contacts,
        Err(why) => return Response::text(503, &format!("{why}\n")),
    };
    let found = !contacts.is_empty();
    let mut body = json!({
        "aor": aor.as_str(),
        "shard": shard,
        "store": if answer.redis { "redis" } else { "memory" },
        "contacts": contacts,
    });
    if answer.redis {
        body["cached"] = Value::Bool(answer.cached);
    }
    Response::json(if found { 200 } else { 404 }, &body)
}

/// What `/bindings` shows of a binding, borrowed from the registrar's store ([`Binding`]) or from
/// what Redis returned ([`StoredBinding`]).
#[derive(Debug)]
pub struct ContactView<'a> {
    uri: &'a str,
    q_millis: Option<u16>,
    instance: Option<&'a str>,
    reg_id: Option<u32>,
    path: &'a [Box<str>],
    source: &'a Source,
    user_agent: Option<&'a str>,
    call_id: &'a str,
    cseq: u32,
    registered_at: Instant,
    updated_at: Instant,
    expires_at: Instant,
    /// Redis: the node that took the REGISTER (and holds its connection, if any).
    node: Option<&'a str>,
}

impl<'a> From<&'a Binding> for ContactView<'a> {
    fn from(b: &'a Binding) -> ContactView<'a> {
        ContactView {
            uri: &b.uri,
            q_millis: b.q_millis,
            instance: b.instance.as_deref(),
            reg_id: b.reg_id,
            path: &b.path,
            source: &b.source,
            user_agent: b.user_agent.as_deref(),
            call_id: &b.call_id,
            cseq: b.cseq,
            registered_at: b.registered_at,
            updated_at: b.updated_at,
            expires_at: b.expires_at,
            node: None,
        }
    }
}

impl<'a> From<&'a StoredBinding> for ContactView<'a> {
    fn from(b: &'a StoredBinding) -> ContactView<'a> {
        ContactView {
            uri: &b.uri,
            q_millis: b.q_millis,
            instance: b.instance.as_deref(),
            reg_id: b.reg_id,
            path: &b.path,
            source: &b.source,
            user_agent: b.user_agent.as_deref(),
            call_id: &b.call_id,
            cseq: b.cseq,
            registered_at: b.registered_at,
            updated_at: b.updated_at,
            expires_at: b.expires_at,
            node: Some(&b.node),
        }
    }
}

impl ContactView<'_> {
    /// The JSON object. Times are seconds relative to `now`: the registrar's clock is
    /// monotonic.
    pub fn to_json(&self, now: Instant) -> Value {
        let secs = |d: Duration| d.as_secs();
        let mut contact = json!({
            "uri": self.uri,
            "expires_in_s": secs(self.expires_at.saturating_duration_since(now)),
            "q": self.q_millis.map(|q| f64::from(q) / 1000.0),
            "instance": self.instance,
            "reg_id": self.reg_id,
            "path": self.path.iter().map(|p| &**p).collect::<Vec<&str>>(),
            "transport": self.source.transport.via_token(),
            "received_from": self.source.remote.to_string(),
            "local": self.source.local.to_string(),
            "connection": self.source.connection,
            "user_agent": self.user_agent,
            "call_id": self.call_id,
            "cseq": self.cseq,
            "registered_s_ago": secs(now.saturating_duration_since(self.registered_at)),
            "updated_s_ago": secs(now.saturating_duration_since(self.updated_at)),
        });
        if let Some(node) = self.node {
            contact["node"] = Value::from(node);
        }
        contact
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(bytes: &[u8]) -> Parsed {
        parse_request(bytes)
    }

    fn status(bytes: &[u8]) -> u16 {
        match parsed(bytes) {
            Parsed::Error(r) => r.status,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn routes_the_four_paths() {
        let get =
            |target: &str| parsed(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        let ok = |route| {
            Parsed::Request(Request {
                route,
                head_only: false,
            })
        };
        assert_eq!(get("/metrics"), ok(Route::Metrics));
        assert_eq!(get("/health"), ok(Route::Health));
        assert_eq!(get("/ready?x=1"), ok(Route::Ready));
        assert_eq!(get("http://127.0.0.1:9060/health"), ok(Route::Health));
        assert_eq!(
            get("/bindings?aor=sip%3A%2B3312%40example.org"),
            ok(Route::Bindings("sip:+3312@example.org".into()))
        );
        assert_eq!(
            get("/bindings?x=y&aor=sip:alice@example.org"),
            ok(Route::Bindings("sip:alice@example.org".into()))
        );
    }

    #[test]
    fn head_is_get_without_a_body() {
        assert_eq!(
            parsed(b"HEAD /health HTTP/1.0\r\n\r\n"),
            Parsed::Request(Request {
                route: Route::Health,
                head_only: true
            })
        );
        let bytes = Response::text(200, "alive\n").to_bytes(true);
        assert!(bytes.ends_with(
            b"Content-Length: 6\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n"
        ));
    }

    #[test]
    fn incomplete_heads_ask_for_more() {
        assert_eq!(parsed(b""), Parsed::Incomplete);
        assert_eq!(
            parsed(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"),
            Parsed::Incomplete
        );
    }

    #[test]
    fn bad_requests_get_their_4xx() {
        assert_eq!(status(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"), 404);
        assert_eq!(status(b"GET /health HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(
            status(b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            400
        );
        assert_eq!(status(b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), 405);
        assert_eq!(
            status(b"DELETE /bindings?aor=sip:a@b HTTP/1.1\r\nHost: x\r\n\r\n"),
            405
        );
        assert_eq!(
            status(b"GET /metrics HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n"),
            400
        );
        assert_eq!(status(b"\x00\x01\x02 / HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status(b"GET /metrics SIP/2.0\r\n\r\n"), 400);
        assert_eq!(status(b"GET /bindings HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(
            status(b"GET /bindings?aor=sip%3 HTTP/1.1\r\nHost: x\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"GET /bindings?aor=%ff HTTP/1.1\r\nHost: x\r\n\r\n"),
            400
        );
    }

    #[test]
    fn sizes_are_bounded() {
        let long_target = format!(
            "GET /{} HTTP/1.1\r\nHost: x\r\n\r\n",
            "a".repeat(MAX_REQUEST_LINE_BYTES)
        );
        assert_eq!(status(long_target.as_bytes()), 414);
        // Still no end of line past the limit: 414 without waiting for more.
        assert_eq!(
            status("G".repeat(MAX_REQUEST_LINE_BYTES + 1).as_bytes()),
            414
        );
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            status(format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes()),
            431
        );
        let big = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n",
            "v".repeat(MAX_HEAD_BYTES)
        );
        assert_eq!(status(big.as_bytes()), 431);
    }

    #[test]
    fn the_405_says_what_is_allowed() {
        let Parsed::Error(response) = parsed(b"PUT /metrics HTTP/1.1\r\nHost: x\r\n\r\n") else {
            panic!("PUT accepted");
        };
        let text = String::from_utf8(response.to_bytes(false)).unwrap_or_default();
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nAllow: GET, HEAD\r\n"), "{text}");
    }
}
