//! `sipshard-load options|register|message|call`: the command line and the I/O shell. Each of
//! `--threads` shards is a std thread with its own UDP socket (or TCP or TLS connection, or
//! connection per request: `conn`), its share of the schedule (every `threads`-th request) and
//! its own client transactions and histograms; the main thread prints progress and, at the end,
//! merges the shards' results into the reports.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::call::Calls;
use crate::client::{Client, Counts, Received, Timers};
use crate::conn::{Conn, ConnStats, Layers, Transport, WsTarget};
use crate::cpu;
use crate::digest;
use crate::report;
use crate::scenario::{
    Authenticated, Endpoints, MAX_BODY, Scenario, caller, request_uri, write_request,
    write_request_with,
};
use crate::schedule::{MAX_STEPS, Ramp, Schedule, Step};
use crate::tls::TlsOptions;
use crate::users::{UserPattern, Users};

pub const USAGE: &str =
    "usage: sipshard-load options|register|message|call --target ADDR:PORT --rate R [options]
  Sends requests over UDP, TCP, TLS or WebSocket on an exact open-loop schedule (request i at
  start + i/R) and reports latency from each request's intended send time (corrected for
  coordinated omission) and from its actual send time.
  --rate R            requests per second over all threads (required, unless --steps)
  --count N           stop after N requests (default unlimited; --count or --duration bounds)
  --duration SECS     send for at most SECS seconds (default 10)
  --ramp-from R0     start at R0 per second and grow linearly to R ...
  --ramp-secs T       ... over the first T seconds (default 0: no ramp)
  --steps R:S,...     rate steps instead of --rate: R per second for S seconds, then the next
                      (at most 16); the last rate holds until --count or --duration ends the
                      run (--duration defaults to the steps' total)
  --threads N         shards, each with its own socket (or connection) and 1/N of the rate
                      (default 1)
  --local IP          local address to bind (default 127.0.0.1; ports are picked)
  --transport T       udp (default), tcp, tls, ws or wss: over a stream each thread opens one
                      connection to the target and sends its requests over it, framed by
                      Content-Length (RFC 3261 §18.3), or over WebSocket (ws, wss: RFC 7118,
                      one SIP message per text message, after an upgrade offering `sip`);
                      nothing is retransmitted, Timer F (64*T1) still times requests out; Via
                      says TCP, TLS, WS or WSS and REGISTER's Contact has ;transport=tcp, tls
                      or ws. A connection that fails or is closed leaves its outstanding
                      requests to time out
  --ws-path PATH      ws, wss: the path of the upgrade request (default /; its Host is
                      --tls-server-name or the target)
  --connection-per-request
                      tcp, tls, ws, wss (not call): a new connection (and TLS handshake,
                      WebSocket upgrade) for every request, closed when its final response
                      came: measures connection set-ups and handshakes per second (the
                      latency includes them). Open connections per thread are bounded by the
                      file descriptor limit
  --tls-ca FILE       tls, wss: trust the PEM certificates in FILE (default the system's
                      bundle, /etc/ssl/certs/ca-certificates.crt)
  --tls-insecure      tls, wss: INSECURE, FOR BENCHMARKS ONLY: trust ANY certificate for ANY
                      name (self-signed test certificates). Anyone on the path can read and
                      change the traffic. Handshake signatures are still checked
  --tls-server-name N tls, wss: the name the certificate must carry, sent as SNI (default the
                      target's IP address, checked against the certificate's IP addresses)
  --tls-resumption    tls, wss: resume TLS sessions on new connections (default: every
                      handshake is a full one)
  --domain D          domain of Request-URIs and AORs (default the target's IP)
  --users PATTERN     user names, printf-like (register, message, call; default user%06d)
  --first N           first user number (default 0)
  --user-count N      users in the range, cycled through (default 1000)
  --users-csv FILE    users from FILE instead of a pattern: user,password[,domain] a line (no
                      quoting; empty password: none; # comments; an optional first line
                      user,password[,domain] is a header); the domain (default --domain) goes
                      into the AOR and Request-URI; register, message and call answer
                      challenges with the passwords (see --password)
  --expires S         Expires of each REGISTER (default 3600; 0 unregisters)
  --contact HOST:PORT register: each user's Contact is <sip:USER@HOST:PORT> instead of the
                      generator's own address (Via still names the generator): register users
                      at a `sipshard-load uas` so that `call` through the node reaches it
  --password P        answer digest challenges (401 WWW-Authenticate, 407 Proxy-Authenticate)
                      with password P for every user: the strongest offered of SHA-512-256,
                      SHA-256, MD5; qop=auth (nc, cnonce) when offered. The request is resent
                      (same Call-ID, CSeq 2, new branch) as a new transaction; its latency
                      counts from the first request's intended send time to the final response
                      (uncorrected: from the first one's actual send). Challenges are counted
                      (`challenged`); a challenge to the resent request is a failure. register:
                      the credentials are the registered user's. message, call: request N is
                      to user N from user N+1 (cyclically; without passwords, from
                      sipshard-load at the generator's address), with that user's
                      credentials; a challenged INVITE's 407 is ACKed before the INVITE is
                      resent, and a challenge to a BYE is answered once the same way
  --passwords FILE    as --password, with USER:PASSWORD lines (one per user)
  --body TEXT         MESSAGE body, text/plain (default \"sipshard-load\"; at most 1024 bytes)
  --hold-ms MS        call: time from the 200 to the BYE (default 0); the rate is of INVITEs
                      (the callee: sipshard-load uas, or a node routing to registered ones)
  --t1-ms MS          RFC 3261 T1 (default 500; T2 is 8*T1, timeout 64*T1)
  --search            find the highest clean rate up to R (no failure, timeout or
                      retransmission, 97% of the offered rate achieved; bisection to 2%, at
                      most 10 runs of --count/--duration each), then run at 50% and 90% of it
  --hgrm FILE         write the corrected latency's percentile distribution (.hgrm, ms)
  --json FILE         write a JSON summary
  --server-pid PID[,PID...]
                      the server's processes (repeatable), on this machine: each run's
                      summary gets `server_cpu_s`, their CPU time (every thread's, from
                      /proc/PID/task/*/schedstat) between the run's start and end, for
                      CPU-seconds per 1,000 requests
  After the last request is sent, the run waits for outstanding transactions (at most 64*T1).
  call: INVITE (SDP offer), 180/200, ACK, hold, BYE; latency of INVITE to 200 and of BYE to 200
  reported separately (the BYE's from when it was due); every request's counts add up.
  Exit status: 0 when every request got a 2xx, 1 otherwise, 2 on a usage error.";

#[derive(Debug, Clone)]
pub struct Options {
    pub scenario: Scenario,
    pub target: SocketAddr,
    pub rate: f64,
    pub ramp: Option<Ramp>,
    /// `--steps`: the rate in steps (`rate` is the last one's).
    pub steps: Option<Vec<Step>>,
    pub count: u64,
    pub duration: Duration,
    pub threads: u64,
    pub local: std::net::IpAddr,
    pub domain: Option<String>,
    pub t1_ms: u64,
    pub hgrm: Option<String>,
    pub json: Option<String>,
    pub search: bool,
    /// The digest passwords (RFC 3261 §22.2), if the server challenges (register, message,
    /// call).
    pub passwords: Passwords,
    /// `--transport`.
    pub transport: Transport,
    /// `--connection-per-request`: a new connection for every request (TCP, TLS).
    pub connection_per_request: bool,
    /// `--tls-*`.
    pub tls: TlsOptions,
    /// `--ws-path`.
    pub ws_path: String,
    /// `--server-pid`: the processes whose CPU time each run reports.
    pub server_pids: Vec<u32>,
}

/// Where a user's digest password comes from.
#[derive(Debug, Clone, Default)]
pub enum Passwords {
    /// None: a 401/407 is a failure like any other.
    #[default]
    None,
    /// `--password`: the same for every user.
    Same(String),
    /// `--passwords FILE`: `USER:PASSWORD` lines (users not in it get no credentials).
    PerUser(Arc<std::collections::HashMap<String, String>>),
    /// `--users-csv FILE`: each request's user's password from the file.
    Listed,
}

impl Passwords {
    /// The password of request `j`, for `user`, of a run with `users`.
    pub fn get<'a>(&'a self, users: &'a Users, j: u64, user: &str) -> Option<&'a str> {
        match self {
            Passwords::None => None,
            Passwords::Same(p) => Some(p),
            Passwords::PerUser(map) => map.get(user).map(String::as_str),
            Passwords::Listed => users.password(j),
        }
    }

    fn is_none(&self) -> bool {
        matches!(self, Passwords::None)
    }

    /// `USER:PASSWORD` a line (the password is the rest of the line after the first colon);
    /// empty lines and lines starting with `#` are skipped.
    pub fn parse_file(text: &str) -> Result<Passwords, String> {
        let mut map = std::collections::HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, password) = line
                .split_once(':')
                .filter(|(u, _)| !u.is_empty())
                .ok_or_else(|| format!("line {}: not USER:PASSWORD", n + 1))?;
            map.insert(user.to_owned(), password.to_owned());
        }
        Ok(Passwords::PerUser(Arc::new(map)))
    }
}

impl Options {
    pub fn from_args(command: &str, args: &[String]) -> Result<Options, String> {
        let mut target = None;
        let mut rate = None;
        let mut count = u64::MAX;
        let mut ramp_from = None;
        let mut ramp_secs = 0.0;
        let mut duration = None;
        let mut steps = None;
        let mut threads = 1;
        let mut local = std::net::IpAddr::from([127, 0, 0, 1]);
        let mut domain = None;
        let mut users = "user%06d".to_owned();
        let mut first = 0;
        let mut user_count = 1000;
        let mut users_csv = None;
        let mut pattern_given = false;
        let mut expires = 3600;
        let mut contact = None;
        let mut passwords = Passwords::None;
        let mut transport = Transport::Udp;
        let mut connection_per_request = false;
        let mut tls = TlsOptions::default();
        let mut tls_given = false;
        let mut ws_path = None;
        let mut server_pids = Vec::new();
        let mut body = "sipshard-load".to_owned();
        let mut hold_ms = 0;
        let mut t1_ms = 500;
        let mut hgrm = None;
        let mut json = None;
        let mut search = false;
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            match flag.as_str() {
                "--search" => {
                    search = true;
                    continue;
                }
                "--connection-per-request" => {
                    connection_per_request = true;
                    continue;
                }
                "--tls-insecure" => {
                    (tls.insecure, tls_given) = (true, true);
                    continue;
                }
                "--tls-resumption" => {
                    (tls.resumption, tls_given) = (true, true);
                    continue;
                }
                _ => {}
            }
            let value = it.next().ok_or(format!("{flag} needs a value"))?;
            let bad = || format!("{flag}: bad value {value:?}");
            match flag.as_str() {
                "--target" => target = Some(value.parse().map_err(|_| bad())?),
                "--rate" => rate = Some(value.parse::<f64>().map_err(|_| bad())?),
                "--ramp-from" => ramp_from = Some(value.parse::<f64>().map_err(|_| bad())?),
                "--ramp-secs" => ramp_secs = value.parse::<f64>().map_err(|_| bad())?,
                "--count" => count = value.parse().map_err(|_| bad())?,
                "--duration" => {
                    let s: f64 = value.parse().map_err(|_| bad())?;
                    duration = Some(Duration::try_from_secs_f64(s).map_err(|_| bad())?);
                }
                "--steps" => steps = Some(parse_steps(value).ok_or_else(bad)?),
                "--threads" => {
                    threads = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=256).contains(n))
                        .ok_or_else(bad)?
                }
                "--local" => local = value.parse().map_err(|_| bad())?,
                "--domain" => domain = Some(value.clone()),
                "--users" => (users, pattern_given) = (value.clone(), true),
                "--first" => (first, pattern_given) = (value.parse().map_err(|_| bad())?, true),
                "--user-count" => {
                    (user_count, pattern_given) = (value.parse().map_err(|_| bad())?, true)
                }
                "--users-csv" => {
                    let text =
                        std::fs::read_to_string(value).map_err(|e| format!("{value}: {e}"))?;
                    users_csv = Some(Users::parse_csv(&text).map_err(|e| format!("{value}: {e}"))?);
                }
                "--expires" => expires = value.parse().map_err(|_| bad())?,
                "--contact" => {
                    // HOST:PORT, as it will stand in a SIP URI.
                    let uri = format!("sip:u@{value}");
                    match sipshard_net::Uri::parse(&uri) {
                        Ok(_) if value.contains(':') && !value.contains(['@', ';', '>']) => {
                            contact = Some(value.clone())
                        }
                        _ => return Err(bad()),
                    }
                }
                "--body" => body = value.clone(),
                "--hold-ms" => hold_ms = value.parse().map_err(|_| bad())?,
                "--t1-ms" => t1_ms = value.parse().ok().filter(|&t| t >= 1).ok_or_else(bad)?,
                "--transport" => transport = Transport::parse(value).ok_or_else(bad)?,
                "--tls-ca" => (tls.ca, tls_given) = (Some(value.clone()), true),
                "--ws-path" => {
                    // It goes into the request line as it is.
                    if !value.starts_with('/') || value.contains(|c: char| c.is_whitespace()) {
                        return Err(bad());
                    }
                    ws_path = Some(value.clone());
                }
                "--tls-server-name" => (tls.server_name, tls_given) = (Some(value.clone()), true),
                "--password" => passwords = Passwords::Same(value.clone()),
                "--passwords" => {
                    let text =
                        std::fs::read_to_string(value).map_err(|e| format!("{value}: {e}"))?;
                    passwords =
                        Passwords::parse_file(&text).map_err(|e| format!("{value}: {e}"))?;
                }
                "--hgrm" => hgrm = Some(value.clone()),
                "--json" => json = Some(value.clone()),
                "--server-pid" => cpu::parse_pids(value, &mut server_pids)?,
                other => return Err(format!("unknown option {other}")),
            }
        }
        if users_csv.is_some() && pattern_given {
            return Err("--users-csv replaces --users, --first and --user-count".into());
        }
        if users_csv.is_some() && !passwords.is_none() {
            return Err("with --users-csv the passwords are the file's".into());
        }
        // A CSV's passwords: a registrar challenges every REGISTER; with message and call they
        // make the users the callers (whose identity a proxy authenticates).
        if users_csv
            .as_ref()
            .is_some_and(|u| command == "register" || u.any_password())
        {
            passwords = Passwords::Listed;
        }
        let from_users = !passwords.is_none();
        let users = || match &users_csv {
            Some(listed) => Ok(listed.clone()),
            None => UserPattern::parse(&users, first, user_count).map(Users::from),
        };
        let scenario = match command {
            "options" => Scenario::Options,
            "register" => Scenario::Register {
                users: users()?,
                expires,
                contact,
            },
            "message" => {
                if body.len() > MAX_BODY {
                    return Err(format!("--body: at most {MAX_BODY} bytes"));
                }
                Scenario::Message {
                    users: users()?,
                    body,
                    from_users,
                }
            }
            "call" => Scenario::Call {
                users: users()?,
                hold_ms,
                from_users,
            },
            other => return Err(format!("unknown scenario {other}")),
        };
        let ramp = match (ramp_from, ramp_secs) {
            (None, 0.0) => None,
            (Some(from), secs) if secs > 0.0 => Some(Ramp { from, secs }),
            _ => return Err("--ramp-from and --ramp-secs (> 0) go together".into()),
        };
        let (rate, duration) = match &steps {
            None => (
                rate.ok_or("--rate is required")?,
                duration.unwrap_or(Duration::from_secs(10)),
            ),
            Some(steps) => {
                if rate.is_some() || ramp.is_some() || search {
                    return Err(
                        "--steps replaces --rate and a ramp, and is not for --search".into(),
                    );
                }
                let total: f64 = steps.iter().map(|s: &Step| s.secs).sum();
                let last = steps.last().map_or(0.0, |s| s.rate);
                let total = Duration::try_from_secs_f64(total).map_err(|e| e.to_string())?;
                (last, duration.unwrap_or(total))
            }
        };
        if !passwords.is_none() && !matches!(command, "register" | "message" | "call") {
            return Err("--password and --passwords are for register, message and call".into());
        }
        if tls_given && !transport.secure() {
            return Err("--tls-* options go with --transport tls or wss".into());
        }
        if ws_path.is_some() && !transport.websocket() {
            return Err("--ws-path goes with --transport ws or wss".into());
        }
        if connection_per_request && (!transport.reliable() || command == "call") {
            return Err(
                "--connection-per-request is for a stream transport (tcp, tls, ws, wss), not for \
                 call"
                    .into(),
            );
        }
        if local.is_unspecified() {
            return Err("--local must be an address peers can answer (it goes into Via)".into());
        }
        Ok(Options {
            scenario,
            ramp,
            target: target.ok_or("--target is required")?,
            rate,
            steps,
            count,
            duration,
            threads,
            local,
            domain,
            t1_ms,
            hgrm,
            json,
            search,
            passwords,
            transport,
            connection_per_request,
            tls,
            ws_path: ws_path.unwrap_or_else(|| "/".to_owned()),
            server_pids,
        })
    }
}

/// What one shard hands back.
struct ShardResult {
    counts: Counts,
    corrected: Histogram<u64>,
    uncorrected: Histogram<u64>,
    /// Time of the shard's last first transmission and last final response.
    last_send: u64,
    last_final: u64,
    send_errors: u64,
    /// Final responses by status.
    statuses: BTreeMap<u16, u64>,
    /// `call`: the BYEs' counts and latencies, ACKs sent, 2xx without a usable dialog.
    calls: CallResults,
    /// What the shard's connections did (TCP, TLS).
    conns: ConnStats,
}

/// What the `call` scenario adds to a run's results.
struct CallResults {
    bye: Counts,
    bye_corrected: Histogram<u64>,
    bye_uncorrected: Histogram<u64>,
    acks: u64,
    /// 2xx responses lacking a To tag or a Contact: the call cannot go on (no BYE).
    no_dialog: u64,
}

impl CallResults {
    fn new() -> CallResults {
        CallResults {
            bye: Counts::default(),
            bye_corrected: report::new_histogram(),
            bye_uncorrected: report::new_histogram(),
            acks: 0,
            no_dialog: 0,
        }
    }

    fn add(&mut self, other: &CallResults) -> Result<(), String> {
        self.bye.add(&other.bye);
        self.bye_corrected
            .add(&other.bye_corrected)
            .map_err(|e| format!("{e:?}"))?;
        self.bye_uncorrected
            .add(&other.bye_uncorrected)
            .map_err(|e| format!("{e:?}"))?;
        self.acks += other.acks;
        self.no_dialog += other.no_dialog;
        Ok(())
    }
}

/// One second of one shard: its index, what was counted in it, the latencies that ended in it.
type SecondReport = (u64, Counts, Histogram<u32>);

/// Live counters a shard publishes for the progress line.
struct Progress {
    /// The corrected latencies so far (added every 100 ms).
    latency: Mutex<Histogram<u64>>,
    sent: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
    retransmissions: AtomicU64,
    done: AtomicBool,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            latency: Mutex::new(report::new_histogram()),
            sent: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            retransmissions: AtomicU64::new(0),
            done: AtomicBool::new(false),
        }
    }

    /// Moves `recent`'s latencies into the shared histogram.
    fn publish_latency(&self, recent: &mut Histogram<u64>) {
        let mut shared = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        // Both have the same bounds: adding cannot fail.
        let _ = shared.add(&*recent);
        recent.reset();
    }

    fn publish(&self, c: &Counts) {
        self.sent.store(c.sent, Ordering::Relaxed);
        self.ok.store(c.ok, Ordering::Relaxed);
        self.failed.store(c.failed, Ordering::Relaxed);
        self.timed_out.store(c.timed_out, Ordering::Relaxed);
        self.retransmissions
            .store(c.retransmissions, Ordering::Relaxed);
    }
}

/// One run's outcome: whether it was clean (for `--search`), whether every request got a 2xx,
/// its JSON summary and its corrected latencies.
struct Measured {
    clean: bool,
    all_ok: bool,
    summary: serde_json::Value,
    corrected: Histogram<u64>,
}

/// Runs the load (or the search); returns whether every request got a 2xx.
pub fn run(options: &Options) -> Result<bool, String> {
    if options.search {
        return search(options);
    }
    let m = measure(options)?;
    write_files(options, &m.summary, &m.corrected)?;
    Ok(m.all_ok)
}

fn write_files(
    options: &Options,
    summary: &serde_json::Value,
    corrected: &Histogram<u64>,
) -> Result<(), String> {
    if let Some(path) = &options.hgrm {
        std::fs::write(path, report::hgrm(corrected, 1e6)).map_err(|e| format!("{path}: {e}"))?;
    }
    if let Some(path) = &options.json {
        let text = serde_json::to_string_pretty(summary).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(())
}

/// `R:S,R:S,...`: rates and seconds, at most [`MAX_STEPS`] (the schedule checks the values).
fn parse_steps(value: &str) -> Option<Vec<Step>> {
    let steps = value
        .split(',')
        .map(|step| {
            let (rate, secs) = step.split_once(':')?;
            Some(Step {
                rate: rate.trim().parse().ok()?,
                secs: secs.trim().parse().ok()?,
            })
        })
        .collect::<Option<Vec<Step>>>()?;
    (steps.len() <= MAX_STEPS).then_some(steps)
}

/// Probes at most this many rates.
const SEARCH_PROBES: usize = 10;

/// `--search`: the highest rate up to `--rate` with no failure, no timeout, no retransmission and
/// at least 97% of the offered rate achieved (bisection, to 2%), then runs at 50% and 90% of it.
/// The JSON summary holds the probes and both runs; the .hgrm file is the 90% run's.
fn search(options: &Options) -> Result<bool, String> {
    let (mut lo, mut hi) = (0.0f64, options.rate);
    let mut rate = options.rate;
    let mut probes = Vec::new();
    for _ in 0..SEARCH_PROBES {
        println!("search: probing {rate:.1}/s");
        let m = measure(&Options {
            rate,
            ..options.clone()
        })?;
        println!(
            "search: {rate:.1}/s is {}",
            if m.clean { "clean" } else { "not clean" }
        );
        probes.push(serde_json::json!({ "rate": rate, "clean": m.clean, "run": m.summary }));
        if m.clean {
            lo = rate;
        } else {
            hi = rate;
        }
        match next_probe(lo, hi, options.rate) {
            Some(next) => rate = next,
            None => break,
        }
    }
    let mut summary = serde_json::json!({ "search": { "best": null, "probes": probes } });
    if lo == 0.0 {
        println!("search: no clean rate found up to {:.1}/s", options.rate);
        write_files(options, &summary, &report::new_histogram())?;
        return Ok(false);
    }
    println!("search: highest clean rate {lo:.1}/s; measuring at 50% and 90% of it");
    summary["search"]["best"] = serde_json::json!(lo);
    let half = measure(&Options {
        rate: lo * 0.5,
        ..options.clone()
    })?;
    let ninety = measure(&Options {
        rate: lo * 0.9,
        ..options.clone()
    })?;
    summary["at_50"] = half.summary;
    summary["at_90"] = ninety.summary;
    write_files(options, &summary, &ninety.corrected)?;
    Ok(half.all_ok && ninety.all_ok)
}

/// The search's next rate, given the highest clean rate so far (`lo`, 0 if none), the lowest
/// unclean one (`hi`, or the maximum while none) and the maximum; `None` when the search is done:
/// the maximum is clean, or `lo` is within 2% of `hi`, or the rate would be below 0.001/s.
fn next_probe(lo: f64, hi: f64, max: f64) -> Option<f64> {
    if lo >= max || hi - lo <= 0.02 * hi {
        return None;
    }
    let next = if lo == 0.0 { hi / 2.0 } else { (lo + hi) / 2.0 };
    (next >= 0.001).then_some(next)
}

/// One run: prints its report and returns what it measured.
fn measure(options: &Options) -> Result<Measured, String> {
    let schedule = match &options.steps {
        Some(steps) => Schedule::with_steps(steps, options.count, options.duration)?,
        None => Schedule::with_ramp(options.rate, options.ramp, options.count, options.duration)?,
    };
    let timers = Timers {
        t1: options.t1_ms * 1_000_000,
        t2: options.t1_ms * 8_000_000,
    };
    let run_id = std::process::id()
        ^ (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()));
    let sockets = connect(options, timers)?;
    let progress: Arc<Vec<Progress>> =
        Arc::new((0..options.threads).map(|_| Progress::new()).collect());
    let (seconds_tx, seconds) = mpsc::channel::<SecondReport>();
    let mut timeline = report::Timeline::new(options.threads);
    let cpu_at_start = cpu::Snapshot::take(&options.server_pids);
    let start = Instant::now();
    let mut handles = Vec::new();
    for (k, socket) in sockets.into_iter().enumerate() {
        let options = options.clone();
        let progress = Arc::clone(&progress);
        let seconds_tx = seconds_tx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("load-{k}"))
            .spawn(move || {
                // Marks the shard done however it ends (a panic too), so the progress loop ends.
                struct Done<'a>(&'a AtomicBool);
                impl Drop for Done<'_> {
                    fn drop(&mut self) {
                        self.0.store(true, Ordering::Release);
                    }
                }
                let _done = Done(&progress[k].done);
                shard(
                    &options,
                    schedule,
                    timers,
                    run_id,
                    k as u64,
                    socket,
                    start,
                    &progress[k],
                    &seconds_tx,
                )
            })
            .map_err(|e| e.to_string())?;
        handles.push(handle);
    }
    drop(seconds_tx);

    // One progress line a second until every shard is done; on a terminal, a progress bar
    // under them, redrawn four times a second.
    let mut last = (0u64, 0u64);
    let mut tick = 1u64;
    let mut so_far = report::new_histogram();
    let terminal = std::io::stderr().is_terminal();
    let mut bar_drawn = Instant::now();
    let schedule_end_s = schedule
        .total()
        .checked_sub(1)
        .and_then(|j| schedule.intended(j))
        .map_or(0.0, |ns| ns as f64 / 1e9);
    let sum = |f: fn(&Progress) -> &AtomicU64| -> u64 {
        progress.iter().map(|p| f(p).load(Ordering::Relaxed)).sum()
    };
    while !progress.iter().all(|p| p.done.load(Ordering::Acquire)) {
        for (index, counts, latency) in seconds.try_iter() {
            timeline.add(index, &counts, &latency);
        }
        if terminal && bar_drawn.elapsed() >= Duration::from_millis(250) {
            let ended = sum(|p| &p.ok) + sum(|p| &p.failed) + sum(|p| &p.timed_out);
            let bar = progress_bar(
                sum(|p| &p.sent),
                ended,
                schedule.total(),
                schedule_end_s - start.elapsed().as_secs_f64(),
            );
            eprint!("\r\x1b[K{bar}");
            bar_drawn = Instant::now();
        }
        let next = start + Duration::from_secs(tick);
        let now = Instant::now();
        if next > now {
            std::thread::sleep((next - now).min(Duration::from_millis(20)));
            continue;
        }
        if terminal {
            // The line goes where the bar was; the bar is drawn again under it.
            eprint!("\r\x1b[K");
            bar_drawn -= Duration::from_secs(1);
        }
        let sent = sum(|p| &p.sent);
        let ok = sum(|p| &p.ok);
        let failed = sum(|p| &p.failed);
        let finals = ok + failed;
        so_far.reset();
        for p in progress.iter() {
            let shard = p.latency.lock().unwrap_or_else(|e| e.into_inner());
            let _ = so_far.add(&*shard);
        }
        let [p50, _, p99, _, _] = report::percentiles(&so_far);
        eprintln!(
            "{tick:>4}s  sent {:>8}/s  answered {:>8}/s  ok {ok}  failed {failed}  timed out {}  retransmitted {}  p50 {:.3} ms  p99 {:.3} ms",
            sent - last.0,
            finals - last.1,
            sum(|p| &p.timed_out),
            sum(|p| &p.retransmissions),
            p50 as f64 / 1e6,
            p99 as f64 / 1e6,
        );
        last = (sent, finals);
        tick += 1;
    }
    if terminal {
        eprint!("\r\x1b[K");
    }

    let mut counts = Counts::default();
    let mut corrected = report::new_histogram();
    let mut uncorrected = report::new_histogram();
    let (mut last_send, mut last_final, mut send_errors) = (0, 0, 0);
    let mut statuses = BTreeMap::new();
    let mut calls = CallResults::new();
    let mut conns = ConnStats::default();
    for h in handles {
        let r = h.join().map_err(|_| "a shard panicked".to_string())??;
        counts.add(&r.counts);
        corrected.add(&r.corrected).map_err(|e| format!("{e:?}"))?;
        uncorrected
            .add(&r.uncorrected)
            .map_err(|e| format!("{e:?}"))?;
        last_send = last_send.max(r.last_send);
        last_final = last_final.max(r.last_final);
        send_errors += r.send_errors;
        for (status, n) in r.statuses {
            *statuses.entry(status).or_insert(0) += n;
        }
        calls.add(&r.calls)?;
        conns.add(&r.conns);
    }
    let is_call = matches!(options.scenario, Scenario::Call { .. });
    let elapsed = start.elapsed();
    let cpu_at_end = cpu::Snapshot::take(&options.server_pids);
    // Every shard has ended: its sender is gone and what it sent is waiting.
    for (index, counts, latency) in seconds.try_iter() {
        timeline.add(index, &counts, &latency);
    }

    // Rates are counts over the time from the start to the last event plus one period (so n
    // requests exactly on a schedule of rate r give r). Offered: the schedule's requests over its
    // intended times; achieved: first transmissions over their actual times; answered: final
    // responses over their arrival times.
    let period = 1e9 / schedule.rate();
    let achieved = if counts.sent == 0 {
        0.0
    } else {
        counts.sent as f64 * 1e9 / (last_send as f64 + period)
    };
    // With a ramp the mean offered rate is lower than the final one: the same formula over the
    // intended times.
    let offered_mean = match schedule
        .total()
        .checked_sub(1)
        .and_then(|j| schedule.intended(j))
    {
        Some(last) => schedule.total() as f64 * 1e9 / (last as f64 + period),
        None => 0.0,
    };
    let answered = if last_final == 0 {
        0.0
    } else {
        (counts.ok + counts.failed) as f64 * 1e9 / (last_final as f64 + period)
    };

    println!(
        "{} to {}: offered {:.1}/s, achieved {:.1}/s, answered {:.1}/s over {:.3} s",
        options.scenario.name(),
        options.target,
        offered_mean,
        achieved,
        answered,
        elapsed.as_secs_f64()
    );
    println!(
        "sent {}  ok {}  failed {}  timed out {}  retransmissions {}  provisional {}  late {}  unexpected {}  challenged {}  send errors {}",
        counts.sent,
        counts.ok,
        counts.failed,
        counts.timed_out,
        counts.retransmissions,
        counts.provisional,
        counts.late,
        counts.unexpected,
        counts.challenged,
        send_errors
    );
    let by_status: Vec<String> = statuses.iter().map(|(s, n)| format!("{s}: {n}")).collect();
    println!(
        "final responses by status: {}",
        if by_status.is_empty() {
            "none".to_owned()
        } else {
            by_status.join(", ")
        }
    );
    // Connections (and handshakes) per second over the same span as the achieved rate.
    let per_second = |n: u64| {
        if n == 0 {
            0.0
        } else {
            n as f64 * 1e9 / (last_send as f64 + period)
        }
    };
    if options.transport.reliable() {
        println!(
            "connections: opened {} ({:.1}/s)  TLS handshakes {} (resumed {})  failed {}  closed by peer {}",
            conns.opened,
            per_second(conns.opened),
            conns.handshakes,
            conns.resumed,
            conns.failed,
            conns.closed_by_peer
        );
    }
    if is_call {
        let b = &calls.bye;
        println!(
            "BYE: sent {}  ok {}  failed {}  timed out {}  retransmissions {}  late {}  challenged {}; ACKs sent {}; 2xx without a dialog {}",
            b.sent,
            b.ok,
            b.failed,
            b.timed_out,
            b.retransmissions,
            b.late,
            b.challenged,
            calls.acks,
            calls.no_dialog
        );
        print!(
            "{}",
            report::table(&[
                ("INVITE from intended (corr.)", &corrected),
                ("INVITE from actual (uncorr.)", &uncorrected),
                ("BYE from due time (corr.)", &calls.bye_corrected),
                ("BYE from actual (uncorr.)", &calls.bye_uncorrected),
            ])
        );
    } else {
        print!(
            "{}",
            report::table(&[
                ("from intended send (corr.)", &corrected),
                ("from actual send (uncorr.)", &uncorrected)
            ])
        );
    }
    let server_cpu_s = cpu_at_start.server_s(&cpu_at_end);
    if let Some(seconds) = server_cpu_s {
        println!(
            "server CPU: {seconds:.3} s ({:.2} ms per 1,000 answered with a 2xx)",
            seconds * 1e6 / counts.ok.max(1) as f64
        );
    } else if !options.server_pids.is_empty() {
        println!("server CPU: unknown (a --server-pid process could not be read at the end)");
    }

    let mut summary = serde_json::json!({
        "scenario": options.scenario.name(),
        "target": options.target.to_string(),
        "transport": options.transport.name(),
        "rate": {
            "offered": offered_mean,
            "achieved": achieved,
            "answered": answered,
            "final": schedule.rate(),
        },
        "counts": {
            "sent": counts.sent,
            "ok": counts.ok,
            "failed": counts.failed,
            "timed_out": counts.timed_out,
            "retransmissions": counts.retransmissions,
            "provisional": counts.provisional,
            "late": counts.late,
            "unexpected": counts.unexpected,
            "challenged": counts.challenged,
            "send_errors": send_errors,
        },
        "statuses": statuses.iter().map(|(s, n)| (s.to_string(), serde_json::json!(n))).collect::<serde_json::Map<_, _>>(),
        "latency_ms": {
            "corrected": report::percentiles_json(&corrected),
            "uncorrected": report::percentiles_json(&uncorrected),
        },
        "elapsed_s": elapsed.as_secs_f64(),
        "timeline": timeline.finish(elapsed.as_secs_f64()),
        "cpu_s": cpu_at_start.generator_json(&cpu_at_end),
        "server_cpu_s": server_cpu_s,
        "settings": {
            "rate": options.rate,
            "ramp": options.ramp.map(|r| serde_json::json!({ "from": r.from, "secs": r.secs })),
            "steps": options.steps.as_ref().map(|steps| {
                steps
                    .iter()
                    .map(|s| serde_json::json!({ "rate": s.rate, "secs": s.secs }))
                    .collect::<Vec<_>>()
            }),
            "count": (options.count != u64::MAX).then_some(options.count),
            "duration_s": options.duration.as_secs_f64(),
            "threads": options.threads,
            "t1_ms": options.t1_ms,
            "local": options.local.to_string(),
            "requests_scheduled": schedule.total(),
            "connection_per_request": options.connection_per_request,
        },
    });
    if let Scenario::Register { users, .. }
    | Scenario::Message { users, .. }
    | Scenario::Call { users, .. } = &options.scenario
    {
        let from = match users {
            Users::Pattern(_) => "pattern",
            Users::Listed(_) => "csv",
        };
        summary["settings"]["users"] = serde_json::json!({ "count": users.count(), "from": from });
    }
    if options.transport.reliable() {
        summary["connections"] = serde_json::json!({
            "opened": conns.opened,
            "opened_per_s": per_second(conns.opened),
            "tls_handshakes": conns.handshakes,
            "tls_resumed": conns.resumed,
            "failed": conns.failed,
            "closed_by_peer": conns.closed_by_peer,
        });
    }
    if options.transport.websocket() {
        summary["settings"]["ws_path"] = serde_json::json!(options.ws_path);
    }
    if options.transport.secure() {
        let tls = &options.tls;
        summary["settings"]["tls"] = serde_json::json!({
            "ca": tls.ca,
            "insecure": tls.insecure,
            "server_name": tls.server_name,
            "resumption": tls.resumption,
        });
    }
    let b = &calls.bye;
    if is_call {
        summary["bye"] = serde_json::json!({
            "counts": {
                "sent": b.sent,
                "ok": b.ok,
                "failed": b.failed,
                "timed_out": b.timed_out,
                "retransmissions": b.retransmissions,
                "late": b.late,
                "unexpected": b.unexpected,
                "challenged": b.challenged,
            },
            "latency_ms": {
                "corrected": report::percentiles_json(&calls.bye_corrected),
                "uncorrected": report::percentiles_json(&calls.bye_uncorrected),
            },
        });
        summary["calls"] = serde_json::json!({ "acks": calls.acks, "no_dialog": calls.no_dialog });
        summary["settings"]["hold_ms"] = match &options.scenario {
            Scenario::Call { hold_ms, .. } => serde_json::json!(hold_ms),
            _ => serde_json::Value::Null,
        };
    }
    // Every BYE sent for each 2xx, and none failed (always true outside `call`).
    let byes_ok = !is_call || (b.sent == counts.ok && b.ok == b.sent);
    let clean = counts.sent > 0
        && counts.failed == 0
        && counts.timed_out == 0
        && counts.retransmissions == 0
        && b.failed + b.timed_out + b.retransmissions == 0
        && byes_ok
        && achieved >= 0.97 * offered_mean;
    Ok(Measured {
        clean,
        all_ok: counts.sent > 0 && counts.ok == counts.sent && byes_ok,
        summary,
        corrected,
    })
}

/// Each shard's socket or connection: established (connected, TLS handshake done) before the
/// run starts, so that a refused connection or an untrusted certificate stops the run with the
/// reason instead of timing every request out. With a connection per request one connection is
/// made (and closed) to check that, and each shard may keep as many open as its share of the
/// file descriptor limit.
fn connect(options: &Options, timers: Timers) -> Result<Vec<Conn>, String> {
    let target = options.target;
    let local = options.local;
    let transport = options.transport;
    let tls = if transport.secure() {
        Some(options.tls.client(target)?)
    } else {
        None
    };
    let websocket = transport.websocket().then(|| WsTarget {
        host: options
            .tls
            .server_name
            .clone()
            .unwrap_or_else(|| target.to_string()),
        path: options.ws_path.clone(),
    });
    let layers = Layers { tls, websocket };
    let failed = |e: std::io::Error| {
        format!(
            "connect to {target} over {} from {local}: {e}",
            transport.via()
        )
    };
    if transport == Transport::Udp {
        return (0..options.threads)
            .map(|_| {
                let socket = UdpSocket::bind(SocketAddr::new(local, 0))
                    .map_err(|e| format!("bind {local}: {e}"))?;
                socket.set_nonblocking(true).map_err(|e| e.to_string())?;
                set_buffers(&socket);
                Ok(Conn::udp(socket, target))
            })
            .collect();
    }
    if !options.connection_per_request {
        return (0..options.threads)
            .map(|_| Conn::stream(target, local, &layers).map_err(failed))
            .collect();
    }
    drop(Conn::stream(target, local, &layers).map_err(failed)?);
    let limit = (raise_descriptor_limit().saturating_sub(64) / options.threads).max(1) as usize;
    let lifetime = Duration::from_nanos(timers.timeout());
    (0..options.threads)
        .map(|_| {
            Conn::per_request(target, local, layers.clone(), limit, lifetime)
                .map_err(|e| format!("epoll: {e}"))
        })
        .collect()
}

/// Raises this process's soft limit on open files to the hard limit (connections per request
/// need one each); returns the limit now in force.
fn raise_descriptor_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct; failure leaves the limit as it was.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                ..limit
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
        limit.rlim_cur
    }
}

/// The progress bar of a run on a terminal: how much of the schedule was sent, and how long the
/// schedule has left to run (exact: an open-loop run sends on time or catches up), or, once all
/// is sent, how many requests still wait for their end.
fn progress_bar(sent: u64, ended: u64, total: u64, left_s: f64) -> String {
    const WIDTH: u64 = 30;
    let filled = (sent.min(total) * WIDTH)
        .checked_div(total)
        .unwrap_or(WIDTH);
    let percent = (sent * 100).checked_div(total).unwrap_or(100);
    let bar: String = (0..WIDTH)
        .map(|i| if i < filled { '#' } else { '-' })
        .collect();
    let tail = if sent < total {
        format!("{:.1} s left", left_s.max(0.0))
    } else {
        format!("waiting for {}", sent.saturating_sub(ended))
    };
    format!("[{bar}] {percent:>3}%  {sent}/{total} sent  {tail}")
}

/// Below this, a shard polls instead of sleeping (a sleep and wake-up costs about this much).
const SPIN_NS: u64 = 40_000;

fn now_ns(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Asks for 4 MiB socket buffers (the kernel caps them at `net.core.rmem_max`/`wmem_max`): the
/// default 208 KiB overflows at a few tens of thousands of datagrams per second whenever a thread
/// is descheduled for a moment, and each overflow costs a retransmission.
pub fn set_buffers(socket: &UdpSocket) {
    let size: libc::c_int = 4 << 20;
    for option in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: a valid socket, an int option value of the right size. Failure leaves the
        // default size, which is only slower.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn shard(
    options: &Options,
    schedule: Schedule,
    timers: Timers,
    run_id: u32,
    k: u64,
    socket: Conn,
    start: Instant,
    progress: &Progress,
    seconds: &mpsc::Sender<SecondReport>,
) -> Result<ShardResult, String> {
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    // Wake-ups for the schedule as precise as the kernel allows (the default slack is 50 µs).
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and affects only this thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
    let ends = Endpoints {
        transport: socket.transport(),
        local,
        target: options.target,
        domain: options
            .domain
            .clone()
            .unwrap_or_else(|| match options.target.ip() {
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                ip => ip.to_string(),
            }),
    };
    let (is_call, hold_ms) = match options.scenario {
        Scenario::Call { hold_ms, .. } => (true, hold_ms),
        _ => (false, 0),
    };
    let mut client = Client::with_kind(run_id, "", is_call, timers);
    // Requests resent with credentials after a challenge (branches of kind `a`).
    let mut authed = Client::with_kind(run_id, "a", is_call, timers);
    let reliable = socket.transport().reliable();
    if reliable {
        client = client.over_reliable_transport();
        authed = authed.over_reliable_transport();
    }
    let both = |client: &Client, authed: &Client| client.counts().with_resent(authed.counts());
    let mut calls = Calls::new(run_id, hold_ms, timers, reliable);
    let mut cursor = schedule.shard(k, options.threads);
    let mut corrected = report::new_histogram();
    let mut uncorrected = report::new_histogram();
    let mut buf = vec![0u8; 65535];
    let mut statuses = BTreeMap::new();
    let (mut last_send, mut last_final, mut send_errors) = (0, 0, 0u64);
    let mut recent = report::new_histogram();
    let mut latency_published = Instant::now();
    let mut published = Instant::now();
    // The second being counted, the counts when it began and its latencies.
    let mut second = (0u64, Counts::default(), report::new_second_histogram());
    loop {
        // Hand in the seconds that have ended (each one, even an idle one: the timeline has no
        // gaps). A closed channel means the run is being torn down: nothing to report to.
        let now_second = now_ns(start) / 1_000_000_000;
        while second.0 < now_second {
            let counts = both(&client, &authed);
            let latency = std::mem::replace(&mut second.2, report::new_second_histogram());
            let _ = seconds.send((second.0, counts.since(&second.1), latency));
            second = (second.0 + 1, counts, second.2);
        }
        let mut busy = false;
        // Send what is due, a bounded batch at a time so that receiving keeps up.
        for _ in 0..64 {
            let now = now_ns(start);
            let Some((j, intended)) = cursor.next_due(&schedule, now) else {
                break;
            };
            let mut request = Vec::with_capacity(512);
            // With a connection per request, Via and Contact name that connection's address.
            let fresh = socket.open_next().ok().flatten().map(|local| Endpoints {
                local,
                ..ends.clone()
            });
            let ends_j = fresh.as_ref().unwrap_or(&ends);
            write_request(
                &mut request,
                &options.scenario,
                ends_j,
                j,
                &client.branch(j),
            );
            let now = now_ns(start);
            if socket.send(&request).is_err() {
                // Lost like a dropped datagram: Timer E retransmits it.
                send_errors += 1;
            }
            client.sent(j, intended, now, request);
            last_send = now;
            busy = true;
        }
        // Receive everything waiting.
        for _ in 0..256 {
            match socket.recv(&mut buf) {
                Ok(len) => {
                    let now = now_ns(start);
                    let datagram = &buf[..len];
                    busy = true;
                    let mut send = |b: &[u8]| {
                        if socket.send(b).is_err() {
                            send_errors += 1;
                        }
                    };
                    if is_call && calls.claims(datagram) {
                        calls.received(
                            &ends,
                            datagram,
                            now,
                            |j| cursor.issued(j),
                            |j, method, uri, challenge| {
                                let cnonce = format!("{run_id:08x}b{j:x}{now:x}");
                                authorization(options, j, method, uri, challenge, &cnonce)
                            },
                            send,
                        );
                        continue;
                    }
                    // The outcome of a request resent with credentials (a challenge to it again
                    // is a failure).
                    if !options.passwords.is_none() && authed.claims(datagram) {
                        match authed.received(datagram, now, |j| cursor.issued(j)) {
                            Received::Final(done) => {
                                report::record(&mut corrected, done.latency);
                                report::record(&mut recent, done.latency);
                                report::record(&mut uncorrected, done.service_time);
                                second.2.saturating_record(done.latency.max(1));
                                last_final = now;
                                *statuses.entry(done.status).or_insert(0) += 1;
                                if is_call {
                                    calls.invite_ended(
                                        &options.scenario,
                                        &ends,
                                        done.j,
                                        datagram,
                                        true,
                                        now,
                                        &mut send,
                                    );
                                }
                            }
                            Received::Late { j, status } if is_call && status >= 200 => {
                                calls.invite_ended(
                                    &options.scenario,
                                    &ends,
                                    j,
                                    datagram,
                                    false,
                                    now,
                                    &mut send,
                                );
                            }
                            _ => {}
                        }
                        continue;
                    }
                    match client.received(datagram, now, |j| cursor.issued(j)) {
                        Received::Final(done) => {
                            let resend = matches!(done.status, 401 | 407)
                                .then(|| {
                                    with_credentials(
                                        options,
                                        &ends,
                                        &socket,
                                        &client.branch(done.j),
                                        &authed.branch(done.j),
                                        datagram,
                                        done.j,
                                        &format!("{run_id:08x}{:x}{now:x}", done.j),
                                    )
                                })
                                .flatten();
                            if is_call {
                                // The INVITE's final response, a challenge too, is ACKed
                                // (§17.1.1.3) before anything else is sent for the call.
                                calls.invite_ended(
                                    &options.scenario,
                                    &ends,
                                    done.j,
                                    datagram,
                                    resend.is_none(),
                                    now,
                                    &mut send,
                                );
                            }
                            if let Some(request) = resend {
                                send(&request);
                                client.challenged();
                                let intended = now.saturating_sub(done.latency);
                                let origin = now.saturating_sub(done.service_time);
                                authed.resent(done.j, intended, origin, now, request);
                                continue;
                            }
                            report::record(&mut corrected, done.latency);
                            report::record(&mut recent, done.latency);
                            report::record(&mut uncorrected, done.service_time);
                            second.2.saturating_record(done.latency.max(1));
                            last_final = now;
                            *statuses.entry(done.status).or_insert(0) += 1;
                        }
                        // A retransmitted final response to an INVITE (a challenge too) is ACKed
                        // again.
                        Received::Late { j, status } if is_call && status >= 200 => {
                            calls.invite_ended(
                                &options.scenario,
                                &ends,
                                j,
                                datagram,
                                false,
                                now,
                                &mut send,
                            );
                        }
                        _ => {}
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // ICMP port unreachable and the like: the transaction times out or retries.
                Err(_) => {}
            }
        }
        let now = now_ns(start);
        let mut send = |request: &[u8]| {
            if socket.send(request).is_err() {
                send_errors += 1;
            }
        };
        client.poll(now, &mut send);
        authed.poll(now, &mut send);
        if is_call {
            calls.send_due(&ends, now, &mut send);
            calls.poll(now, &mut send);
        }
        if socket.pending_output() && socket.flush().is_err() {
            send_errors += 1;
        }
        if published.elapsed() >= Duration::from_millis(10) {
            progress.publish(&both(&client, &authed));
            published = Instant::now();
        }
        if latency_published.elapsed() >= Duration::from_millis(100) {
            progress.publish_latency(&mut recent);
            latency_published = Instant::now();
        }
        let next_send = cursor.next_time(&schedule);
        if next_send.is_none()
            && client.outstanding() == 0
            && authed.outstanding() == 0
            && calls.outstanding() == 0
        {
            break;
        }
        if !busy {
            let next = [
                next_send,
                client.next_timer(),
                authed.next_timer(),
                calls.next_timer(),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(u64::MAX);
            let now = now_ns(start);
            // Sleep when the next event is far enough away for a wake-up to be on time; closer
            // than that, poll the socket again (at high rates the shard never sleeps).
            if next > now + SPIN_NS {
                socket.wait((next - now - SPIN_NS / 2).min(10_000_000));
            }
        }
    }
    let counts = both(&client, &authed);
    progress.publish(&counts);
    let _ = seconds.send((second.0, counts.since(&second.1), second.2));
    Ok(ShardResult {
        conns: socket.stats(),
        calls: CallResults {
            bye: calls.bye_counts(),
            acks: calls.acks,
            no_dialog: calls.no_dialog,
            bye_corrected: calls.bye_corrected,
            bye_uncorrected: calls.bye_uncorrected,
        },
        counts,
        corrected,
        uncorrected,
        last_send,
        last_final,
        send_errors,
        statuses,
    })
}

/// The credentials answering `challenge` (a 401 or 407) for request `j` of the run, a `method`
/// to `uri`: its caller's (`scenario::caller`), when the caller has a password and the
/// challenge is one that `digest` answers. The header's name and value.
fn authorization(
    options: &Options,
    j: u64,
    method: &str,
    uri: &str,
    challenge: &sipshard_net::Message<'_>,
    cnonce: &str,
) -> Option<(&'static str, String)> {
    let (user, k) = caller(&options.scenario, j)?;
    let password = options.passwords.get(options.scenario.users()?, k, &user)?;
    let challenge = digest::strongest_challenge(challenge)?;
    let credentials = digest::Credentials {
        username: &user,
        password,
        method,
        uri,
    };
    Some(challenge.answer(&credentials, cnonce))
}

/// Request `j` (first sent with `first_branch`) again with credentials answering `response`,
/// with branch `branch` (RFC 3261 §22.2: same Call-ID, CSeq 2), if there are credentials to
/// give: see `authorization`.
#[allow(clippy::too_many_arguments)]
fn with_credentials(
    options: &Options,
    ends: &Endpoints,
    conn: &Conn,
    first_branch: &str,
    branch: &str,
    response: &[u8],
    j: u64,
    cnonce: &str,
) -> Option<Vec<u8>> {
    let challenge = sipshard_net::Message::parse_datagram(response).ok()?;
    let scenario = &options.scenario;
    let uri = request_uri(scenario, ends, j);
    let (header, value) = authorization(options, j, scenario.method(), &uri, &challenge, cnonce)?;
    let mut request = Vec::with_capacity(1024);
    // With a connection per request it goes on a new one, which Via names.
    let fresh = conn.open_next().ok().flatten().map(|local| Endpoints {
        local,
        ..ends.clone()
    });
    write_request_with(
        &mut request,
        scenario,
        fresh.as_ref().unwrap_or(ends),
        j,
        branch,
        &Authenticated::Yes {
            first_branch,
            header,
            value: &value,
        },
    );
    Some(request)
}

#[cfg(test)]
mod tests {
    use super::{Options, next_probe};
    use crate::scenario::Scenario;
    use crate::users::UserPattern;

    fn parse(args: &[&str]) -> Result<Options, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Options::from_args("register", &args)
    }

    #[test]
    fn password_options() {
        let base = ["--target", "127.0.0.1:5060", "--rate", "10"];
        let o = parse(&[&base[..], &["--password", "x"]].concat()).unwrap();
        let users = UserPattern::parse("u%d", 0, 1).unwrap().into();
        assert_eq!(o.passwords.get(&users, 0, "anyone"), Some("x"));
        let args: Vec<String> = [&base[..], &["--password", "x"]]
            .concat()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let e = Options::from_args("options", &args).unwrap_err();
        assert!(e.contains("for register, message and call"), "{e}");
        for command in ["message", "call"] {
            let o = Options::from_args(command, &args).unwrap();
            assert!(
                matches!(o.passwords, super::Passwords::Same(_)),
                "{command}"
            );
        }
        let p = super::Passwords::parse_file("# c\r\nalice:a:b\r\n\nbob:\n").unwrap();
        assert_eq!(
            (
                p.get(&users, 0, "alice"),
                p.get(&users, 0, "bob"),
                p.get(&users, 0, "carol")
            ),
            (Some("a:b"), Some(""), None)
        );
        assert!(super::Passwords::parse_file("alice\n").is_err());
        assert!(super::Passwords::parse_file(":pw\n").is_err());
    }

    #[test]
    fn users_csv_option() {
        let file = std::env::temp_dir().join(format!("users-csv-{}.csv", std::process::id()));
        std::fs::write(&file, "alice,pw\n").unwrap();
        let csv = file.to_str().unwrap();
        let base = [
            "--target",
            "127.0.0.1:5060",
            "--rate",
            "10",
            "--users-csv",
            csv,
        ];
        let o = parse(&base).unwrap();
        assert!(matches!(o.passwords, super::Passwords::Listed));
        assert!(parse(&[&base[..], &["--users", "u%d"]].concat()).is_err());
        assert!(parse(&[&base[..], &["--password", "x"]].concat()).is_err());
        let args: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        // message and call: a CSV with passwords makes its users the callers.
        let from_users = |o: &Options| match &o.scenario {
            Scenario::Message { from_users, .. } | Scenario::Call { from_users, .. } => *from_users,
            _ => false,
        };
        for command in ["message", "call"] {
            let o = Options::from_args(command, &args).unwrap();
            assert!(matches!(o.passwords, super::Passwords::Listed));
            assert!(from_users(&o), "{command}");
        }
        std::fs::write(&file, "alice,\nbob,\n").unwrap();
        let o = Options::from_args("message", &args).unwrap();
        assert!(o.passwords.is_none());
        assert!(!from_users(&o));
        std::fs::write(&file, "alice\n").unwrap();
        let e = parse(&base).unwrap_err();
        assert!(e.contains("line 1: not user,password[,domain]"), "{e}");
        let _ = std::fs::remove_file(&file);
    }

    #[test]
    fn the_progress_bar_shows_the_share_sent_and_the_time_left() {
        assert_eq!(
            super::progress_bar(250, 200, 1000, 7.54),
            "[#######-----------------------]  25%  250/1000 sent  7.5 s left"
        );
        assert_eq!(
            super::progress_bar(1000, 988, 1000, -0.2),
            "[##############################] 100%  1000/1000 sent  waiting for 12"
        );
        assert!(super::progress_bar(0, 0, 0, 0.0).starts_with("[######"));
    }

    #[test]
    fn steps_option() {
        let base = ["--target", "127.0.0.1:5060"];
        let o = parse(&[&base[..], &["--steps", "100:2, 200:0.5,50:1"]].concat()).unwrap();
        let steps = o.steps.unwrap();
        assert_eq!(
            steps.iter().map(|s| (s.rate, s.secs)).collect::<Vec<_>>(),
            [(100.0, 2.0), (200.0, 0.5), (50.0, 1.0)]
        );
        assert_eq!((o.rate, o.duration.as_secs_f64()), (50.0, 3.5));
        let o = parse(&[&base[..], &["--steps", "100:2", "--duration", "9"]].concat()).unwrap();
        assert_eq!(o.duration.as_secs(), 9);
        for bad in [
            &["--steps", "100"][..],
            &["--steps", "100:x"],
            &["--steps", ""],
            &["--steps", "1:1", "--rate", "5"],
            &["--steps", "1:1", "--search"],
            &["--steps", "1:1", "--ramp-from", "1", "--ramp-secs", "1"],
        ] {
            assert!(parse(&[&base[..], bad].concat()).is_err(), "{bad:?}");
        }
        let many = vec!["1:1"; 17].join(",");
        assert!(parse(&[&base[..], &["--steps", &many]].concat()).is_err());
    }

    #[test]
    fn contact_option() {
        let base = ["--target", "127.0.0.1:5060", "--rate", "10"];
        let contact = |o: Options| match o.scenario {
            Scenario::Register { contact, .. } => contact,
            _ => None,
        };
        assert_eq!(contact(parse(&base).unwrap()), None);
        for good in ["127.0.0.2:5080", "uas.example.org:5060", "[::1]:5080"] {
            let o = parse(&[&base[..], &["--contact", good]].concat()).unwrap();
            assert_eq!(contact(o).as_deref(), Some(good));
        }
        for bad in ["127.0.0.2", "a b:5", "x@h:5", "h:5;lr", ""] {
            assert!(
                parse(&[&base[..], &["--contact", bad]].concat()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn search_bisects_to_two_percent() {
        // A server clean up to 37000/s, probed from 100000/s.
        let clean = |rate: f64| rate <= 37_000.0;
        let (mut lo, mut hi, mut rate) = (0.0, 100_000.0, 100_000.0);
        let mut probes = Vec::new();
        loop {
            probes.push(rate);
            if clean(rate) {
                lo = rate;
            } else {
                hi = rate;
            }
            match next_probe(lo, hi, 100_000.0) {
                Some(next) => rate = next,
                None => break,
            }
        }
        assert_eq!(&probes[..3], [100_000.0, 50_000.0, 25_000.0]);
        assert!(probes.len() <= 10, "{probes:?}");
        assert!(
            (37_000.0 * 0.98..=37_000.0).contains(&lo),
            "{lo} {probes:?}"
        );
        assert_eq!(next_probe(100_000.0, 100_000.0, 100_000.0), None);
        assert_eq!(next_probe(0.0, 0.0015, 1.0), None);
    }
}
