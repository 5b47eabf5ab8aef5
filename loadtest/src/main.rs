//! `sipshard-load`: the load generator's command line.
//!
//! The open-loop generator (scenarios, schedules, HdrHistogram reports) arrives with the load-test
//! issue. What runs today is `sipshard-load responder`: a stateless UDP server that answers every
//! request with one status, used to calibrate a load generator (SIPp, or ours) against a server
//! that costs next to nothing.

mod responder;

use std::process::ExitCode;

const USAGE: &str = "usage: sipshard-load responder [--listen ADDR:PORT] [--status CODE]
  Answers every SIP request on UDP with CODE (default 200), statelessly. ACKs are absorbed.
  Default address 127.0.0.1:5060; port 0 picks a free port. Prints the bound address, then runs
  until stopped. Malformed requests get the error status the parser chooses; malformed responses
  and junk are dropped and counted.";

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
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
