//! `sipshard`: the node's command line.
//!
//! `sipshard [--config FILE] [--set SECTION/KEY=VALUE]... [--threads N] [--log-json]` runs the
//! node; `--dump-default` prints every configuration key; `sipshard check FILE...` prints the
//! parser's verdict on message files. A configuration error is one line on stderr and exit
//! status 2: the node never starts half-configured.
//!
//! Signals: SIGHUP reads the password file and `log-level` again; SIGTERM or SIGINT stops
//! gracefully (see
//! `sipshard_engine::lifecycle`), and a second one stops at once. Logs go to stderr, as text or,
//! with `--log-json`, one JSON object a line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use sipshard_engine::admin;
use sipshard_engine::config::{Config, LogLevel};
use sipshard_engine::lifecycle::{Lifecycle, Phase};
use sipshard_engine::node::Node;
use sipshard_engine::reload::PasswordReload;
use sipshard_engine::startup::node_options;
use sipshard_net::{ErrorAction, Message};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{Registry, reload};

const USAGE: &str =
    "usage: sipshard [--config FILE] [--set SECTION/KEY=VALUE]... [--threads N] [--log-json]
       sipshard --dump-default
       sipshard check FILE...
       sipshard --version

Without --config the embedded defaults apply: a registrar and proxy for localhost and 127.0.0.1
on sip:127.0.0.1:5060 (UDP and TCP), bindings in memory, one shard per core.";

struct Args {
    config: Option<PathBuf>,
    sets: Vec<String>,
    threads: Option<usize>,
    /// Logs as JSON lines.
    log_json: bool,
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match argv.first().map(String::as_str) {
        Some("check") if argv.len() > 1 => return check_files(&argv[1..]),
        Some("--version") => {
            println!("sipshard {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Some("--help" | "-h") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some("--dump-default") => {
            print!("{}", Config::dump_default());
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let args = match parse_args(&argv) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("sipshard: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = match Config::load(args.config.as_deref(), &args.sets) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("sipshard: {e}");
            return ExitCode::from(2);
        }
    };
    let log_level = init_logging(config.global.log_level, args.log_json);
    let options = match node_options(&config, args.threads) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("sipshard: {e}");
            return ExitCode::from(2);
        }
    };
    let listening: Vec<String> = options
        .runtime
        .listens
        .iter()
        .map(|(t, a)| format!("{} {a}", t.via_token().to_ascii_lowercase()))
        .collect();
    let shards = options.shards;
    let password_reload = options.password_reload.clone();
    let node = match Node::start(options, config.global.shutdown_grace_period) {
        Ok(node) => node,
        Err(e) => {
            eprintln!("sipshard: {e}");
            return ExitCode::from(2);
        }
    };
    let reload = Reload {
        passwords: password_reload,
        log_level,
        config: args.config.clone(),
        sets: args.sets.clone(),
    };
    if let Err(e) = handle_signals(reload, node.lifecycle()) {
        eprintln!("sipshard: cannot handle signals: {e}");
        return ExitCode::from(2);
    }
    if let Some(addr) = config.global.admin_listen {
        // The SIP service does not depend on its monitoring port: a node whose admin port is
        // taken serves SIP, and its monitoring sees it unready (nothing answers /ready there).
        if let Err(e) = admin::start(addr, node.observed()) {
            tracing::error!("admin endpoint not started: cannot listen on {addr}: {e}");
        }
    }
    println!(
        "sipshard listening on {} ({shards} shards)",
        listening.join(", ")
    );
    node.run();
    ExitCode::SUCCESS
}

/// What SIGHUP changes while the node runs.
struct Reload {
    /// The password file, with authentication enabled.
    passwords: Option<Arc<PasswordReload>>,
    log_level: LevelHandle,
    /// Where the configuration came from, read again for `log-level`.
    config: Option<PathBuf>,
    sets: Vec<String>,
}

impl Reload {
    /// Reads the password file again (a shard never blocks on disk: the shards take it up on
    /// their next tick), and the configuration for `log-level`. Other keys need a restart; a
    /// configuration that no longer loads changes nothing.
    fn reload(&self) {
        match &self.passwords {
            // The outcome is logged by `reload`.
            Some(passwords) => {
                let _ = passwords.reload();
            }
            None => tracing::info!("SIGHUP: authentication is off, no password file to reload"),
        }
        match Config::load(self.config.as_deref(), &self.sets) {
            Ok(config) => {
                let level = level_filter(config.global.log_level);
                match self.log_level.modify(|filter| *filter = level) {
                    Ok(()) => tracing::info!(%level, "SIGHUP: log level set"),
                    Err(e) => tracing::warn!("SIGHUP: log level not changed: {e}"),
                }
            }
            Err(e) => tracing::warn!("SIGHUP: configuration not reloaded: {e}"),
        }
    }
}

/// Handles signals on a thread of its own: SIGHUP reloads what can change live ([`Reload`]);
/// SIGTERM and SIGINT start the graceful stop, and a second one stops at once.
fn handle_signals(reload: Reload, lifecycle: Arc<Lifecycle>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("sipshard-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                match signal {
                    SIGHUP => reload.reload(),
                    _ => match lifecycle.signal_stop() {
                        Phase::Draining => tracing::info!(
                            grace = ?lifecycle.grace(),
                            "stop signal: draining (a second one stops at once)"
                        ),
                        _ => tracing::warn!("second stop signal: stopping now"),
                    },
                }
            }
        })?;
    Ok(())
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut args = Args {
        config: None,
        sets: Vec::new(),
        threads: None,
        log_json: false,
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--config" => args.config = Some(PathBuf::from(value()?)),
            "--set" => args.sets.push(value()?.clone()),
            "--log-json" => args.log_json = true,
            "--threads" => {
                let v = value()?;
                args.threads = Some(
                    v.parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or(format!("--threads: not a positive number: {v}"))?,
                );
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// Changes the level of the logs while the node runs (SIGHUP).
type LevelHandle = reload::Handle<LevelFilter, Registry>;

fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warning => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    }
}

/// Logs to stderr at `level`: human-readable lines (coloured on a terminal only), or with `json`
/// one JSON object a line (`timestamp`, `level`, `fields.message` and the event's other fields,
/// `target`, `threadName`), for log collectors. Returns the handle that changes the level.
fn init_logging(level: LogLevel, json: bool) -> LevelHandle {
    let (filter, handle) = reload::Layer::new(level_filter(level));
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_thread_names(true);
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry.with(logs.json()).init();
    } else {
        registry.with(logs).init();
    }
    handle
}

/// Prints one verdict line per file; fails if any file could not be read or was refused.
fn check_files(paths: &[String]) -> ExitCode {
    let mut all_accepted = true;
    for path in paths {
        let verdict = match std::fs::read(path) {
            Ok(bytes) => verdict(&bytes),
            Err(e) => Err(format!("unreadable: {e}")),
        };
        match verdict {
            Ok(summary) => println!("{path}: accepted: {summary}"),
            Err(why) => {
                all_accepted = false;
                println!("{path}: {why}");
            }
        }
    }
    if all_accepted {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn verdict(bytes: &[u8]) -> Result<String, String> {
    let refused = |e: sipshard_net::ParseError| match e.action() {
        ErrorAction::Respond { status, reason } => {
            format!("refused: would answer {status} {reason}")
        }
        ErrorAction::Drop => format!("refused: would drop ({})", e.kind.reason()),
    };
    let msg = Message::parse_datagram(bytes).map_err(refused)?;
    msg.validate().map_err(refused)?;
    let first = match (msg.method(), msg.request_uri(), msg.status()) {
        (Some(method), Some(uri), _) => format!("{method} {}", uri.as_str()),
        (_, _, Some(status)) => format!("response {status}"),
        _ => String::new(),
    };
    Ok(format!(
        "{first}, {} headers, {} body bytes",
        msg.header_lines().len(),
        msg.body().len()
    ))
}
