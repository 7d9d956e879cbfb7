//! `ilp-lightning`: the command-line front of the library. Thin: it parses arguments and calls
//! into the crate.

mod bench;
mod flags;
mod server;

use std::process::ExitCode;

const USAGE: &str = "usage: ilp-lightning <command> [options]

commands:
  decode [HEX | -]   decode an ILP or BTP packet into JSON";

fn usage() -> String {
    format!("{USAGE}\n{}\n{}", server::USAGE, bench::USAGE)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("server") => server::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("bench-idle-clients") => bench::run_idle_clients(&args[1..]),
        Some("-h") | Some("--help") | Some("help") => {
            println!("{}", usage());
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{}", usage());
            ExitCode::from(2)
        }
    }
}
