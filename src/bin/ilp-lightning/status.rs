//! `ilp-lightning status`: what a server's (or client's) books say, per account, as a table for
//! people or one JSON line for programs. It reads the store read-only, so it works while the
//! server runs; and the one-line summary the server logs periodically.

use std::process::ExitCode;

use ilp_plugin_lightning::settlement::{AccountStatus, EmbeddedStore, Status};

use crate::flags::{wants_help, FlagError, Flags};
use crate::json::Object;
use crate::{settle, EXIT_BAD_INPUT};

/// The lines `ilp-lightning --help` shows.
pub const SUMMARY: &str = "  status [--store DIR] [--json]
                     balances, settlements, fees, open invoices and payments in flight per
                     account, read from the books, also while the server runs";

fn usage() -> String {
    "usage: ilp-lightning status [--store DIR] [--json]

Reads the books in DIR (default ~/.ilp-lightning/server) without changing them, also while the
server (or client) that keeps them runs, and shows per account: what the peer owes us
(receivable) and we owe it (payable), what we paid it over Lightning and in how many payments,
the routing fees those cost, what it paid us, the invoices of ours it may still pay, and our
payments to it whose outcome is not final yet. Amounts are millisatoshis.

  --store DIR   the books (as given to `server --store` or `client --store`)
  --json        one JSON line instead of the table:
                {\"store\":..,\"accounts\":[{\"account\":..,\"receivable_msat\":..,...}],\"total\":{...}}"
        .to_owned()
}

/// One account (or the total) as JSON.
fn account_json(status: &AccountStatus) -> Object {
    let book = &status.book;
    let mut object = Object::new();
    object
        .string("account", &status.account)
        .integer("receivable_msat", book.receivable_msat)
        .integer("payable_msat", book.payable_msat)
        .integer(
            "paying_msat",
            i128::try_from(book.paying_msat).unwrap_or(i128::MAX),
        )
        .integer(
            "paid_msat",
            i128::try_from(book.paid_msat).unwrap_or(i128::MAX),
        )
        .number("payments", book.payments)
        .integer(
            "fees_msat",
            i128::try_from(book.fees_msat).unwrap_or(i128::MAX),
        )
        .integer(
            "received_msat",
            i128::try_from(book.received_msat).unwrap_or(i128::MAX),
        )
        .number("receipts", book.receipts)
        .number("open_invoices", status.open_invoices)
        .number("payments_in_flight", status.payments_in_flight);
    object
}

/// The whole status as one JSON line.
pub fn json_line(store: &str, status: &Status) -> String {
    let mut line = Object::new();
    line.string("store", store)
        .objects("accounts", status.accounts.iter().map(account_json))
        .object("total", account_json(&status.total()));
    line.finish()
}

/// The status as a table, one row per account and a total.
pub fn table(status: &Status) -> String {
    let header = [
        "account",
        "receivable",
        "payable",
        "paid",
        "payments",
        "fees",
        "received",
        "receipts",
        "open inv.",
        "in flight",
    ];
    let row = |s: &AccountStatus| -> Vec<String> {
        vec![
            s.account.clone(),
            s.book.receivable_msat.to_string(),
            s.book.payable_msat.to_string(),
            s.book.paid_msat.to_string(),
            s.book.payments.to_string(),
            s.book.fees_msat.to_string(),
            s.book.received_msat.to_string(),
            s.book.receipts.to_string(),
            s.open_invoices.to_string(),
            s.payments_in_flight.to_string(),
        ]
    };
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    rows.extend(status.accounts.iter().map(row));
    rows.push(row(&status.total()));
    let widths: Vec<usize> = (0..header.len())
        .map(|column| rows.iter().map(|r| r[column].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::from("(amounts in msat)\n");
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(column, (cell, width))| {
                if column == 0 {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The log target of the server's summary line, shown by default (other logs: warnings up).
pub const LOG_TARGET: &str = "ilp_lightning::status";

/// The one line the server logs every `--status-every` seconds.
pub fn summary_line(status: &Status) -> String {
    let t = status.total();
    format!(
        "status: {} accounts; receivable {} msat, payable {} msat; paid {} msat in {} payments \
         ({} msat fees); received {} msat in {} payments; {} open invoices, {} payments in flight",
        status.accounts.len(),
        t.book.receivable_msat,
        t.book.payable_msat,
        t.book.paid_msat,
        t.book.payments,
        t.book.fees_msat,
        t.book.received_msat,
        t.book.receipts,
        t.open_invoices,
        t.payments_in_flight
    )
}

/// `ilp-lightning status ...`: exit 2 for bad flags, 1 when the books cannot be read.
pub fn run(args: &[String]) -> ExitCode {
    if wants_help(args) {
        println!("{}", usage());
        return ExitCode::SUCCESS;
    }
    let as_json = args.iter().any(|a| a == "--json");
    let rest: Vec<String> = args.iter().filter(|a| *a != "--json").cloned().collect();
    let dir = match Flags::parse(&rest, &["store"]).and_then(|f| settle::store_dir(&f, "server")) {
        Ok(dir) => dir,
        Err(FlagError(e)) => {
            eprintln!("ilp-lightning status: {e} (see ilp-lightning status --help)");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let status = EmbeddedStore::read_only_snapshot(&dir).and_then(|books| Status::of(&books));
    match status {
        Ok(status) => {
            if as_json {
                println!("{}", json_line(&dir.display().to_string(), &status));
            } else {
                print!("{}", table(&status));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ilp-lightning status: --store {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}
