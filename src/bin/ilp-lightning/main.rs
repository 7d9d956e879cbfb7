//! `ilp-lightning`: the command-line front of the library. Thin: it parses arguments, calls
//! into the crate and prints.

mod bench;
#[cfg(feature = "sim")]
mod bench_hubs;
mod client;
mod decode;
#[cfg(feature = "sim")]
mod demo;
mod flags;
mod json;
mod node;
mod server;
mod settle;
mod status;

use std::io::Read;
use std::process::ExitCode;

#[cfg(feature = "sim")]
mod sim;

use flags::wants_help;

/// Exit status for bad input and bad usage.
const EXIT_BAD_INPUT: u8 = 2;

const DECODE_USAGE: &str =
    "  decode [HEX | -]   decode an ILP or BTP packet into JSON (hex from stdin when - or absent)";

#[cfg(feature = "sim")]
const SIM_SUMMARY: &str = "  sim --nodes a,b --dir DIR [--port BASE]
                     run simulated LND nodes (`ilp-lightning sim --help`)";
#[cfg(not(feature = "sim"))]
const SIM_SUMMARY: &str = "";

#[cfg(feature = "sim")]
const DEMO_SUMMARY: &str = demo::SUMMARY;
#[cfg(not(feature = "sim"))]
const DEMO_SUMMARY: &str = "";

fn usage() -> String {
    let commands = [
        DEMO_SUMMARY,
        server::SUMMARY,
        client::SUMMARY,
        status::SUMMARY,
        SIM_SUMMARY,
        DECODE_USAGE,
        bench::USAGE,
    ];
    let listed: Vec<&str> = commands.into_iter().filter(|c| !c.is_empty()).collect();
    format!(
        "usage: ilp-lightning <command> [options]   (ilp-lightning <command> --help for more)\n\n\
         commands:\n{}\n\n\
         Logs go to stderr (RUST_LOG=info for more); results are JSON lines on stdout.",
        listed.join("\n")
    )
}

fn main() -> ExitCode {
    // Logs go to stderr, warnings and errors only unless RUST_LOG asks for more (RUST_LOG=info
    // shows the hub's accounts coming and going); stdout stays the commands' JSON.
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,ilp_lightning::status=info"),
    )
    .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or_default();
    match args.first().map(String::as_str) {
        #[cfg(feature = "sim")]
        Some("demo") => demo::run(rest),
        Some("server") => server::run(rest),
        Some("client") => client::run(rest),
        Some("status") => status::run(rest),
        Some("bench") if wants_help(rest) => {
            println!("usage: ilp-lightning\n{}", bench::USAGE);
            ExitCode::SUCCESS
        }
        Some("bench") => bench::run(rest),
        Some("bench-idle-clients") => bench::run_idle_clients(rest),
        Some("-h") | Some("--help") | Some("help") => {
            println!("{}", usage());
            ExitCode::SUCCESS
        }
        Some("decode") => run_decode(rest),
        #[cfg(feature = "sim")]
        Some("sim") => sim::run(rest),
        None => {
            eprintln!("{}", usage());
            ExitCode::from(EXIT_BAD_INPUT)
        }
        Some(other) => {
            eprintln!("ilp-lightning: unknown command {other:?} (ilp-lightning --help lists them)");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

fn run_decode(args: &[String]) -> ExitCode {
    if wants_help(args) {
        println!(
            "usage: ilp-lightning decode [HEX | -]\n\n\
             Decodes an ILP Prepare, Fulfill or Reject, or a BTP packet (told apart by the first \
             byte), into one JSON line; with - or no argument it reads hex from stdin."
        );
        return ExitCode::SUCCESS;
    }
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
