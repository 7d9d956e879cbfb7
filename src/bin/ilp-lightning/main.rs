//! `ilp-lightning`: the command-line front of the library. Thin: it parses arguments and calls
//! into the crate.

mod decode;
mod json;

use std::io::Read;
use std::process::ExitCode;

const USAGE: &str = "usage: ilp-lightning <command> [options]

commands:
  decode [HEX | -]   decode an ILP or BTP packet into JSON (hex from stdin when - or absent)";

/// Exit status for bad input and bad usage.
const EXIT_BAD_INPUT: u8 = 2;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("-h") | Some("--help") | Some("help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some("decode") => run_decode(&args[1..]),
        _ => {
            eprintln!("{USAGE}");
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
