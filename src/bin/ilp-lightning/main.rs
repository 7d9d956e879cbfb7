//! `ilp-lightning`: the command-line front of the library. Thin: it parses arguments and calls
//! into the crate.

mod bench;
mod decode;
mod flags;
mod json;
mod server;

use std::io::Read;
use std::process::ExitCode;

#[cfg(feature = "sim")]
mod sim;

const USAGE: &str = "usage: ilp-lightning <command> [options]

commands:
  decode [HEX | -]   decode an ILP or BTP packet into JSON (hex from stdin when - or absent)
  sim --nodes a,b --dir DIR [--port BASE]
                     run simulated LND nodes (`ilp-lightning sim --help`)";

/// Exit status for bad input and bad usage.
const EXIT_BAD_INPUT: u8 = 2;

fn usage() -> String {
    format!("{USAGE}\n{}\n{}", server::USAGE, bench::USAGE)
}

fn main() -> ExitCode {
    // Logs go to stderr, warnings and errors only unless RUST_LOG asks for more (RUST_LOG=info
    // shows the hub's accounts coming and going); stdout stays the commands' JSON.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("server") => server::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("bench-idle-clients") => bench::run_idle_clients(&args[1..]),
        Some("-h") | Some("--help") | Some("help") => {
            println!("{}", usage());
            ExitCode::SUCCESS
        }
        Some("decode") => run_decode(&args[1..]),
        #[cfg(feature = "sim")]
        Some("sim") => sim::run(&args[1..]),
        _ => {
            eprintln!("{}", usage());
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

fn run_decode(args: &[String]) -> ExitCode {
    let input = match args {
        [] => read_stdin(),
        [dash] if dash == "-" => read_stdin(),
        [hex] => Ok(hex.clone()),
        _ => Err("decode takes at most one argument: HEX, or - for stdin".to_owned()),
    };
    match input.and_then(|text| decode::decode_hex(&text).map_err(|e| e.0)) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

fn read_stdin() -> Result<String, String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read stdin: {e}"))?;
    Ok(text)
}
