//! `sipshard`: the node's command line.
//!
//! `sipshard [--config FILE] [--set SECTION/KEY=VALUE]... [--threads N]` runs the node;
//! `--dump-default` prints every configuration key; `sipshard check FILE...` prints the parser's
//! verdict on message files. A configuration error is one line on stderr and exit status 2: the
//! node never starts half-configured. SIGHUP reads the password file again.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use sipshard_engine::config::{Config, LogLevel};
use sipshard_engine::node::Node;
use sipshard_engine::reload::PasswordReload;
use sipshard_engine::startup::node_options;
use sipshard_net::{ErrorAction, Message};

const USAGE: &str = "usage: sipshard [--config FILE] [--set SECTION/KEY=VALUE]... [--threads N]
       sipshard --dump-default
       sipshard check FILE...
       sipshard --version

Without --config the embedded defaults apply: a registrar and proxy for localhost and 127.0.0.1
on sip:127.0.0.1:5060 (UDP and TCP), bindings in memory, one shard per core.";

struct Args {
    config: Option<PathBuf>,
    sets: Vec<String>,
    threads: Option<usize>,
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
    init_logging(config.global.log_level);
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
    if let Err(e) = handle_sighup(options.password_reload.clone()) {
        eprintln!("sipshard: cannot handle SIGHUP: {e}");
        return ExitCode::from(2);
    }
    let node = match Node::start(options) {
        Ok(node) => node,
        Err(e) => {
            eprintln!("sipshard: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "sipshard listening on {} ({shards} shards)",
        listening.join(", ")
    );
    node.join();
    ExitCode::SUCCESS
}

/// Reads the password file again on every SIGHUP, on a thread of its own (a shard never blocks on
/// disk). Without authentication there is nothing to reload; the signal is logged, not fatal.
fn handle_sighup(reload: Option<Arc<PasswordReload>>) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    std::thread::Builder::new()
        .name("sipshard-signals".into())
        .spawn(move || {
            for _ in signals.forever() {
                match &reload {
                    // The outcome is logged by `reload`.
                    Some(reload) => {
                        let _ = reload.reload();
                    }
                    None => tracing::info!("SIGHUP: authentication is off, nothing to reload"),
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
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--config" => args.config = Some(PathBuf::from(value()?)),
            "--set" => args.sets.push(value()?.clone()),
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

fn init_logging(level: LogLevel) {
    let filter = match level {
        LogLevel::Error => tracing::Level::ERROR,
        LogLevel::Warning => tracing::Level::WARN,
        LogLevel::Info => tracing::Level::INFO,
        LogLevel::Debug => tracing::Level::DEBUG,
        LogLevel::Trace => tracing::Level::TRACE,
    };
    tracing_subscriber::fmt()
        .with_max_level(filter)
        .with_writer(std::io::stderr)
        .init();
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
