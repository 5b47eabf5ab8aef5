//! `sipshard-load`: the load generator's command line.
//!
//! `sipshard-load options|register|message|call` sends SIP requests over UDP, TCP or TLS (`conn`,
//! `tls`) on an exact open-loop schedule
//! and reports latency percentiles from HdrHistogram (`generate`). `sipshard-load responder` is a
//! stateless UDP server that answers every request with one status, used to calibrate a load
//! generator (SIPp, or ours) against a server that costs next to nothing. `sipshard-load plot`
//! draws runs' JSON summaries as SVG (`plot`); `sipshard-load compare` puts two side by side
//! (`compare`).
//!
//! Protocol parts are sans-IO and take `now`: `schedule` (when each request is due), `client`
//! (client transactions: Timer E/F, A/B, matching by branch, counts), `call` (ACK, hold, BYE),
//! `scenario` (the requests), `digest` (answering challenges), `report` (histograms and report
//! formats). `generate` is the I/O shell; `uas` answers calls.

mod call;
mod client;
mod compare;
mod conn;
mod cpu;
mod digest;
mod generate;
mod plot;
mod report;
mod responder;
mod scenario;
mod schedule;
mod tls;
mod uas;
mod users;

use std::process::ExitCode;

const USAGE: &str =
    "usage: sipshard-load options|register|message|call --target ADDR:PORT --rate R [options]
       (sipshard-load options --help for the options)
usage: sipshard-load responder [--listen ADDR:PORT] [--status CODE] [--pause-after N --pause-ms MS]
  Answers every SIP request on UDP with CODE (default 200), statelessly. ACKs are absorbed.
  Default address 127.0.0.1:5060; port 0 picks a free port. Prints the bound address, then runs
  until stopped. Malformed requests get the error status the parser chooses; malformed responses
  and junk are dropped and counted. --pause-after N --pause-ms MS: stall once for MS ms after
  answering N requests (requests arriving meanwhile wait in the socket buffer).
usage: sipshard-load uas [--listen ADDR:PORT]
  The callee of `call`: answers INVITE with 180 and 200 (Contact, SDP), BYE with 200 (481 for a
  dialog it did not answer), CANCEL with 481, absorbs ACKs, answers other requests with 200;
  statelessly. Prints its counts to stderr once a second when they change.
usage: sipshard-load plot --latency RUN.json... -o OUT.svg | --timeline RUN.json -o OUT.svg
usage: sipshard-load compare A.json B.json";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("responder") => match responder::Options::from_args(&args[1..]) {
            Ok(options) => match responder::run(&options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sipshard-load responder: {e}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("sipshard-load responder: {e}\n{USAGE}");
                ExitCode::from(2)
            }
        },
        Some("plot") => {
            if args.iter().any(|a| a == "--help" || a == "-h") {
                println!("{}", plot::USAGE);
                return ExitCode::SUCCESS;
            }
            match plot::run(&args[1..]) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sipshard-load plot: {e}\n{}", plot::USAGE);
                    ExitCode::from(2)
                }
            }
        }
        Some("compare") => {
            if args.iter().any(|a| a == "--help" || a == "-h") {
                println!("{}", compare::USAGE);
                return ExitCode::SUCCESS;
            }
            match compare::run(&args[1..]) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sipshard-load compare: {e}\n{}", compare::USAGE);
                    ExitCode::from(2)
                }
            }
        }
        Some("uas") => match uas::Options::from_args(&args[1..]) {
            Ok(options) => match uas::run(&options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sipshard-load uas: {e}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("sipshard-load uas: {e}\n{USAGE}");
                ExitCode::from(2)
            }
        },
        Some(command @ ("options" | "register" | "message" | "call")) => {
            if args.iter().any(|a| a == "--help" || a == "-h") {
                println!("{}", generate::USAGE);
                return ExitCode::SUCCESS;
            }
            match generate::Options::from_args(command, &args[1..]) {
                Ok(options) => match generate::run(&options) {
                    Ok(true) => ExitCode::SUCCESS,
                    Ok(false) => ExitCode::FAILURE,
                    Err(e) => {
                        eprintln!("sipshard-load {command}: {e}");
                        ExitCode::from(2)
                    }
                },
                Err(e) => {
                    eprintln!("sipshard-load {command}: {e}\n{}", generate::USAGE);
                    ExitCode::from(2)
                }
            }
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
