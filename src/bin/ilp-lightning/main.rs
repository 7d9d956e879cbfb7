//! `ilp-lightning`: the command-line front of the library. Thin: it parses arguments and calls
//! into the crate.

use std::process::ExitCode;

#[cfg(feature = "sim")]
mod sim;

const USAGE: &str = "usage: ilp-lightning <command> [options]

commands:
  decode [HEX | -]   decode an ILP or BTP packet into JSON
  sim --nodes a,b --dir DIR [--port BASE]
                     run simulated LND nodes (`ilp-lightning sim --help`)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("-h") | Some("--help") | Some("help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        #[cfg(feature = "sim")]
        Some("sim") => sim::run(&args[1..]),
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
