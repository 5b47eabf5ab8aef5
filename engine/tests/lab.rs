//! `configs/lab/run`, the demo cluster of the README's "Deploying", run as a user runs it: the
//! script starts three redis-servers, three sentinels and three sipshard nodes on 127.0.0.2–4
//! (here on free ports, in a directory of its own), says `lab: ready`; alice registers over UDP
//! through node 1, a fetch through node 2 lists her binding (read from Redis), and bob's MESSAGE
//! through node 3 reaches her socket; then `configs/lab/run stop` stops it, the script exits 0,
//! and none of the processes it started is left.
//!
//! The script runs in a process group of its own and starts each process in a session of its
//! own (pid files under the lab directory); the guard stops the lab on drop, and SIGKILLs every
//! process of the pid files, the process group and anything whose working directory is in the
//! lab directory, also while a failed test unwinds. Bounded: the lab has 45 s to start, 30 s
//! to stop; the whole test takes about 10 s.
//! `cargo test -p sipshard-engine --test lab -- --nocapture`.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{BufRead, BufReader, ErrorKind};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use sipshard_net::Message;
use support::TempDir;

/// The lab's three hosts.
const HOSTS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(127, 0, 0, 2),
    Ipv4Addr::new(127, 0, 0, 3),
    Ipv4Addr::new(127, 0, 0, 4),
];
const DOMAIN: &str = "example.org";
/// How long the script may take to say `lab: ready` (Redis replication, sentinels discovering
/// each other, nodes verifying the master) on a loaded 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(45);
/// How long `run stop` and the script's own exit may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a SIP step waits for its answer.
const STEP: Duration = Duration::from_secs(5);

/// A port free on the three hosts for TCP, and for UDP too when `udp`, a moment ago; never the
/// same twice in this process.
fn free_lab_port(udp: bool) -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    for _ in 0..200 {
        let first = TcpListener::bind((HOSTS[0], 0)).expect("a TCP socket on 127.0.0.2");
        let port = first.local_addr().expect("a local address").port();
        let free_everywhere = HOSTS.iter().all(|&host| {
            (host == HOSTS[0] || TcpListener::bind((host, port)).is_ok())
                && (!udp || UdpSocket::bind((host, port)).is_ok())
        });
        if !free_everywhere {
            continue;
        }
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    panic!("no port free on 127.0.0.2-4 after 200 tries")
}

/// A process of the lab, as its pid file named it when the lab was ready: pid and start time
/// (field 22 of /proc/PID/stat), so that a recycled pid is not mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Started {
    pid: u32,
    start_time: u64,
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

impl Started {
    /// Still running (a zombie counts as gone: it holds no socket).
    fn alive(&self) -> bool {
        let state = fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .and_then(|s| {
                s.rfind(')')
                    .and_then(|i| s[i + 1..].split_whitespace().next().map(str::to_owned))
            });
        start_time(self.pid) == Some(self.start_time) && state.as_deref() != Some("Z")
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Processes (not zombies) whose working directory is under `dir`: the script starts each
/// process of the lab in its own directory there.
fn processes_in(dir: &Path) -> Vec<(u32, String)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let cwd = fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
            if !cwd.starts_with(dir) {
                return None;
            }
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let zombie = stat
                .rfind(')')
                .is_some_and(|i| stat[i + 1..].trim_start().starts_with('Z'));
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (!zombie).then_some((pid, cmdline))
        })
        .collect()
}

/// The running lab: the script (`configs/lab/run`, in its own process group) and what it
/// started. Everything is killed on drop.
struct Lab {
    script: PathBuf,
    dir: TempDir,
    child: Child,
    output: Arc<Mutex<String>>,
    sip_port: u16,
    admin_port: u16,
    /// From the pid files once the lab was ready, by name.
    started: BTreeMap<String, Started>,
}

impl Lab {
    fn start() -> Lab {
        let script = support::workspace_root().join("configs/lab/run");
        assert!(script.is_file(), "no {}", script.display());
        let dir = TempDir::new("lab");
        let sip_port = free_lab_port(true);
        let redis_port = free_lab_port(false);
        let sentinel_port = free_lab_port(false);
        let admin_port = free_lab_port(false);
        let mut command = Command::new("bash");
        command
            .arg(&script)
            .envs(Self::env(dir.path()))
            .env("LAB_SIP_PORT", sip_port.to_string())
            .env("LAB_REDIS_PORT", redis_port.to_string())
            .env("LAB_SENTINEL_PORT", sentinel_port.to_string())
            .env("LAB_ADMIN_PORT", admin_port.to_string())
            .env("LAB_THREADS", "1")
            .env("SIPSHARD", env!("CARGO_BIN_EXE_sipshard"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run bash {}: {e}", script.display()));
        let output = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::clone(&output);
        let ready = ready_tx.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let is_ready = line.starts_with("lab: ready");
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
                if is_ready {
                    let _ = ready.send(true);
                }
            }
            let _ = ready.send(false);
        });
        let log = Arc::clone(&output);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str("stderr: ");
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut lab = Lab {
            script,
            dir,
            child,
            output,
            sip_port,
            admin_port,
            started: BTreeMap::new(),
        };
        // From here on a panic drops `lab`, which stops everything.
        match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(true) => {}
            Ok(false) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = lab.wait_exit(Duration::from_secs(5));
                panic!(
                    "the lab script ended before `lab: ready` ({status:?})\n{}",
                    lab.report()
                );
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("no `lab: ready` within {START_TIMEOUT:?}\n{}", lab.report())
            }
        }
        lab.started = lab.read_pid_files();
        lab
    }

    /// The environment that names this lab for the script (`run stop` needs the same).
    fn env(dir: &Path) -> Vec<(&'static str, String)> {
        vec![("LAB_DIR", dir.display().to_string())]
    }

    fn node(&self, i: usize) -> SocketAddr {
        SocketAddr::from((HOSTS[i], self.sip_port))
    }

    fn read_pid_files(&self) -> BTreeMap<String, Started> {
        let mut started = BTreeMap::new();
        let Ok(entries) = fs::read_dir(self.dir.join("pids")) else {
            return started;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(name) = name.strip_suffix(".pid") else {
                continue;
            };
            let pid = fs::read_to_string(entry.path())
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            if let Some(pid) = pid
                && let Some(start_time) = start_time(pid)
            {
                started.insert(name.to_owned(), Started { pid, start_time });
            }
        }
        started
    }

    /// The script's output and the tail of every log of the lab, for failure messages.
    fn report(&self) -> String {
        let mut out = format!(
            "--- configs/lab/run output ---\n{}",
            self.output.lock().unwrap_or_else(|e| e.into_inner())
        );
        let Ok(entries) = fs::read_dir(self.dir.path()) else {
            return out;
        };
        let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        dirs.sort();
        for dir in dirs {
            let name = dir.file_name().unwrap_or_default().to_string_lossy();
            let log = dir.join(format!("{name}.log"));
            if let Ok(text) = fs::read_to_string(&log) {
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(15)..].join("\n");
                out.push_str(&format!("--- {} ---\n{tail}\n", log.display()));
            }
        }
        out
    }

    /// Waits (bounded) for the script to exit.
    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
                _ => return None,
            }
        }
    }

    /// `configs/lab/run stop` with this lab's directory; panics unless it succeeds in time.
    fn run_stop(&self) {
        let mut stop = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .envs(Self::env(self.dir.path()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {} stop: {e}", self.script.display()));
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            match stop.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
                _ => {
                    let _ = stop.kill();
                    let _ = stop.wait();
                    panic!(
                        "`run stop` took more than {STOP_TIMEOUT:?}\n{}",
                        self.report()
                    );
                }
            }
        };
        let output = stop.wait_with_output().expect("the output of `run stop`");
        assert!(
            status.success(),
            "`run stop` failed ({status}): {}{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.report()
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // The script stops what it started on SIGTERM (nodes, sentinels, servers).
            signal(self.child.id(), "TERM");
            self.wait_exit(STOP_TIMEOUT);
        }
        // Whatever is left — the script hung, or was killed before its clean-up.
        signal(self.child.id(), "KILL");
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
        let mut pids: Vec<Started> = self.started.values().copied().collect();
        pids.extend(self.read_pid_files().into_values());
        for p in pids.iter().filter(|p| p.alive()) {
            signal(p.pid, "KILL");
        }
        for (pid, _) in processes_in(self.dir.path()) {
            signal(pid, "KILL");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A user agent over UDP
// ---------------------------------------------------------------------------------------------

struct Ua {
    user: &'static str,
    socket: UdpSocket,
    local: SocketAddr,
    next: u32,
}

impl Ua {
    fn new(user: &'static str) -> Ua {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
        let local = socket.local_addr().expect("a local address");
        Ua {
            user,
            socket,
            local,
            next: 0,
        }
    }

    fn contact(&self) -> String {
        format!("sip:{}@{}", self.user, self.local)
    }

    /// Headers common to a new out-of-dialog request: Via (a new branch), Max-Forwards, From,
    /// Call-ID, CSeq.
    fn head(&mut self, method: &str, to: &str) -> String {
        self.next += 1;
        let n = self.next;
        format!(
            "Via: SIP/2.0/UDP {local};branch=z9hG4bK-lab-{user}-{n};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@{DOMAIN}>;tag=lab-{user}-{n}\r\n\
             To: <{to}>\r\n\
             Call-ID: lab-{user}-{n}@127.0.0.1\r\n\
             CSeq: {n} {method}\r\n",
            local = self.local,
            user = self.user,
        )
    }

    /// Sends `text` to `to` and waits for the final response to it (same Call-ID), resending
    /// every 500 ms (RFC 3261 Timer E: UDP may drop a datagram even on loopback under load).
    fn transact(&mut self, text: &str, to: SocketAddr, what: &str) -> Vec<u8> {
        let call_id = Message::parse_datagram(text.as_bytes())
            .expect("a valid request")
            .call_id()
            .expect("a Call-ID")
            .to_owned();
        let deadline = Instant::now() + STEP;
        let mut next_send = Instant::now();
        let mut seen = Vec::new();
        loop {
            let now = Instant::now();
            if now >= next_send {
                self.socket.send_to(text.as_bytes(), to).expect("send");
                next_send = now + Duration::from_millis(500);
            }
            if now >= deadline {
                panic!(
                    "{}: no final response to {what} within {STEP:?}; got {seen:?}",
                    self.user
                );
            }
            if let Some(bytes) = self.recv(next_send.min(deadline) - now) {
                let msg = Message::parse_datagram(&bytes).expect("a valid message");
                if msg.status().is_some_and(|s| s >= 200)
                    && msg.call_id().ok() == Some(call_id.as_str())
                {
                    return bytes;
                }
                seen.push(String::from_utf8_lossy(&bytes).into_owned());
            }
        }
    }

    fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        let mut buf = vec![0; 65_535];
        self.socket
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .ok()?;
        match self.socket.recv_from(&mut buf) {
            Ok((n, _)) => Some(buf[..n].to_vec()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
            Err(e) => panic!("{}: recv: {e}", self.user),
        }
    }

    /// REGISTER through `node`: with this UA's contact, or a fetch (no Contact) when `fetch`.
    fn register(&mut self, node: SocketAddr, fetch: bool) -> Vec<u8> {
        let aor = format!("sip:{}@{DOMAIN}", self.user);
        let mut text = format!(
            "REGISTER sip:{DOMAIN} SIP/2.0\r\n{}",
            self.head("REGISTER", &aor)
        );
        if !fetch {
            text.push_str(&format!(
                "Contact: <{}>\r\nExpires: 600\r\n",
                self.contact()
            ));
        }
        text.push_str("Content-Length: 0\r\n\r\n");
        self.transact(&text, node, "REGISTER")
    }
}

fn status(bytes: &[u8]) -> Option<u16> {
    Message::parse_datagram(bytes).ok()?.status()
}

fn contacts(bytes: &[u8]) -> Vec<String> {
    let msg = Message::parse_datagram(bytes).expect("a valid response");
    msg.contacts()
        .filter_map(|c| Some(c.ok()?.address()?.uri.as_str().to_owned()))
        .collect()
}

/// The raw lines of the header `name` (full name) in `bytes`.
fn header_lines(bytes: &[u8], name: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let head = text.split("\r\n\r\n").next().unwrap_or("").to_owned();
    head.split("\r\n")
        .skip(1)
        .filter(|line| {
            line.split_once(':')
                .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        })
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

#[test]
fn lab_runs_the_cluster_and_stops_everything_it_started() {
    let started_at = Instant::now();
    let mut lab = Lab::start();
    let started_in = started_at.elapsed();

    // What the script reports having started: three of each, each running, plus itself.
    let names: Vec<&str> = lab.started.keys().map(String::as_str).collect();
    let expected = [
        "redis-1",
        "redis-2",
        "redis-3",
        "runner",
        "sentinel-1",
        "sentinel-2",
        "sentinel-3",
        "sipshard-1",
        "sipshard-2",
        "sipshard-3",
    ];
    assert_eq!(names, expected, "pid files\n{}", lab.report());
    assert_eq!(
        lab.started["runner"].pid,
        lab.child.id(),
        "the runner's pid file"
    );
    for (name, p) in &lab.started {
        assert!(
            p.alive(),
            "{name} ({}) is not running\n{}",
            p.pid,
            lab.report()
        );
    }
    // Each works in its own directory under the lab's (what the checks after the stop rely on).
    for (name, p) in lab.started.iter().filter(|(name, _)| *name != "runner") {
        let cwd = fs::read_link(format!("/proc/{}/cwd", p.pid)).ok();
        assert!(
            cwd.as_deref()
                .is_some_and(|cwd| cwd.starts_with(lab.dir.path())),
            "{name} works in {cwd:?}, not under {}",
            lab.dir.path().display()
        );
    }

    // alice registers through node 1.
    let mut alice = Ua::new("alice");
    let ok = alice.register(lab.node(0), false);
    assert_eq!(
        status(&ok),
        Some(200),
        "REGISTER through node 1\n{}",
        lab.report()
    );
    assert_eq!(contacts(&ok), [alice.contact()]);

    // Node 2 lists her binding: it is in Redis, not only in node 1.
    let mut fetcher = Ua::new("alice");
    let fetched = fetcher.register(lab.node(1), true);
    assert_eq!(
        status(&fetched),
        Some(200),
        "fetch through node 2\n{}",
        lab.report()
    );
    assert_eq!(contacts(&fetched), [alice.contact()], "node 2's view");

    // bob's MESSAGE through node 3 reaches alice's socket; her 200 goes back to bob.
    let mut bob = Ua::new("bob");
    let to = format!("sip:alice@{DOMAIN}");
    let message = format!(
        "MESSAGE {to} SIP/2.0\r\n{}Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
        bob.head("MESSAGE", &to)
    );
    bob.socket
        .send_to(message.as_bytes(), lab.node(2))
        .expect("send");
    let deadline = Instant::now() + STEP;
    let request = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(bytes) = alice.recv(left) else {
            panic!("alice got no MESSAGE through node 3\n{}", lab.report());
        };
        let msg = Message::parse_datagram(&bytes).expect("a valid message");
        if msg.method().is_some_and(|m| m.as_str() == "MESSAGE") && msg.body() == &b"hello"[..] {
            break bytes;
        }
    };
    let vias = header_lines(&request, "Via");
    assert!(
        vias.iter()
            .any(|v| v.contains(&lab.node(2).ip().to_string())),
        "the MESSAGE went through node 3: {vias:?}"
    );
    let mut answer = String::from("SIP/2.0 200 OK\r\n");
    for name in ["Via", "From", "Call-ID", "CSeq"] {
        for line in header_lines(&request, name) {
            answer.push_str(&line);
            answer.push_str("\r\n");
        }
    }
    for line in header_lines(&request, "To") {
        answer.push_str(&format!("{line};tag=alice-1\r\n"));
    }
    answer.push_str("Content-Length: 0\r\n\r\n");
    // The top Via is node 3's (UDP, its SIP address).
    alice
        .socket
        .send_to(answer.as_bytes(), lab.node(2))
        .expect("send");
    let deadline = Instant::now() + STEP;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(bytes) = bob.recv(left) else {
            panic!("bob got no 200 to his MESSAGE\n{}", lab.report());
        };
        if status(&bytes) == Some(200) {
            break;
        }
    }

    // The admin endpoints answer on each host's own address.
    for host in HOSTS {
        let admin = SocketAddr::from((host, lab.admin_port));
        assert!(
            std::net::TcpStream::connect_timeout(&admin, STEP).is_ok(),
            "no admin endpoint at {admin}"
        );
    }

    // `run stop`: the script exits 0, and nothing it started is left.
    let stopping = Instant::now();
    lab.run_stop();
    let status = lab.wait_exit(STOP_TIMEOUT);
    assert!(
        status.is_some_and(|s| s.success()),
        "the script ended with {status:?} after `run stop`\n{}",
        lab.report()
    );
    let left: Vec<(&String, &Started)> = lab.started.iter().filter(|(_, p)| p.alive()).collect();
    assert!(left.is_empty(), "left running: {left:?}\n{}", lab.report());
    let in_dir = processes_in(lab.dir.path());
    assert!(in_dir.is_empty(), "left in the lab directory: {in_dir:?}");
    let pid_files: Vec<_> = fs::read_dir(lab.dir.join("pids"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(pid_files.is_empty(), "pid files left: {pid_files:?}");
    eprintln!(
        "lab started in {started_in:?}, stopped in {:?}",
        stopping.elapsed()
    );
}
