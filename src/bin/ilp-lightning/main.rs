//! `ilp-lightning`: the command-line front of the library. Thin: it parses arguments and calls
//! into the crate.

use std::process::ExitCode;

const USAGE: &str = "usage: ilp-lightning <command> [options]

commands:
  decode [HEX | -]   decode an ILP or BTP packet into JSON";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("-h") | Some("--help") | Some("help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
