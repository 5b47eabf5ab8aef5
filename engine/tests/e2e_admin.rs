//! The admin endpoint and the node's lifecycle, end to end: real `sipshard` processes on
//! 127.0.0.1, a plain HTTP/1.1 client over `std::net::TcpStream`, SIP over UDP sockets.
//!
//! - `/metrics` is valid Prometheus text (a checker of the exposition format below), its
//!   counters move with the SIP traffic sent, and every per-shard family sums to the node's.
//! - `/health`, `/ready` (and 503 in Redis mode with no Redis), `/bindings` after a REGISTER and
//!   for an unknown AOR, and the 4xx of bad HTTP.
//! - SIGTERM: a forwarded INVITE still gets its late 200, a new request is refused 503 with
//!   Retry-After, new TCP connections are refused, and the process exits 0 within the grace
//!   period.
//! - `--log-json`: every log line is a JSON object; SIGHUP applies a new `log-level`.
//! - Redis mode against a real `redis-server` (the registrar's lab): ready once the master is
//!   verified, the master and round trips in `/metrics`, the cache in `/bindings`, and the
//!   journal flushed on SIGTERM.

#[path = "../../registrar/tests/support/redis_lab.rs"]
mod redis_lab;
mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::sip_stream::{answer, header};
use support::{LOOPBACK, Node, free_port};

// ---------------------------------------------------------------------------------------------
// HTTP client
// ---------------------------------------------------------------------------------------------

/// An HTTP answer: status, headers (lower-case names), body.
#[derive(Debug)]
struct Http {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

/// Sends `request` as it is and reads the answer to the end (the endpoint closes).
fn http_raw(admin: SocketAddr, request: &[u8]) -> Http {
    let mut stream = TcpStream::connect(admin).unwrap_or_else(|e| panic!("connect {admin}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    stream.write_all(request).expect("send the request");
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("read the answer: {e}"));
    let text = String::from_utf8(raw).expect("a UTF-8 answer");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect::<HashMap<_, _>>();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
    if !request.starts_with(b"HEAD ") {
        assert_eq!(length, body.len(), "Content-Length of {head:?}");
    }
    Http {
        status,
        headers,
        body: body.to_owned(),
    }
}

fn get(admin: SocketAddr, target: &str) -> Http {
    http_raw(
        admin,
        format!("GET {target} HTTP/1.1\r\nHost: {admin}\r\n\r\n").as_bytes(),
    )
}

// ---------------------------------------------------------------------------------------------
// A checker of the Prometheus text exposition format (version 0.0.4)
// ---------------------------------------------------------------------------------------------

/// The samples of an exposition: `name{labels}` (labels sorted, as written) to value.
type Samples = BTreeMap<String, f64>;

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Label names and values, in order.
type Labels = Vec<(String, String)>;

/// Parses `{a="x",b="y"}` (escapes `\\`, `\"`, `\n`) into pairs; returns them and the rest.
fn parse_labels(text: &str) -> Result<(Labels, &str), String> {
    let mut rest = text.strip_prefix('{').ok_or("labels must start with {")?;
    let mut labels = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (name, after) = rest.split_once("=\"").ok_or("label without =\"")?;
        if !is_metric_name(name) || name.contains(':') {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        labels.push((name.to_owned(), value));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// Checks the whole text and returns its samples. Rules (exposition format 0.0.4): every line
/// is a comment, `# HELP name text`, `# TYPE name type`, or `name[{labels}] value`; HELP and
/// TYPE at most once per family, TYPE before the family's samples; counters end in `_total`;
/// a histogram's buckets are cumulative, end with `le="+Inf"`, which equals its `_count`.
fn check_exposition(text: &str) -> Result<Samples, String> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps = std::collections::HashSet::new();
    let mut samples = Samples::new();
    for (n, line) in text.lines().enumerate() {
        let at = |why: String| format!("line {}: {why}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            if !is_metric_name(name) || !helps.insert(name.to_owned()) {
                return Err(at("bad or repeated HELP".into()));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split(' ');
            let (name, kind) = (words.next().unwrap_or_default(), words.next().unwrap_or(""));
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(at(format!("unknown type {kind:?}")));
            }
            if kind == "counter" && !name.ends_with("_total") {
                return Err(at("a counter not ending in _total".into()));
            }
            if types.insert(name.to_owned(), kind.to_owned()).is_some() {
                return Err(at("repeated TYPE".into()));
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(at("bad metric name".into()));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (Vec::new(), &line[name_end..])
        };
        let value = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value".into()))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| at(format!("bad value {v:?}")))?,
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        if !types.contains_key(family) {
            return Err(at("a sample before its TYPE".into()));
        }
        let key = series(name, &labels);
        if samples.insert(key, value).is_some() {
            return Err(at("a repeated series".into()));
        }
    }
    check_histograms(&types, &samples)?;
    Ok(samples)
}

fn series(name: &str, labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return name.to_owned();
    }
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// Buckets non-decreasing in `le` order as written, the last one `+Inf`, equal to `_count`.
fn check_histograms(types: &HashMap<String, String>, samples: &Samples) -> Result<(), String> {
    for (family, _) in types.iter().filter(|(_, t)| *t == "histogram") {
        let counts: Vec<(&String, &f64)> = samples
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{family}_count")))
            .collect();
        if counts.is_empty() {
            return Err(format!("histogram {family} without _count"));
        }
        for (count_key, count) in counts {
            let labels = count_key
                .strip_prefix(&format!("{family}_count"))
                .unwrap_or_default();
            let inf = match labels {
                "" => format!("{family}_bucket{{le=\"+Inf\"}}"),
                l => format!("{family}_bucket{},le=\"+Inf\"}}", l.trim_end_matches('}')),
            };
            match samples.get(&inf) {
                Some(v) if v == count => {}
                other => return Err(format!("{inf} is {other:?}, _count is {count}")),
            }
        }
    }
    Ok(())
}

/// A sample's value, 0 when absent.
fn value(samples: &Samples, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

/// Every `sipshard_shard_X{shard="i",...}` summed over `i` equals `sipshard_X{...}`.
fn check_shards_sum_to_totals(samples: &Samples) -> Result<usize, String> {
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    for (key, v) in samples {
        let Some(rest) = key.strip_prefix("sipshard_shard_") else {
            continue;
        };
        let (name, labels) = rest
            .split_once('{')
            .ok_or(format!("{key}: no shard label"))?;
        let labels = labels.trim_end_matches('}');
        let others: Vec<&str> = labels
            .split(',')
            .filter(|l| !l.starts_with("shard="))
            .collect();
        let total = if others.is_empty() {
            format!("sipshard_{name}")
        } else {
            format!("sipshard_{name}{{{}}}", others.join(","))
        };
        *sums.entry(total).or_default() += v;
    }
    for (total, sum) in &sums {
        let node = samples
            .get(total)
            .ok_or_else(|| format!("{total}: per-shard series without a node total"))?;
        if (node - sum).abs() > 1e-9 * node.abs().max(1.0) {
            return Err(format!("{total} is {node}, its shards sum to {sum}"));
        }
    }
    Ok(sums.len())
}

/// Fetches and checks `/metrics`.
fn metrics(admin: SocketAddr) -> Samples {
    let answer = get(admin, "/metrics");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.headers.get("content-type").map(String::as_str),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    check_exposition(&answer.body).unwrap_or_else(|e| panic!("{e}\n{}", answer.body))
}

// ---------------------------------------------------------------------------------------------
// SIP over UDP
// ---------------------------------------------------------------------------------------------

fn unique() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed) + u64::from(std::process::id()) * 1_000_000
}

fn udp() -> UdpSocket {
    let socket = UdpSocket::bind((LOOPBACK, 0)).expect("a UDP socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    socket
}

fn local_port(socket: &UdpSocket) -> u16 {
    socket.local_addr().expect("local address").port()
}

/// A request from `socket` to the node; `extra` headers before Content-Length.
fn request(socket: &UdpSocket, method: &str, uri: &str, user: &str, extra: &str) -> String {
    let port = local_port(socket);
    let n = unique();
    format!(
        "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {LOOPBACK}:{port};branch=z9hG4bK-admin-{n};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{user}@{LOOPBACK}>;tag=f{n}\r\nTo: <{uri}>\r\n\
         Call-ID: admin-{n}@{LOOPBACK}\r\nCSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

/// Sends `message` to `to` and returns the first final response (provisionals skipped).
fn final_response(socket: &UdpSocket, to: SocketAddr, message: &str) -> String {
    socket.send_to(message.as_bytes(), to).expect("send");
    loop {
        let text = receive(socket).unwrap_or_else(|| panic!("no final response to:\n{message}"));
        if !text.starts_with("SIP/2.0 1") {
            return text;
        }
    }
}

fn receive(socket: &UdpSocket) -> Option<String> {
    let mut buf = [0u8; 65535];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// REGISTERs `user` with the contact at `contact`'s address.
fn register(node: SocketAddr, user: &str, contact: &UdpSocket) {
    let socket = udp();
    let uri = format!("sip:{user}@{LOOPBACK}");
    let extra = format!(
        "Contact: <sip:{user}@{LOOPBACK}:{}>\r\nExpires: 3600\r\n",
        local_port(contact)
    );
    let mut register = request(
        &socket,
        "REGISTER",
        &format!("sip:{LOOPBACK}"),
        user,
        &extra,
    );
    register = register.replacen(&format!("To: <sip:{LOOPBACK}>"), &format!("To: <{uri}>"), 1);
    let ok = final_response(&socket, node, &register);
    assert!(ok.starts_with("SIP/2.0 200 "), "REGISTER answered:\n{ok}");
}

// ---------------------------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------------------------

/// A node on a free SIP port with its admin endpoint on another, two shards.
fn start_node(extra: &[&str]) -> (Node, SocketAddr, SocketAddr) {
    let port = free_port();
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin_set = format!("global/admin-listen={admin}");
    let mut args = vec!["--threads", "2", "--set", admin_set.as_str()];
    args.extend_from_slice(extra);
    let node = Node::start_on(port, &args);
    wait_for_admin(admin);
    (node, SocketAddr::from(([127, 0, 0, 1], port)), admin)
}

/// The endpoint is started right after the `listening on` line: wait for it to accept.
fn wait_for_admin(admin: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(admin).is_err() {
        assert!(Instant::now() < deadline, "admin endpoint {admin} not up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `/metrics` until `ready` holds (shards publish once a second), at most 5 s.
fn metrics_until(admin: SocketAddr, ready: impl Fn(&Samples) -> bool) -> Samples {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let samples = metrics(admin);
        if ready(&samples) || Instant::now() > deadline {
            return samples;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

/// The Redis lab picks its ports with an allocator of its own, which does not know the ports
/// `free_port` handed out here: its test runs alone ([`lab_alone`]), the others together
/// ([`ports_shared`]).
static PORTS: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn ports_shared() -> std::sync::RwLockReadGuard<'static, ()> {
    PORTS.read().unwrap_or_else(|e| e.into_inner())
}

fn lab_alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    PORTS.write().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn metrics_parse_count_the_traffic_and_shards_sum_to_the_node() {
    let _ports = ports_shared();
    let (mut node, sip, admin) = start_node(&[]);
    let before = metrics(admin);
    check_shards_sum_to_totals(&before).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(value(&before, "sipshard_shards"), 2.0);
    assert_eq!(value(&before, "sipshard_listening_shards"), 2.0);

    // Five OPTIONS from five sockets (SO_REUSEPORT spreads them over the shards), answered
    // 200 by the node itself, and a REGISTER.
    for _ in 0..5 {
        let socket = udp();
        let uri = format!("sip:{LOOPBACK}:{}", sip.port());
        let ok = final_response(
            &socket,
            sip,
            &request(&socket, "OPTIONS", &uri, "probe", ""),
        );
        assert!(ok.starts_with("SIP/2.0 200 "), "OPTIONS answered:\n{ok}");
    }
    let contact = udp();
    register(sip, "carol", &contact);

    let options = "sipshard_requests_total{method=\"OPTIONS\"}";
    let after = metrics_until(admin, |s| {
        value(s, options) >= value(&before, options) + 5.0
            && value(s, "sipshard_registers_total{result=\"accepted\"}") >= 1.0
    });
    assert_eq!(value(&after, options) - value(&before, options), 5.0);
    assert_eq!(
        value(&after, "sipshard_requests_total{method=\"REGISTER\"}"),
        1.0
    );
    assert_eq!(
        value(&after, "sipshard_registers_total{result=\"accepted\"}"),
        1.0
    );
    assert!(value(&after, "sipshard_responses_sent_total{class=\"2xx\"}") >= 6.0);
    assert_eq!(value(&after, "sipshard_bindings"), 1.0);
    assert!(
        value(&after, "sipshard_request_handling_seconds_count")
            >= value(&before, "sipshard_request_handling_seconds_count") + 6.0
    );
    let families = check_shards_sum_to_totals(&after).unwrap_or_else(|e| panic!("{e}"));
    assert!(families > 50, "only {families} per-shard series checked");
    // Each shard has its own series, and they add up to the node's.
    let per_shard: Vec<f64> = (0..2)
        .map(|i| {
            value(
                &after,
                &format!("sipshard_shard_requests_total{{shard=\"{i}\",method=\"OPTIONS\"}}"),
            )
        })
        .collect();
    assert_eq!(per_shard.iter().sum::<f64>(), value(&after, options));
    node.process.assert_running();
}

#[test]
fn health_ready_and_bad_http() {
    let _ports = ports_shared();
    let (mut node, _sip, admin) = start_node(&[]);
    let health = get(admin, "/health");
    assert_eq!((health.status, health.body.as_str()), (200, "alive\n"));
    let ready = get(admin, "/ready");
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
    assert_eq!(
        http_raw(admin, b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n").status,
        200,
        "HEAD"
    );

    let bad: [(&[u8], u16); 8] = [
        (b"hello\r\n\r\n", 400),
        (
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
            400,
        ),
        (b"GET /bindings HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            405,
        ),
        (
            b"DELETE /bindings?aor=sip:a@127.0.0.1 HTTP/1.1\r\nHost: x\r\n\r\n",
            405,
        ),
        (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", 200),
        (b"GET /health HTTP/1.1\r\n\r\n", 400),
    ];
    for (request, status) in bad {
        let answer = http_raw(admin, request);
        assert_eq!(
            answer.status,
            status,
            "{:?}: {answer:?}",
            String::from_utf8_lossy(request)
        );
        if status == 405 {
            assert_eq!(
                answer.headers.get("allow").map(String::as_str),
                Some("GET, HEAD")
            );
        }
    }
    // An error answer to HEAD has its headers only.
    let head = http_raw(admin, b"HEAD /nowhere HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((head.status, head.body.as_str()), (404, ""), "{head:?}");
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "x".repeat(4096));
    assert_eq!(http_raw(admin, long_target.as_bytes()).status, 414);
    let many: String = (0..40).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    assert_eq!(http_raw(admin, many.as_bytes()).status, 431);
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
        "v".repeat(10_000)
    );
    assert_eq!(http_raw(admin, huge.as_bytes()).status, 431);
    // A client that sends half a request and stops is given up after the request timeout;
    // the endpoint still answers the others meanwhile.
    let mut stalled = TcpStream::connect(admin).expect("connect");
    stalled.write_all(b"GET /metr").expect("send");
    assert_eq!(get(admin, "/health").status, 200);
    node.process.assert_running();
}

#[test]
fn ready_is_503_in_redis_mode_without_redis() {
    let _ports = ports_shared();
    let closed = free_port();
    let domain = format!("module::Registrar/redis-server-domain={LOOPBACK}");
    let port = format!("module::Registrar/redis-server-port={closed}");
    let (mut node, _sip, admin) = start_node(&[
        "--set",
        "module::Registrar/db-implementation=redis",
        "--set",
        &domain,
        "--set",
        &port,
    ]);
    let ready = get(admin, "/ready");
    assert_eq!(ready.status, 503, "{ready:?}");
    assert!(ready.body.contains("no Redis master"), "{ready:?}");
    assert_eq!(get(admin, "/health").status, 200);
    let samples = metrics(admin);
    assert_eq!(value(&samples, "sipshard_redis_master"), 0.0);
    assert!(samples.contains_key("sipshard_redis_round_trip_seconds_count"));
    assert!(samples.contains_key("sipshard_redis_journal_depth"));
    // Bindings are read from Redis, which does not answer.
    let bindings = get(admin, "/bindings?aor=sip:nobody@127.0.0.1");
    assert_eq!(bindings.status, 503, "{bindings:?}");
    assert!(bindings.body.contains("Redis"), "{bindings:?}");
    node.process.assert_running();
}

#[test]
fn bindings_show_a_registered_contact_and_404_an_unknown_aor() {
    let _ports = ports_shared();
    let (mut node, sip, admin) = start_node(&[]);
    let contact = udp();
    register(sip, "alice", &contact);
    let answer = get(admin, "/bindings?aor=sip%3Aalice%40127.0.0.1");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    let json: serde_json::Value = serde_json::from_str(&answer.body).expect("JSON");
    assert_eq!(json["aor"], "sip:alice@127.0.0.1");
    assert_eq!(json["store"], "memory");
    let contacts = json["contacts"].as_array().expect("contacts");
    assert_eq!(contacts.len(), 1, "{json}");
    let expected = format!("sip:alice@{LOOPBACK}:{}", local_port(&contact));
    assert_eq!(contacts[0]["uri"], expected.as_str());
    assert_eq!(contacts[0]["transport"], "UDP");
    let expires = contacts[0]["expires_in_s"].as_u64().expect("expires");
    assert!((3590..=3600).contains(&expires), "{json}");

    let unknown = get(admin, "/bindings?aor=sip:nobody@127.0.0.1");
    assert_eq!(unknown.status, 404, "{unknown:?}");
    let json: serde_json::Value = serde_json::from_str(&unknown.body).expect("JSON");
    assert_eq!(json["contacts"], serde_json::json!([]));
    assert_eq!(get(admin, "/bindings?aor=mailto:x@y").status, 400);
    node.process.assert_running();
}

#[test]
fn log_json_lines_parse_as_json() {
    let _ports = ports_shared();
    let (node, _sip, admin) = start_node(&["--log-json"]);
    assert_eq!(get(admin, "/health").status, 200);
    let stderr = node.process.stderr();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log line");
    for line in &lines {
        let json: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            json["level"].is_string() && json["timestamp"].is_string(),
            "{line}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains("admin endpoint listening")),
        "{stderr}"
    );
}

/// The node as a child of its own (the support harness keeps its exit status to itself),
/// killed on drop.
struct Spawned {
    child: Child,
    stderr: std::path::PathBuf,
    _dir: support::TempDir,
}

impl Spawned {
    fn start(args: &[&str]) -> Spawned {
        let dir = support::TempDir::new("admin-sigterm");
        let stderr = dir.join("stderr.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_sipshard"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("start sipshard");
        let stdout = child.stdout.take().expect("stdout");
        let spawned = Spawned {
            child,
            stderr,
            _dir: dir,
        };
        let mut line = String::new();
        let mut reader = BufReader::new(stdout);
        while !line.contains("listening on") {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                panic!("sipshard exited before listening:\n{}", spawned.log());
            }
        }
        // Keep draining stdout so the node never blocks on it.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        spawned
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name}");
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("state") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sigterm_finishes_the_transaction_in_progress_refuses_new_ones_and_exits_0() {
    let _ports = ports_shared();
    const GRACE_S: u64 = 4;
    let port = free_port();
    let sip = SocketAddr::from(([127, 0, 0, 1], port));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let transports = format!("global/transports=sip:{LOOPBACK}:{port}");
    let admin_set = format!("global/admin-listen={admin}");
    let grace = format!("global/shutdown-grace-period={GRACE_S}s");
    let mut node = Spawned::start(&[
        "--threads",
        "2",
        "--set",
        &transports,
        "--set",
        "module::Registrar/reg-domains=127.0.0.1 localhost",
        "--set",
        &admin_set,
        "--set",
        &grace,
    ]);
    wait_for_admin(admin);

    // bob's phone (the UAS) registers; the caller INVITEs bob through the node.
    let uas = udp();
    register(sip, "bob", &uas);
    let caller = udp();
    let invite = request(
        &caller,
        "INVITE",
        &format!("sip:bob@{LOOPBACK}"),
        "caller",
        "",
    );
    caller.send_to(invite.as_bytes(), sip).expect("send INVITE");
    let mut buf = [0u8; 65535];
    let (n, node_addr) = uas.recv_from(&mut buf).expect("the INVITE reaches bob");
    let forwarded = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(forwarded.starts_with("INVITE "), "{forwarded}");
    uas.send_to(
        answer(&forwarded, "180 Ringing", "bob1").as_bytes(),
        node_addr,
    )
    .expect("send 180");

    // The stop signal while bob rings.
    let signalled = Instant::now();
    node.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(2);
    while get(admin, "/ready").status != 503 {
        assert!(Instant::now() < deadline, "/ready still 200 after SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Every shard takes the drain on its next 10 ms tick.
    std::thread::sleep(Duration::from_millis(100));
    let ready = get(admin, "/ready");
    assert!(ready.body.contains("draining"), "{ready:?}");

    // A new out-of-dialog request is refused, with Retry-After, and so is a new connection.
    let late = udp();
    let options = request(
        &late,
        "OPTIONS",
        &format!("sip:{LOOPBACK}:{port}"),
        "late",
        "",
    );
    let refused = final_response(&late, sip, &options);
    assert!(refused.starts_with("SIP/2.0 503 "), "{refused}");
    assert_eq!(
        header(&refused, "Retry-After"),
        Some(GRACE_S.to_string().as_str())
    );
    assert!(
        TcpStream::connect_timeout(&sip, Duration::from_secs(1)).is_err(),
        "a TCP connection was accepted while draining"
    );

    // bob answers a second after the signal: the caller still gets the 200.
    std::thread::sleep(Duration::from_secs(1).saturating_sub(signalled.elapsed()));
    uas.send_to(answer(&forwarded, "200 OK", "bob1").as_bytes(), node_addr)
        .expect("send 200");
    let ok = loop {
        let response = receive(&caller).unwrap_or_else(|| {
            panic!(
                "the caller got no 200 while the node drained\n{}",
                node.log()
            )
        });
        if !response.starts_with("SIP/2.0 1") {
            break response;
        }
    };
    assert!(ok.starts_with("SIP/2.0 200 "), "{ok}");

    // Nothing in progress any more: the node exits 0 well within the grace period.
    let status = node
        .wait_exit(Duration::from_secs(GRACE_S + 3))
        .unwrap_or_else(|| panic!("still running after the grace period\n{}", node.log()));
    assert_eq!(status.code(), Some(0), "{}", node.log());
    assert!(
        signalled.elapsed() < Duration::from_secs(GRACE_S),
        "took {:?}, the whole grace period: the drain did not notice the call ended",
        signalled.elapsed()
    );
    let log = node.log();
    assert!(log.contains("drained") && log.contains("stopped"), "{log}");
}

#[test]
fn sigterm_stops_within_the_grace_period_when_a_call_never_ends() {
    let _ports = ports_shared();
    const GRACE_S: u64 = 1;
    let port = free_port();
    let sip = SocketAddr::from(([127, 0, 0, 1], port));
    let transports = format!("global/transports=sip:{LOOPBACK}:{port}");
    let grace = format!("global/shutdown-grace-period={GRACE_S}s");
    let mut node = Spawned::start(&[
        "--threads",
        "1",
        "--set",
        &transports,
        "--set",
        "global/admin-listen=",
        "--set",
        "module::Registrar/reg-domains=127.0.0.1 localhost",
        "--set",
        &grace,
    ]);
    let uas = udp();
    register(sip, "dan", &uas);
    let caller = udp();
    let invite = request(
        &caller,
        "INVITE",
        &format!("sip:dan@{LOOPBACK}"),
        "caller",
        "",
    );
    caller.send_to(invite.as_bytes(), sip).expect("send INVITE");
    let mut buf = [0u8; 65535];
    uas.recv_from(&mut buf).expect("the INVITE reaches dan");
    // dan never answers.
    let signalled = Instant::now();
    node.signal("TERM");
    let status = node
        .wait_exit(Duration::from_secs(GRACE_S + 4))
        .unwrap_or_else(|| panic!("still running long after the grace period\n{}", node.log()));
    assert_eq!(status.code(), Some(0), "{}", node.log());
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_secs(GRACE_S),
        "stopped after {took:?}, before the grace period, with a call in progress"
    );
    assert!(node.log().contains("grace period over"), "{}", node.log());
}

#[test]
fn redis_mode_ready_metrics_bindings_and_the_journal_flushed_on_sigterm() {
    let _ports = lab_alone();
    let lab = redis_lab::RedisLab::start(redis_lab::LabOptions::default());
    let redis = lab.redis_addr(0);
    let port = free_port();
    let sip = SocketAddr::from(([127, 0, 0, 1], port));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let transports = format!("global/transports=sip:{LOOPBACK}:{port}");
    let admin_set = format!("global/admin-listen={admin}");
    let domain = format!("module::Registrar/redis-server-domain={}", redis.ip());
    let redis_port = format!("module::Registrar/redis-server-port={}", redis.port());
    let mut node = Spawned::start(&[
        "--threads",
        "2",
        "--set",
        &transports,
        "--set",
        "module::Registrar/reg-domains=127.0.0.1 localhost",
        "--set",
        &admin_set,
        "--set",
        "module::Registrar/db-implementation=redis",
        "--set",
        &domain,
        "--set",
        &redis_port,
    ]);
    wait_for_admin(admin);
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(admin, "/ready").status != 200 {
        assert!(
            Instant::now() < deadline,
            "not ready with Redis up\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let contact = udp();
    register(sip, "erin", &contact);
    let acked = "sipshard_redis_writes_total{outcome=\"acked\"}";
    let samples = metrics_until(admin, |s| value(s, acked) >= 1.0);
    assert!(value(&samples, acked) >= 1.0, "no acknowledged write");
    let master = format!("sipshard_redis_master{{address=\"{redis}\"}}");
    assert_eq!(value(&samples, &master), 1.0, "{master}");
    assert!(value(&samples, "sipshard_redis_round_trip_seconds_count") >= 1.0);
    assert_eq!(value(&samples, "sipshard_redis_held_writes"), 0.0);
    check_shards_sum_to_totals(&samples).unwrap_or_else(|e| panic!("{e}"));

    let bindings = get(admin, "/bindings?aor=sip:erin@127.0.0.1");
    assert_eq!(bindings.status, 200, "{bindings:?}");
    let json: serde_json::Value = serde_json::from_str(&bindings.body).expect("JSON");
    assert_eq!(json["store"], "redis");
    assert!(json["cached"].is_boolean(), "{json}");
    let contacts = json["contacts"].as_array().expect("contacts");
    assert_eq!(contacts.len(), 1, "{json}");
    let expected = format!("sip:erin@{LOOPBACK}:{}", local_port(&contact));
    assert_eq!(contacts[0]["uri"], expected.as_str(), "{json}");
    assert!(contacts[0]["node"].is_string(), "{json}");
    let unknown = get(admin, "/bindings?aor=sip:nobody@127.0.0.1");
    assert_eq!(unknown.status, 404, "{unknown:?}");

    node.signal("TERM");
    let status = node
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("still running\n{}", node.log()));
    assert_eq!(status.code(), Some(0), "{}", node.log());
    let log = node.log();
    assert!(log.contains("redis journal flushed"), "{log}");
}

#[test]
fn sighup_reloads_the_log_level() {
    let _ports = ports_shared();
    let dir = support::TempDir::new("admin-sighup");
    let path = dir.join("sipshard.conf");
    let port = free_port();
    let conf = |level: &str| {
        format!(
            "[global]\ntransports=sip:{LOOPBACK}:{port}\nadmin-listen=\nlog-level={level}\n\
             [module::Registrar]\nreg-domains=127.0.0.1\n"
        )
    };
    std::fs::write(&path, conf("warning")).expect("write the configuration");
    let config = path.to_str().expect("UTF-8 path");
    let node = Spawned::start(&["--threads", "1", "--config", config]);
    node.signal("HUP");
    // At warning, the reload's own info line is not written.
    std::thread::sleep(Duration::from_millis(300));
    assert!(!node.log().contains("log level set"), "{}", node.log());

    std::fs::write(&path, conf("debug")).expect("rewrite the configuration");
    node.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(3);
    while !node.log().contains("log level set") {
        assert!(
            Instant::now() < deadline,
            "no reload logged\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Debug lines now: a datagram that is not SIP is dropped with one.
    let socket = udp();
    socket
        .send_to(b"not sip at all\r\n\r\n", (LOOPBACK, port))
        .expect("send");
    let deadline = Instant::now() + Duration::from_secs(3);
    while !node.log().contains("DEBUG") {
        assert!(Instant::now() < deadline, "no debug line\n{}", node.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}
