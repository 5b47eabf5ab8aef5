//! End-to-end test support: real processes on 127.0.0.1, driven by SIPp.
//!
//! Why: the node is only proven by real peers over real sockets. These helpers start the node
//! (or any server that announces itself with a `listening on` line on stdout), run SIPp
//! scenarios from `tests/sipp/` against it, and hand back SIPp's verdict with its logs, so an
//! end-to-end test reads as a few lines:
//!
//! ```ignore
//! let port = support::free_port();
//! let _node = support::Node::start_on(port, &[]);
//! let target = format!("127.0.0.1:{port}");
//! support::Sipp::run("uac_message.xml", &target, &["-s", "bob"], support::SIPP_TIMEOUT)
//!     .assert_success(1);
//! ```
//!
//! Rules it keeps: every address is 127.0.0.1; every process started here is killed and reaped
//! when its handle drops (also while a failed test unwinds); every SIPp run is bounded in calls
//! (`-m`, 1 unless given) and in time (`-timeout`, plus a hard kill a few seconds later). The
//! files of a run (SIPp's error, screen, statistics and message logs, the processes' output)
//! live in a directory under `target/tmp/`, removed with the handle unless the test panicked.
//!
//! Used as `mod support;` by the engine's integration tests, and through
//! `#[path = "../../engine/tests/support/mod.rs"] mod support;` elsewhere. Standard library only.

#![allow(dead_code)]

pub mod sip_stream;

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, ErrorKind};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// The only address the tests use.
pub const LOOPBACK: &str = "127.0.0.1";
/// How long a server may take to print its `listening on` line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// A sensible bound for one SIPp run of a few calls.
pub const SIPP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long after its own `-timeout` a SIPp process is killed.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// A loopback port that was free on both UDP and TCP a moment ago, and that no other caller in
/// this test binary has been given.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    for _ in 0..200 {
        let udp = UdpSocket::bind((LOOPBACK, 0))
            .unwrap_or_else(|e| panic!("cannot bind a UDP socket on {LOOPBACK}: {e}"));
        let port = udp
            .local_addr()
            .unwrap_or_else(|e| panic!("UDP socket without a local address: {e}"))
            .port();
        if TcpListener::bind((LOOPBACK, port)).is_err() {
            continue;
        }
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    panic!("no port free on both UDP and TCP on {LOOPBACK} after 200 tries")
}

/// The workspace root (the crates that include this module sit one level below it).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .unwrap_or_else(|| panic!("{} has no parent directory", manifest.display()))
        .to_path_buf()
}

/// The path of a scenario under `tests/sipp/`; panics if it does not exist.
pub fn scenario_path(name: &str) -> PathBuf {
    let path = workspace_root().join("tests/sipp").join(name);
    assert!(path.is_file(), "no SIPp scenario {}", path.display());
    path
}

/// A fresh directory under `target/tmp/sipshard-e2e/`, removed on drop unless the thread is
/// panicking (then it is kept, and its path printed, for inspection).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = option_env!("CARGO_TARGET_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let label: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = base
            .join("sipshard-e2e")
            .join(format!("{label}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("kept for inspection: {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A server process that announced itself with a line containing `listening on`. Killed and
/// reaped on drop.
pub struct Process {
    name: String,
    child: Child,
    ready_line: String,
    stdout: Arc<Mutex<String>>,
    dir: TempDir,
}

impl Process {
    /// Spawns `binary` with `args` and waits (at most [`READY_TIMEOUT`]) for a stdout line
    /// containing `listening on`. Panics with the process's stderr if it exits first or stays
    /// silent. Its stdout keeps being read (and kept) until it exits; its stderr goes to a file.
    pub fn start(binary: &str, args: &[&str]) -> Process {
        let name = Path::new(binary)
            .file_name()
            .map_or_else(|| binary.to_string(), |n| n.to_string_lossy().into_owned());
        let dir = TempDir::new(&name);
        let stderr_path = dir.join("stderr.log");
        let stderr = File::create(&stderr_path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", stderr_path.display()));
        let mut child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary} {args:?}: {e}"));
        let stdout = child.stdout.take();
        let mut process = Process {
            name: format!("{name} {}", args.join(" ")),
            child,
            ready_line: String::new(),
            stdout: Arc::new(Mutex::new(String::new())),
            dir,
        };
        // From here on a panic drops `process`, which kills the child.
        let stdout = stdout.unwrap_or_else(|| panic!("{}: stdout not captured", process.name));
        let (ready_tx, ready_rx) = mpsc::channel();
        let log = Arc::clone(&process.stdout);
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
                if line.contains("listening on") {
                    let _ = ready_tx.send(Some(line));
                }
            }
            let _ = ready_tx.send(None);
        });
        match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(Some(line)) => process.ready_line = line,
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Stdout closed: the process is exiting; give it a moment to be reaped.
                let deadline = Instant::now() + Duration::from_secs(2);
                let status = loop {
                    match process.child.try_wait() {
                        Ok(Some(status)) => break Some(status),
                        Ok(None) if Instant::now() < deadline => {
                            thread::sleep(Duration::from_millis(20))
                        }
                        _ => break None,
                    }
                };
                panic!(
                    "{} closed stdout before `listening on` (exit: {status:?})\n{process:?}",
                    process.name
                );
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!(
                    "{} printed no `listening on` line in {READY_TIMEOUT:?}\n{process:?}",
                    process.name
                );
            }
        }
        process
    }

    /// The stdout line that announced readiness.
    pub fn ready_line(&self) -> &str {
        &self.ready_line
    }

    /// The first `ADDR:PORT` in the ready line (a `sip:`/`sips:` prefix is skipped), e.g.
    /// `listening on udp 127.0.0.1:5060` gives 127.0.0.1:5060.
    pub fn ready_addr(&self) -> Option<SocketAddr> {
        self.ready_line.split_whitespace().find_map(|token| {
            let token = token.trim_end_matches([',', ';']);
            let token = token
                .strip_prefix("sips:")
                .or_else(|| token.strip_prefix("sip:"))
                .unwrap_or(token);
            token.parse().ok()
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics (with its output) if the process has exited, e.g. crashed during the test.
    pub fn assert_running(&mut self) {
        match self.child.try_wait() {
            Ok(None) => {}
            Ok(Some(status)) => panic!("{} exited: {status}\n{self:?}", self.name),
            Err(e) => panic!("{}: cannot query its state: {e}", self.name),
        }
    }

    /// What it wrote on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What it wrote on stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.dir.join("stderr.log"))
    }
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "process {} (pid {})", self.name, self.child.id())?;
        writeln!(f, "ready line: {:?}", self.ready_line)?;
        section(f, "stdout", &self.stdout(), 4000)?;
        section(f, "stderr", &self.stderr(), 8000)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The node, `sipshard`, as a [`Process`].
#[derive(Debug)]
pub struct Node {
    pub process: Process,
}

impl Node {
    /// Starts `sipshard ARGS` and waits for its `listening on` line. Only in crates that build
    /// the `sipshard` binary (the engine's integration tests).
    pub fn start(args: &[&str]) -> Node {
        let binary = option_env!("CARGO_BIN_EXE_sipshard").unwrap_or_else(|| {
            panic!("Node::start needs the sipshard binary: use it from the engine's tests")
        });
        Node {
            process: Process::start(binary, args),
        }
    }

    /// Starts a registrar + proxy for the domains 127.0.0.1 and localhost, listening on
    /// `sip:127.0.0.1:PORT`, with `extra` arguments after the standard ones.
    pub fn start_on(port: u16, extra: &[&str]) -> Node {
        let transports = format!("global/transports=sip:{LOOPBACK}:{port}");
        let mut args = vec![
            "--set",
            transports.as_str(),
            "--set",
            "module::Registrar/reg-domains=127.0.0.1 localhost",
        ];
        args.extend_from_slice(extra);
        Node::start(&args)
    }
}

/// Writes a SIPp injection file (`-inf`): `SEQUENTIAL`, then one line per call, fields
/// separated by `;` (field0 = user, field1 = contact host:port for the register scenarios).
pub struct InjectionFile {
    path: PathBuf,
    _dir: TempDir,
}

impl InjectionFile {
    pub fn sequential(lines: &[&str]) -> InjectionFile {
        let dir = TempDir::new("inf");
        let path = dir.join("users.csv");
        let mut text = String::from("SEQUENTIAL\n");
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        InjectionFile { path, _dir: dir }
    }

    pub fn path(&self) -> &str {
        self.path
            .to_str()
            .unwrap_or_else(|| panic!("non-UTF-8 path {}", self.path.display()))
    }
}

/// Runs SIPp. See [`Sipp::run`] and [`Sipp::spawn_uas`].
pub struct Sipp;

impl Sipp {
    /// Runs `sipp -sf tests/sipp/SCENARIO EXTRA... TARGET` in the foreground and waits for it.
    ///
    /// `extra_args` come right after `-sf` (so `-set VAR VALUE` works: SIPp reads the
    /// scenario's globals before). Added unless given: `-i 127.0.0.1`, `-p` a free port,
    /// `-m 1`. Always added: `-nostdin`, `-timeout` (whole seconds of `timeout`, rounded up)
    /// with `-timeout_error`, and the error, screen, statistics and message logs in a fresh
    /// directory. SIPp is killed if it outlives `timeout` by 5 s.
    pub fn run(scenario: &str, target: &str, extra_args: &[&str], timeout: Duration) -> SippResult {
        let mut run = SippRun::start(scenario, Some(target), None, extra_args, timeout);
        run.wait()
    }

    /// Starts a SIPp UAS (a server scenario) listening on 127.0.0.1:`port` in the background
    /// and returns once its socket is bound. `extra_args` as for [`Sipp::run`] (`-t t1` makes
    /// it listen on TCP; `-m` bounds its calls, 1 unless given). Killed on drop; collect its
    /// verdict with [`SippUas::wait`] after the client is done.
    pub fn spawn_uas(scenario: &str, port: u16, extra_args: &[&str], timeout: Duration) -> SippUas {
        let mut run = SippRun::start(scenario, None, Some(port), extra_args, timeout);
        let tcp = transport_is_tcp(extra_args);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if port_is_bound(port, tcp) {
                break;
            }
            if let Ok(Some(_)) = run.child.try_wait() {
                let result = run.wait();
                panic!("SIPp UAS {scenario} exited before binding port {port}\n{result:?}");
            }
            if Instant::now() > deadline {
                let result = run.kill_and_collect();
                panic!(
                    "SIPp UAS {scenario} did not bind port {port} in {READY_TIMEOUT:?}\n{result:?}"
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
        SippUas { run, port, tcp }
    }
}

/// A SIPp UAS running in the background. Killed and reaped on drop.
pub struct SippUas {
    run: SippRun,
    port: u16,
    tcp: bool,
}

impl SippUas {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its address as a SIP contact host:port, with `;transport=tcp` when it listens on TCP:
    /// field1 of the register scenarios' injection file.
    pub fn contact(&self) -> String {
        let transport = if self.tcp { ";transport=tcp" } else { "" };
        format!("{LOOPBACK}:{}{transport}", self.port)
    }

    /// Waits for it to finish (its `-m` calls done, or its timeout) and returns its verdict.
    pub fn wait(mut self) -> SippResult {
        self.run.wait()
    }
}

/// What one SIPp run did. `Debug` prints the command, the verdict and the tails of the logs.
pub struct SippResult {
    pub scenario: String,
    pub command: Vec<String>,
    /// SIPp's exit status: 0 all calls succeeded, 1 at least one failed, 97 internal command,
    /// 99 no call processed, 255 fatal error or `-timeout` reached, 254 cannot bind. `None`
    /// when killed (see `killed`).
    pub exit_code: Option<i32>,
    /// Killed by this harness: SIPp outlived its timeout.
    pub killed: bool,
    /// Cumulative counters from the statistics file; `None` when SIPp wrote none.
    pub successful_calls: Option<u64>,
    pub failed_calls: Option<u64>,
    /// The error log (`-trace_err`): unexpected messages, failed checks, timeouts.
    pub errors: String,
    /// The screens SIPp dumped at exit (`-trace_screen`).
    pub screen: String,
    /// The statistics file (`-trace_stat`, CSV separated by `;`).
    pub stats: String,
    /// Every message sent and received (`-trace_msg`).
    pub messages: String,
    pub stderr: String,
    dir: TempDir,
}

impl SippResult {
    /// Exit status 0 and exactly `calls` successful calls, none failed.
    #[track_caller]
    pub fn assert_success(&self, calls: u64) {
        assert!(
            self.exit_code == Some(0)
                && self.successful_calls == Some(calls)
                && self.failed_calls == Some(0),
            "expected {calls} successful calls and exit status 0\n{self:?}"
        );
    }

    /// Exit status 1 and exactly `calls` failed calls, none successful.
    #[track_caller]
    pub fn assert_all_failed(&self, calls: u64) {
        assert!(
            self.exit_code == Some(1)
                && self.failed_calls == Some(calls)
                && self.successful_calls == Some(0),
            "expected {calls} failed calls and exit status 1\n{self:?}"
        );
    }

    /// Where the logs are (kept if the test panics).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl fmt::Debug for SippResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "SIPp {}: {}", self.scenario, self.command.join(" "))?;
        writeln!(
            f,
            "exit status {:?}{}, successful calls {:?}, failed calls {:?}, logs in {}",
            self.exit_code,
            if self.killed {
                " (killed after its timeout)"
            } else {
                ""
            },
            self.successful_calls,
            self.failed_calls,
            self.dir.path().display()
        )?;
        section(f, "errors", &self.errors, 6000)?;
        section(f, "stderr", &self.stderr, 2000)?;
        section(f, "final screens", &self.screen, 6000)?;
        section(f, "messages", &self.messages, 4000)
    }
}

/// One SIPp process and the files it writes. Killed and reaped on drop.
struct SippRun {
    scenario: String,
    command: Vec<String>,
    child: Child,
    deadline: Instant,
    /// Moves into the result when SIPp is done.
    dir: Option<TempDir>,
}

impl SippRun {
    fn start(
        scenario: &str,
        target: Option<&str>,
        port: Option<u16>,
        extra_args: &[&str],
        timeout: Duration,
    ) -> SippRun {
        let dir = TempDir::new(&format!("sipp-{scenario}"));
        let given = |flag: &str| extra_args.contains(&flag);
        let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let mut command: Vec<String> = vec![
            "sipp".into(),
            "-sf".into(),
            scenario_path(scenario).to_string_lossy().into_owned(),
        ];
        command.extend(extra_args.iter().map(|a| a.to_string()));
        if !given("-i") {
            command.extend(["-i".into(), LOOPBACK.into()]);
        }
        if !given("-p") {
            let port = port.unwrap_or_else(free_port);
            command.extend(["-p".into(), port.to_string()]);
        }
        if !given("-m") {
            command.extend(["-m".into(), "1".into()]);
        }
        let seconds = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        command.extend([
            "-nostdin".into(),
            "-timeout".into(),
            format!("{}s", seconds.max(1)),
            "-timeout_error".into(),
            "-trace_err".into(),
            "-error_file".into(),
            path("errors.log"),
            "-trace_screen".into(),
            "-screen_file".into(),
            path("screen.log"),
            "-trace_stat".into(),
            "-stf".into(),
            path("stats.csv"),
            "-trace_msg".into(),
            "-message_file".into(),
            path("messages.log"),
        ]);
        if let Some(target) = target {
            command.push(target.into());
        }
        let stdout = File::create(dir.join("stdout.log"))
            .unwrap_or_else(|e| panic!("cannot create a log in {}: {e}", dir.path().display()));
        let stderr = File::create(dir.join("stderr.log"))
            .unwrap_or_else(|e| panic!("cannot create a log in {}: {e}", dir.path().display()));
        let child = Command::new(&command[0])
            .args(&command[1..])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start SIPp (is sip-tester installed?): {e}\n{command:?}")
            });
        SippRun {
            scenario: scenario.to_string(),
            command,
            child,
            deadline: Instant::now() + Duration::from_secs(seconds.max(1)) + KILL_GRACE,
            dir: Some(dir),
        }
    }

    /// Waits for SIPp to exit (killing it at the deadline) and collects its files.
    fn wait(&mut self) -> SippResult {
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return self.collect(status.code(), false),
                Ok(None) if Instant::now() < self.deadline => {
                    thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => return self.kill_and_collect(),
                Err(e) => panic!("SIPp {}: cannot wait for it: {e}", self.scenario),
            }
        }
    }

    fn kill_and_collect(&mut self) -> SippResult {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.collect(None, true)
    }

    fn collect(&mut self, exit_code: Option<i32>, killed: bool) -> SippResult {
        let dir = self
            .dir
            .take()
            .unwrap_or_else(|| panic!("SIPp {}: result already collected", self.scenario));
        let stats = read_lossy(&dir.join("stats.csv"));
        let counter = |name: &str| stat_counter(&stats, name);
        SippResult {
            scenario: self.scenario.clone(),
            command: self.command.clone(),
            exit_code,
            killed,
            successful_calls: counter("SuccessfulCall(C)"),
            failed_calls: counter("FailedCall(C)"),
            errors: read_lossy(&dir.join("errors.log")),
            screen: read_lossy(&dir.join("screen.log")),
            messages: read_lossy(&dir.join("messages.log")),
            stderr: read_lossy(&dir.join("stderr.log")),
            stats,
            dir,
        }
    }
}

impl Drop for SippRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `name` in the last row of SIPp's statistics CSV.
fn stat_counter(stats: &str, name: &str) -> Option<u64> {
    let mut lines = stats.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next()?;
    let column = header.split(';').position(|h| h.trim() == name)?;
    let last = lines.next_back()?;
    last.split(';').nth(column)?.trim().parse().ok()
}

/// Whether a socket is bound to 127.0.0.1:`port` (UDP) or listening there (TCP), read from
/// /proc/net so that probing never takes the port from the process starting up.
fn port_is_bound(port: u16, tcp: bool) -> bool {
    let table = if tcp {
        "/proc/net/tcp"
    } else {
        "/proc/net/udp"
    };
    let text = fs::read_to_string(table).unwrap_or_else(|e| panic!("cannot read {table}: {e}"));
    // "  sl  local_address rem_address   st ...", addresses as hex IP:PORT, st 0A = LISTEN.
    let local = format!("0100007F:{port:04X}");
    text.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        let (address, state) = (fields.next(), fields.nth(1));
        address == Some(local.as_str()) && (!tcp || state == Some("0A"))
    })
}

fn transport_is_tcp(args: &[&str]) -> bool {
    args.windows(2)
        .any(|w| w[0] == "-t" && w[1].starts_with('t'))
}

/// A file's text, or a note saying why there is none.
fn read_lossy(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Writes a titled section holding the last `max` bytes of `text`.
fn section(f: &mut fmt::Formatter<'_>, title: &str, text: &str, max: usize) -> fmt::Result {
    if text.trim().is_empty() {
        return writeln!(f, "--- {title}: (empty)");
    }
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let cut = if start > 0 { "(...) " } else { "" };
    writeln!(f, "--- {title}:\n{cut}{}", &text[start..])
}
