//! `ilp-lightning client`: a client of a hub that settles over LND. `send` streams test packets
//! to an ILP address; `receive` fulfils the test packets that reach it. Each ends with one JSON
//! line on stdout.
//!
//! Test packets carry their fulfillment in their data (see
//! [`ilp_plugin_lightning::plugin::test_packets`]): a convention for trying a hub out, not a
//! payment protocol.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use ilp_plugin_lightning::btp::BtpUri;
use ilp_plugin_lightning::ilp::{Address, Packet};
use ilp_plugin_lightning::plugin::{test_packets, LightningPlugin};
use ilp_plugin_lightning::settlement::SettlementOptions;

use crate::flags::{command_options, FlagError, Flags};
use crate::json::Object;
use crate::node::{self, NodeLocation};
use crate::settle;

/// The lines `ilp-lightning --help` shows.
pub const SUMMARY: &str =
    "  client --server btp+ws://USER:TOKEN@HOST:PORT [options] send --to ADDRESS --amount SAT
  client --server btp+ws://USER:TOKEN@HOST:PORT [options] receive [--for SECONDS]
                     a client of a hub, settling over LND: stream test packets, or take
                     them (`ilp-lightning client --help`)";

/// The command's usage text.
pub fn usage() -> String {
    format!(
        "usage: ilp-lightning client --server btp+ws://USER:TOKEN@HOST:PORT [options] COMMAND

A client of a hub (`ilp-lightning server`, or the JS plugin's server role), settling over
Lightning through LND. The hub's account USER is bound to the first TOKEN it sees.

commands:
  send --to ADDRESS --amount SAT [--packets N]
      sends N (default 1) test packets of SAT each to ADDRESS, one after the other; prints
      {{\"sent\":..,\"fulfilled\":..,\"rejected\":..,\"amount_fulfilled_sat\":..}} and exits 0 if
      every packet was fulfilled, 1 otherwise. After --prefund, a packet the hub refuses with
      T04 (it has not booked the payment yet) is sent again until it expires (30 s).
  receive [--for SECONDS] [--packets N]
      fulfils the test packets that reach it; ends after SECONDS, or once N packets were
      fulfilled and the hub paid for them, or (with neither) when stdin closes; prints
      {{\"fulfilled\":..,\"amount_sat\":..,\"money_received_sat\":..}} and exits 0, or 1 when
      --packets was given and not reached in time. It says on stderr when it is ready.

Test packets carry their fulfillment in their data: the receiver fulfils a Prepare when
sha256(data) equals its condition. Anyone on the path can do the same, so this is a convention
for trying a hub out, not a payment protocol.

options:
  --server URI              the hub, btp+ws://USER:TOKEN@HOST:PORT
  --prefund SAT             pay the hub SAT over Lightning first (the hub's default credit
                            limit is 0: a client pays before it sends)
{}
{}",
        node::USAGE,
        settle::USAGE
    )
}

const OWN_FLAGS: &[&str] = &["server", "prefund"];

/// How long a test packet may take before it expires.
const PACKET_LIFETIME: Duration = Duration::from_secs(30);

/// What `client` does once connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `send --to ADDRESS --amount SAT [--packets N]`.
    Send {
        /// Where the packets go.
        to: Address,
        /// Each packet's amount.
        amount: u64,
        /// How many packets.
        packets: u64,
    },
    /// `receive [--for SECONDS] [--packets N]`.
    Receive {
        /// Stop after this long.
        duration: Option<Duration>,
        /// Stop once this many packets were fulfilled and paid for.
        packets: Option<u64>,
    },
}

/// The client's settings, from its flags.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `--server`.
    pub server: String,
    /// The node it settles through.
    pub node: NodeLocation,
    /// `--prefund`.
    pub prefund: u64,
    /// `--store`.
    pub store: PathBuf,
    /// The settlement rules (client defaults).
    pub settlement: SettlementOptions,
    /// The command.
    pub action: Action,
}

/// The default store's name for the account `username` (`client-USER`, with only letters,
/// digits, `-` and `_` kept).
fn default_store_name(username: Option<&str>) -> String {
    match username {
        Some(user) if !user.is_empty() => {
            let safe: String = user
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("client-{safe}")
        }
        _ => "client".to_owned(),
    }
}

fn parse_action(args: &[String]) -> Result<Action, FlagError> {
    let Some((command, rest)) = args.split_first() else {
        return Err(FlagError("a command is needed: send or receive".into()));
    };
    match command.as_str() {
        "send" => {
            let flags = Flags::parse(rest, &["to", "amount", "packets"])?;
            let to =
                Address::new(flags.required("to")?).map_err(|e| FlagError(format!("--to: {e}")))?;
            let packets = flags.parsed("packets")?.unwrap_or(1);
            if packets == 0 {
                return Err(FlagError("--packets must be at least 1".into()));
            }
            Ok(Action::Send {
                to,
                amount: flags
                    .required("amount")?
                    .parse()
                    .map_err(|e| FlagError(format!("--amount: {e}")))?,
                packets,
            })
        }
        "receive" => {
            let flags = Flags::parse(rest, &["for", "packets"])?;
            let duration = flags.parsed::<u64>("for")?.map(Duration::from_secs);
            Ok(Action::Receive {
                duration,
                packets: flags.parsed("packets")?,
            })
        }
        other => Err(FlagError(format!(
            "unknown command {other:?}: send or receive"
        ))),
    }
}

/// Reads and checks the flags.
pub fn parse(args: &[String]) -> Result<ClientOptions, FlagError> {
    let known: Vec<&str> = [OWN_FLAGS, node::FLAGS, settle::FLAGS].concat();
    let (flags, rest) = Flags::parse_until_command(args, &known)?;
    let server = flags.required("server")?.to_owned();
    let uri = BtpUri::parse(&server).map_err(|e| FlagError(format!("--server: {e}")))?;
    let action = parse_action(rest)?;
    Ok(ClientOptions {
        node: node::parse(&flags)?,
        prefund: flags.parsed("prefund")?.unwrap_or(0),
        store: settle::store_dir(&flags, &default_store_name(uri.username.as_deref()))?,
        settlement: settle::options(&flags, SettlementOptions::client())?,
        server,
        action,
    })
}

/// The client plugin (not connected yet), settling over `options.node`.
fn build_plugin(options: &ClientOptions) -> Result<Arc<LightningPlugin>, String> {
    let (node, _info) = node::connect(&options.node)?;
    let store = settle::open_store(&options.store)?;
    let plugin = LightningPlugin::client(&options.server)
        .lightning(node)
        .store(store)
        .settlement_options(options.settlement.clone())
        .build()
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(plugin))
}

/// What `send` did.
#[derive(Debug, Default)]
struct SendReport {
    sent: u64,
    fulfilled: u64,
    rejected: u64,
    failed: u64,
    amount_fulfilled: u64,
}

fn send(
    plugin: &LightningPlugin,
    to: &Address,
    amount: u64,
    packets: u64,
    retry_t04: bool,
) -> SendReport {
    let mut report = SendReport::default();
    let mut told = 0;
    for index in 0..packets {
        let prepare = match test_packets::prepare(to.as_str(), amount, PACKET_LIFETIME) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("ilp-lightning client: cannot build a packet: {e}");
                report.failed += 1;
                continue;
            }
        };
        report.sent += 1;
        // Only the first packets can meet a prefund the hub has not booked yet.
        let retry = retry_t04 && report.fulfilled == 0;
        match test_packets::send(plugin, &prepare, retry) {
            Ok(reply) => match Packet::parse(&reply) {
                Ok(Packet::Fulfill(_)) => {
                    report.fulfilled += 1;
                    report.amount_fulfilled = report.amount_fulfilled.saturating_add(amount);
                }
                Ok(Packet::Reject(r)) => {
                    report.rejected += 1;
                    // A few lines, not one per packet.
                    if told < 3 {
                        told += 1;
                        eprintln!(
                            "ilp-lightning client: packet {index} rejected: {} {} (by {})",
                            r.code().as_str(),
                            r.message(),
                            r.triggered_by()
                        );
                    }
                }
                _ => report.failed += 1,
            },
            Err(e) => {
                report.failed += 1;
                if told < 3 {
                    told += 1;
                    eprintln!("ilp-lightning client: packet {index} failed: {e}");
                }
            }
        }
    }
    report
}

/// What `receive` saw.
#[derive(Debug, Default)]
struct ReceiveReport {
    fulfilled: u64,
    amount: u64,
    money_received: u64,
}

enum Seen {
    Fulfilled(u64),
    Money(u64),
    StdinClosed,
}

/// Registers the handlers of a receiver: it fulfils test packets and reports them, and what it
/// is paid, on `tx`.
fn register_receiver(plugin: &Arc<LightningPlugin>, tx: Sender<Seen>) -> Result<(), String> {
    let fulfilled = tx.clone();
    test_packets::receive(plugin, move |amount| {
        let _ = fulfilled.send(Seen::Fulfilled(amount));
    })
    .map_err(|e| e.to_string())?;
    plugin
        .register_money_handler(move |amount| {
            let _ = tx.send(Seen::Money(amount));
            Ok(())
        })
        .map_err(|e| e.to_string())
}

/// Waits for the end `receive` was given, counting what `seen` reports; `true` if a
/// `--packets` goal was reached (or none was set).
fn receive(
    seen: &Receiver<Seen>,
    duration: Option<Duration>,
    packets: Option<u64>,
) -> (ReceiveReport, bool) {
    let deadline = duration.map(|d| Instant::now() + d);
    let mut report = ReceiveReport::default();
    let goal_met = |r: &ReceiveReport| {
        packets.is_some_and(|n| r.fulfilled >= n && r.money_received >= r.amount)
    };
    loop {
        if goal_met(&report) {
            return (report, true);
        }
        let next = match deadline {
            Some(at) => seen.recv_deadline(at),
            None => seen.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match next {
            Ok(Seen::Fulfilled(amount)) => {
                report.fulfilled += 1;
                report.amount = report.amount.saturating_add(amount);
            }
            Ok(Seen::Money(amount)) => {
                report.money_received = report.money_received.saturating_add(amount)
            }
            Ok(Seen::StdinClosed) | Err(_) => return (report, packets.is_none()),
        }
    }
}

/// Reports on `tx` when stdin closes, from a thread left to end with the process (a read of
/// stdin cannot be interrupted).
fn watch_stdin(tx: Sender<Seen>) -> Result<(), String> {
    std::thread::Builder::new()
        .name("client-stdin".into())
        .spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            let _ = tx.send(Seen::StdinClosed);
        })
        .map(drop)
        .map_err(|e| format!("cannot start a thread: {e}"))
}

/// `ilp-lightning client ...`: exit code 2 for bad flags, 1 when it cannot start or did not
/// get everything through.
pub fn run(args: &[String]) -> ExitCode {
    let options = match command_options("client", args, usage, parse) {
        Ok(options) => options,
        Err(exit) => return exit,
    };
    match run_parsed(&options) {
        Ok((line, ok)) => {
            println!("{line}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("ilp-lightning client: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Connects, prefunds, does the command; the JSON line and whether all went through.
fn run_parsed(options: &ClientOptions) -> Result<(String, bool), String> {
    let plugin = build_plugin(options)?;
    let (tx, seen) = unbounded();
    if let Action::Receive { .. } = options.action {
        register_receiver(&plugin, tx.clone())?;
    }
    plugin.connect().map_err(|e| e.to_string())?;
    if options.prefund > 0 {
        plugin
            .send_money(options.prefund)
            .map_err(|e| format!("prefund of {} sat: {e}", options.prefund))?;
        eprintln!("ilp-lightning client: paid the hub {} sat", options.prefund);
    }
    let (line, ok) = match &options.action {
        Action::Send {
            to,
            amount,
            packets,
        } => {
            let report = send(&plugin, to, *amount, *packets, options.prefund > 0);
            let mut line = Object::new();
            line.number("sent", report.sent)
                .number("fulfilled", report.fulfilled)
                .number("rejected", report.rejected)
                .number("amount_fulfilled_sat", report.amount_fulfilled)
                .number("failed", report.failed)
                .number("prefunded_sat", options.prefund);
            (line.finish(), report.fulfilled == *packets)
        }
        Action::Receive { duration, packets } => {
            if duration.is_none() && packets.is_none() {
                watch_stdin(tx)?;
            }
            let address = plugin
                .own_address()
                .map(|a| a.as_str().to_owned())
                .unwrap_or_default();
            eprintln!("ilp-lightning client: receiving test packets at {address}");
            let (report, reached) = receive(&seen, *duration, *packets);
            let mut line = Object::new();
            line.number("fulfilled", report.fulfilled)
                .number("amount_sat", report.amount)
                .number("money_received_sat", report.money_received);
            (line.finish(), reached)
        }
    };
    plugin.disconnect();
    Ok((line, ok))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn commands_and_their_flags() {
        assert_eq!(
            parse_action(&args(&["send", "--to", "test.hub.bob", "--amount", "5"])).unwrap(),
            Action::Send {
                to: Address::new("test.hub.bob").unwrap(),
                amount: 5,
                packets: 1
            }
        );
        assert_eq!(
            parse_action(&args(&["receive", "--for", "3", "--packets", "2"])).unwrap(),
            Action::Receive {
                duration: Some(Duration::from_secs(3)),
                packets: Some(2)
            }
        );
        let err = |a: &[&str]| parse_action(&args(a)).unwrap_err().0;
        assert!(err(&[]).contains("a command is needed"));
        assert!(err(&["pay"]).contains("unknown command \"pay\""));
        assert!(err(&["send", "--to", "x..y", "--amount", "1"]).starts_with("--to:"));
        assert!(err(&["send", "--to", "test.a", "--amount", "-1"]).starts_with("--amount:"));
        assert!(
            err(&["send", "--to", "test.a", "--amount", "1", "--packets", "0"])
                .contains("at least 1")
        );
        assert!(err(&["receive", "--for", "soon"]).starts_with("--for \"soon\""));
        assert_eq!(default_store_name(Some("bob")), "client-bob");
        assert_eq!(default_store_name(Some("a/../b")), "client-a____b");
        assert_eq!(default_store_name(None), "client");
    }
}
