//! A Redis lab for tests: real `redis-server` and `redis-sentinel` processes on 127.0.0.1.
//!
//! Why: the HA registrar's hard cases (an atomic script's effect, a replica serving reads, a
//! master killed or paused while the sentinels elect another) are properties of real Redis
//! processes, not of a mock. The lab is shaped like the seed deployment (one master, `replicaof`
//! replicas, `requirepass` = `masterauth`, sentinels with `auth-pass` and a quorum) with a short
//! `down-after-milliseconds` so that a failover takes seconds.
//!
//! ```ignore
//! #[path = "support/redis_lab.rs"]
//! mod redis_lab;
//! let lab = redis_lab::RedisLab::start(redis_lab::LabOptions::ha());
//! let old = lab.redis_addr(0);
//! lab.kill(0);
//! let new = lab.wait_for_failover(old, Duration::from_secs(20));
//! ```
//!
//! Rules it keeps: every address is in 127.0.0.0/8 (everything binds 127.0.0.1); every process
//! it starts is SIGKILLed and reaped when the lab drops, also while a failed test unwinds;
//! every wait is bounded and panics with what it waited for and the tail of the processes' logs;
//! a missing `redis-server` is a clear panic, never a silent skip (CI installs it:
//! `scripts/test-all`). Files (configurations, logs) live in a directory under the target's tmp
//! directory, removed on drop unless the test panicked. Needs the `redis` crate's sync client;
//! reusable by other crates' tests through `#[path]`.

#![allow(dead_code)]

use std::fmt;
use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// The only address the lab uses.
pub const LOOPBACK: &str = "127.0.0.1";
/// How long a process may take to answer PING after it is started.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long replication and sentinel discovery may take after start.
const TOPOLOGY_TIMEOUT: Duration = Duration::from_secs(20);
/// Connect, read and write timeout of the lab's clients.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(50);

/// The shape of a lab.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Replicas of the first server (`replicaof`), numbered 1..=replicas; the master is node 0.
    pub replicas: usize,
    pub sentinels: usize,
    /// `requirepass` and `masterauth` of every server, `auth-pass` of every sentinel.
    pub password: Option<String>,
    /// The name the sentinels monitor the master under.
    pub master_name: String,
    pub quorum: usize,
    pub down_after_ms: u64,
    pub failover_timeout_ms: u64,
    /// `min-replicas-to-write` on every server (with `min-replicas-max-lag` 10 s): an isolated
    /// master refuses writes with `-NOREPLICAS` instead of accepting and later losing them.
    pub min_replicas_to_write: Option<u32>,
}

impl Default for LabOptions {
    /// One server, no sentinel, no password.
    fn default() -> LabOptions {
        LabOptions {
            replicas: 0,
            sentinels: 0,
            password: None,
            master_name: "sipshard".into(),
            quorum: 2,
            down_after_ms: 1000,
            failover_timeout_ms: 10_000,
            min_replicas_to_write: None,
        }
    }
}

impl LabOptions {
    /// The seed's deployment scaled to a test: 3 servers, 3 sentinels, quorum 2, a password,
    /// and a 1 s down-after.
    pub fn ha() -> LabOptions {
        LabOptions {
            replicas: 2,
            sentinels: 3,
            password: Some("lab-Complicated-Pass-42".into()),
            ..LabOptions::default()
        }
    }
}

/// A redis-server or redis-sentinel process of the lab.
struct Proc {
    label: String,
    binary: &'static str,
    port: u16,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn spawn(&mut self) {
        let stdout = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log.display()));
        let stderr = stdout
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot clone the handle of {}: {e}", self.log.display()));
        let child = Command::new(self.binary)
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): the Redis lab needs redis-server and redis-sentinel \
                     (Debian packages `redis-server` and `redis-sentinel`; scripts/test-all \
                     installs them)",
                    self.binary
                )
            });
        self.child = Some(child);
    }

    fn pid(&self) -> u32 {
        match &self.child {
            Some(child) => child.id(),
            None => panic!("{} is not running", self.label),
        }
    }

    /// SIGKILL and reap; nothing if it is not running.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.pid().to_string();
        let status = Command::new("kill")
            .args(["-s", signal, &pid])
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill -s {signal} {pid}: {e}"));
        assert!(status.success(), "kill -s {signal} {} failed", self.label);
    }

    /// The last lines of its log, for panic messages.
    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(15);
        format!(
            "--- {} ({}) ---\n{}",
            self.label,
            self.log.display(),
            lines[start..].join("\n")
        )
    }
}

/// One master, its replicas and sentinels (see the module documentation). Stopped on drop.
pub struct RedisLab {
    options: LabOptions,
    dir: PathBuf,
    servers: Vec<Proc>,
    sentinels: Vec<Proc>,
}

impl fmt::Debug for RedisLab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLab")
            .field("dir", &self.dir)
            .field(
                "servers",
                &self.servers.iter().map(|p| p.port).collect::<Vec<_>>(),
            )
            .field(
                "sentinels",
                &self.sentinels.iter().map(|p| p.port).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl RedisLab {
    /// Starts the servers, waits until every replica is in sync, then starts the sentinels and
    /// waits until each knows the master, every replica and every other sentinel. Panics (after
    /// stopping what it started) if any of it does not happen within bounded time.
    pub fn start(options: LabOptions) -> RedisLab {
        assert!(
            options.sentinels == 0 || (1..=options.sentinels).contains(&options.quorum),
            "quorum {} with {} sentinels",
            options.quorum,
            options.sentinels
        );
        let dir = lab_dir();
        let mut lab = RedisLab {
            options,
            dir,
            servers: Vec::new(),
            sentinels: Vec::new(),
        };
        // From here on a panic drops `lab`, which stops every process already started.
        for i in 0..=lab.options.replicas {
            let port = free_port();
            let conf = lab.server_conf(i, port);
            lab.servers
                .push(lab.new_proc(format!("redis-{i}"), "redis-server", port, conf));
            lab.servers[i].spawn();
        }
        for i in 0..lab.servers.len() {
            lab.wait_ready(&lab.servers[i]);
        }
        lab.wait_replicas_in_sync(0, TOPOLOGY_TIMEOUT);
        for i in 0..lab.options.sentinels {
            let port = free_port();
            let conf = lab.sentinel_conf(port);
            lab.sentinels
                .push(lab.new_proc(format!("sentinel-{i}"), "redis-sentinel", port, conf));
            lab.sentinels[i].spawn();
        }
        for i in 0..lab.sentinels.len() {
            lab.wait_ready(&lab.sentinels[i]);
        }
        lab.wait_sentinels_know_topology(TOPOLOGY_TIMEOUT);
        lab
    }

    pub fn options(&self) -> &LabOptions {
        &self.options
    }

    pub fn password(&self) -> Option<&str> {
        self.options.password.as_deref()
    }

    /// Number of redis-server nodes (master and replicas, running or not).
    pub fn server_count(&self) -> usize {
        self.servers.len()
    }

    pub fn redis_addr(&self, node: usize) -> SocketAddr {
        addr(self.servers[node].port)
    }

    pub fn sentinel_addr(&self, i: usize) -> SocketAddr {
        addr(self.sentinels[i].port)
    }

    /// The node listening on `addr`, if it is one of the lab's servers.
    pub fn node_at(&self, at: SocketAddr) -> Option<usize> {
        self.servers.iter().position(|p| addr(p.port) == at)
    }

    /// An authenticated sync client of server `node`, with 2 s timeouts.
    pub fn client(&self, node: usize) -> redis::Connection {
        connect(self.servers[node].port, self.password())
            .unwrap_or_else(|e| panic!("cannot connect to redis-{node}: {e}\n{}", self.logs()))
    }

    /// A sync client of sentinel `i` (sentinels have no password here, as in the seed).
    pub fn sentinel_client(&self, i: usize) -> redis::Connection {
        connect(self.sentinels[i].port, None)
            .unwrap_or_else(|e| panic!("cannot connect to sentinel-{i}: {e}\n{}", self.logs()))
    }

    /// SIGKILL server `node` (no shutdown, no goodbye to its replicas).
    pub fn kill(&mut self, node: usize) {
        self.servers[node].kill();
    }

    /// SIGSTOP server `node`: its sockets stay open, it answers nothing.
    pub fn pause(&mut self, node: usize) {
        self.servers[node].signal("STOP");
    }

    /// SIGCONT server `node`.
    pub fn resume(&mut self, node: usize) {
        self.servers[node].signal("CONT");
    }

    /// Starts server `node` again (after [`RedisLab::kill`]) on the same port with its original
    /// configuration, or the one Sentinel rewrote: without persistence it comes back empty.
    /// Waits until it answers PING.
    pub fn restart(&mut self, node: usize) {
        self.servers[node].kill();
        self.servers[node].spawn();
        self.wait_ready(&self.servers[node]);
    }

    /// SIGKILL sentinel `i`.
    pub fn kill_sentinel(&mut self, i: usize) {
        self.sentinels[i].kill();
    }

    /// What each sentinel answers to `SENTINEL get-master-addr-by-name`; `None` for a sentinel
    /// that is stopped, unreachable or names no master.
    pub fn current_master_per_sentinels(&self) -> Vec<Option<SocketAddr>> {
        (0..self.sentinels.len())
            .map(|i| {
                self.sentinels[i].child.as_ref()?;
                let mut con = connect(self.sentinels[i].port, None).ok()?;
                let reply: Option<(String, u16)> = redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(&self.options.master_name)
                    .query(&mut con)
                    .ok()?;
                let (ip, port) = reply?;
                format!("{ip}:{port}").parse().ok()
            })
            .collect()
    }

    /// Waits until every running sentinel names the same master, other than `old`, and that
    /// server answers `ROLE` with `master`; returns its node index. Panics after `timeout`.
    pub fn wait_for_failover(&self, old: SocketAddr, timeout: Duration) -> usize {
        let running = self.sentinels.iter().filter(|s| s.child.is_some()).count();
        assert!(running > 0, "no sentinel is running");
        let mut last = Vec::new();
        let found = wait_until(timeout, || {
            last = self.current_master_per_sentinels();
            let named: Vec<SocketAddr> = last.iter().flatten().copied().collect();
            let agreed = named.len() == running && named.windows(2).all(|w| w[0] == w[1]);
            let candidate = named.first().copied().filter(|&a| agreed && a != old)?;
            let node = self.node_at(candidate)?;
            (self.role(node).as_deref() == Some("master")).then_some(node)
        });
        found.unwrap_or_else(|| {
            panic!(
                "no failover from {old} within {timeout:?}: sentinels name {last:?}\n{}",
                self.logs()
            )
        })
    }

    /// The first element of `ROLE` (`master`, `slave`), `None` when the node does not answer.
    pub fn role(&self, node: usize) -> Option<String> {
        self.servers[node].child.as_ref()?;
        let mut con = connect(self.servers[node].port, self.password()).ok()?;
        let role: redis::Value = redis::cmd("ROLE").query(&mut con).ok()?;
        match role {
            redis::Value::Array(items) => match items.first() {
                Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into()),
                Some(redis::Value::SimpleString(s)) => Some(s.clone()),
                _ => None,
            },
            _ => None,
        }
    }

    /// Waits until every running server other than `master` replicates `master` with its link
    /// up and the master lists each of them as `online`.
    pub fn wait_replicas_in_sync(&self, master: usize, timeout: Duration) {
        let replicas: Vec<usize> = (0..self.servers.len())
            .filter(|&i| i != master && self.servers[i].child.is_some())
            .collect();
        let master_port = self.servers[master].port;
        let mut last = String::new();
        let ok = wait_until(timeout, || {
            for &r in &replicas {
                let info = self.info(r, "replication")?;
                let linked = info.contains(&format!("master_port:{master_port}"))
                    && info.contains("master_link_status:up");
                if !linked {
                    last = format!("redis-{r}: {info}");
                    return None;
                }
            }
            let info = self.info(master, "replication")?;
            let online = info.lines().filter(|l| l.contains("state=online")).count();
            if online < replicas.len() {
                last = format!("redis-{master}: {info}");
                return None;
            }
            Some(())
        });
        if ok.is_none() {
            panic!(
                "replicas {replicas:?} not in sync with redis-{master} within {timeout:?}; \
                 last INFO: {last}\n{}",
                self.logs()
            );
        }
    }

    /// Waits until every running sentinel names node 0 as master, lists every replica without
    /// a down flag, and knows every other running sentinel (needed for a quorum and an
    /// election).
    pub fn wait_sentinels_know_topology(&self, timeout: Duration) {
        let name = &self.options.master_name;
        let master = self.redis_addr(0);
        let running: Vec<usize> = (0..self.sentinels.len())
            .filter(|&i| self.sentinels[i].child.is_some())
            .collect();
        let mut last = String::new();
        let ok = wait_until(timeout, || {
            for &i in &running {
                let mut con = connect(self.sentinels[i].port, None).ok()?;
                let named: Option<(String, u16)> = redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(name)
                    .query(&mut con)
                    .ok()?;
                let named = named.and_then(|(ip, port)| format!("{ip}:{port}").parse().ok());
                let replicas: Vec<Vec<(String, String)>> = redis::cmd("SENTINEL")
                    .arg("replicas")
                    .arg(name)
                    .query(&mut con)
                    .ok()?;
                let healthy = replicas
                    .iter()
                    .filter(|r| r.iter().any(|(k, v)| k == "flags" && v == "slave"))
                    .count();
                let sentinels: Vec<redis::Value> = redis::cmd("SENTINEL")
                    .arg("sentinels")
                    .arg(name)
                    .query(&mut con)
                    .ok()?;
                if named != Some(master)
                    || healthy != self.servers.len() - 1
                    || sentinels.len() + 1 != running.len()
                {
                    last = format!(
                        "sentinel-{i}: master {named:?}, {healthy} healthy replicas, knows {} \
                         other sentinels",
                        sentinels.len()
                    );
                    return None;
                }
            }
            Some(())
        });
        if ok.is_none() {
            panic!(
                "sentinels did not learn the topology within {timeout:?}; last: {last}\n{}",
                self.logs()
            );
        }
    }

    /// The tail of every process's log.
    pub fn logs(&self) -> String {
        self.servers
            .iter()
            .chain(&self.sentinels)
            .map(Proc::log_tail)
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn info(&self, node: usize, section: &str) -> Option<String> {
        let mut con = connect(self.servers[node].port, self.password()).ok()?;
        redis::cmd("INFO").arg(section).query(&mut con).ok()
    }

    fn wait_ready(&self, proc: &Proc) {
        let password = if proc.binary == "redis-server" {
            self.password()
        } else {
            None
        };
        let ok = wait_until(READY_TIMEOUT, || {
            let mut con = connect(proc.port, password).ok()?;
            let pong: String = redis::cmd("PING").query(&mut con).ok()?;
            (pong == "PONG").then_some(())
        });
        if ok.is_none() {
            panic!(
                "{} did not answer PING within {READY_TIMEOUT:?}\n{}",
                proc.label,
                proc.log_tail()
            );
        }
    }

    fn new_proc(&self, label: String, binary: &'static str, port: u16, conf: PathBuf) -> Proc {
        Proc {
            log: self.dir.join(format!("{label}.log")),
            label,
            binary,
            port,
            conf,
            child: None,
        }
    }

    fn server_conf(&self, node: usize, port: u16) -> PathBuf {
        let dir = self.dir.join(format!("redis-{node}"));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let mut conf = format!(
            "bind {LOOPBACK}\nport {port}\nprotected-mode yes\ndaemonize no\ndir {}\n\
             save \"\"\nappendonly no\nrepl-diskless-sync yes\nrepl-diskless-sync-delay 0\n\
             loglevel notice\n",
            dir.display()
        );
        if let Some(password) = self.password() {
            conf.push_str(&format!("requirepass {password}\nmasterauth {password}\n"));
        }
        if let Some(n) = self.options.min_replicas_to_write {
            conf.push_str(&format!(
                "min-replicas-to-write {n}\nmin-replicas-max-lag 10\n"
            ));
        }
        if node > 0 {
            let master = self.servers[0].port;
            conf.push_str(&format!("replicaof {LOOPBACK} {master}\n"));
        }
        write_conf(&dir.join("redis.conf"), &conf)
    }

    fn sentinel_conf(&self, port: u16) -> PathBuf {
        let dir = self.dir.join(format!("sentinel-{port}"));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let name = &self.options.master_name;
        let o = &self.options;
        let mut conf = format!(
            "bind {LOOPBACK}\nport {port}\ndaemonize no\ndir {}\n\
             sentinel resolve-hostnames no\n\
             sentinel monitor {name} {LOOPBACK} {} {}\n\
             sentinel down-after-milliseconds {name} {}\n\
             sentinel failover-timeout {name} {}\n\
             sentinel parallel-syncs {name} 1\n",
            dir.display(),
            self.servers[0].port,
            o.quorum,
            o.down_after_ms,
            o.failover_timeout_ms,
        );
        if let Some(password) = self.password() {
            conf.push_str(&format!("sentinel auth-pass {name} {password}\n"));
        }
        // Sentinel rewrites its configuration file, so it must be its own and writable.
        write_conf(&dir.join("sentinel.conf"), &conf)
    }
}

impl Drop for RedisLab {
    fn drop(&mut self) {
        for proc in self.sentinels.iter_mut().chain(self.servers.iter_mut()) {
            proc.kill();
        }
        if thread::panicking() {
            eprintln!("Redis lab kept for inspection: {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Opens an authenticated sync connection to 127.0.0.1:`port` with [`CLIENT_TIMEOUT`]s.
pub fn connect(port: u16, password: Option<&str>) -> redis::RedisResult<redis::Connection> {
    let url = match password {
        Some(p) => format!("redis://:{p}@{LOOPBACK}:{port}/"),
        None => format!("redis://{LOOPBACK}:{port}/"),
    };
    let con = redis::Client::open(url)?.get_connection_with_timeout(CLIENT_TIMEOUT)?;
    con.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    con.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    Ok(con)
}

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(POLL);
    }
}

/// A loopback TCP port for one of the lab's servers: free a moment ago, and never handed out
/// before by this process.
///
/// The ports come from 20000–32767, below Linux's ephemeral range (32768–60999), walked from a
/// per-process starting point. So they never meet the ports the kernel picks for `bind(0)` — which
/// is how the node's tests choose theirs (`engine/tests/support`, in the same test binaries as
/// this lab) — or for outgoing connections. Choosing both ways from the ephemeral range once gave
/// a sipshard node the port a redis-server was about to bind.
fn free_port() -> u16 {
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_768;
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7_919) % COUNT;
    for _ in 0..COUNT {
        let step = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = (FIRST + (start + step) % COUNT) as u16;
        if TcpListener::bind((LOOPBACK, port)).is_ok() {
            return port;
        }
    }
    panic!(
        "no free TCP port on {LOOPBACK} in {FIRST}..{}",
        FIRST + COUNT
    )
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn write_conf(path: &Path, text: &str) -> PathBuf {
    fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path.to_path_buf()
}

/// A fresh directory for one lab under the target's tmp directory.
fn lab_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = base
        .join("sipshard-redis-lab")
        .join(format!("lab-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}
