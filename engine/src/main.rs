//! `sipshard`: the node's command line.
//!
//! The SIP server itself (shards, transactions, registrar) is not built yet; it arrives with the
//! node issue. What runs today is `sipshard check`, which runs the node's message parser over
//! files holding one SIP message each and prints what the node will do with them: accept, answer
//! with an error status, or drop. Operators use it to see why a phone's message is refused.

use std::process::ExitCode;

use sipshard_net::{ErrorAction, Message};

const USAGE: &str = "usage: sipshard check FILE...   parse SIP messages (one per file, as UDP datagrams) and print the verdict
       sipshard --version

The SIP server is not part of this build yet: `sipshard` without a command does not start one.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("check") if args.len() > 1 => check_files(&args[1..]),
        Some("--version") => {
            println!("sipshard {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
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
