//! The settlement flags `server` and `client` share: the rules (threshold, settle-to, credit
//! limit, invoice stock, fee limit) and where the books live (`--store`).

use std::path::PathBuf;
use std::sync::Arc;

use ilp_plugin_lightning::settlement::{EmbeddedStore, FeeLimit, SettlementOptions};

use crate::flags::{FlagError, Flags};
use crate::node::home_dir;

/// The settlement flags, for [`Flags::parse`].
pub const FLAGS: &[&str] = &[
    "store",
    "credit-limit",
    "settle-threshold",
    "settle-to",
    "invoice-stock",
    "invoice-grace",
    "max-fee-ppm",
    "max-fee-msat",
];

/// The settlement flags' lines of a usage text.
pub const USAGE: &str = "  settlement:
    --store DIR             the books (balances, payments, invoices; the server's tokens too):
                            a crash-safe embedded database, one process at a time (default
                            ~/.ilp-lightning/server, or ~/.ilp-lightning/client-USER)
    --credit-limit SAT      how much a peer may owe before its Prepares get T04
                            (server default 0: clients prefund; client default unlimited)
    --settle-threshold SAT  pay the peer by ourselves once we owe it more than this
                            (server default 0; client default: only on T04 and --prefund)
    --settle-to SAT         what we still owe after paying by ourselves (default 0)
    --invoice-stock N       invoices of ours each peer holds (default 20)
    --invoice-grace SECONDS an invoice no longer needed (peer gone, replaced, over the
                            stock) is cancelled after this long (default 600); make it
                            longer than any payment to it may take
    --max-fee-ppm PPM       routing fee a payment may cost, in millionths of its amount
                            (default 10000, i.e. 1%)...
    --max-fee-msat MSAT     ...or this much, if more (default 10000)";

/// Applies the settlement flags to `options` (the role's defaults).
pub fn options(
    flags: &Flags,
    mut options: SettlementOptions,
) -> Result<SettlementOptions, FlagError> {
    if let Some(limit) = flags.parsed("credit-limit")? {
        options.credit_limit = Some(limit);
    }
    if let Some(threshold) = flags.parsed("settle-threshold")? {
        options.settle_threshold = Some(threshold);
    }
    if let Some(settle_to) = flags.parsed("settle-to")? {
        options.settle_to = settle_to;
    }
    if let Some(stock) = flags.parsed::<usize>("invoice-stock")? {
        if stock == 0 {
            return Err(FlagError(
                "--invoice-stock 0 would leave peers nothing to pay us with".into(),
            ));
        }
        options.invoice_stock = stock;
    }
    if let Some(grace) = flags.parsed::<u64>("invoice-grace")? {
        options.invoice_grace = std::time::Duration::from_secs(grace);
    }
    let FeeLimit { floor_msat, ppm } = options.fee_limit;
    options.fee_limit = FeeLimit {
        floor_msat: flags.parsed("max-fee-msat")?.unwrap_or(floor_msat),
        ppm: flags.parsed("max-fee-ppm")?.unwrap_or(ppm),
    };
    Ok(options)
}

/// `--store`, or `~/.ilp-lightning/<default_name>`.
pub fn store_dir(flags: &Flags, default_name: &str) -> Result<PathBuf, FlagError> {
    match flags.get("store") {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => Ok(home_dir()
            .map_err(|_| FlagError("HOME is not set: pass --store DIR".into()))?
            .join(".ilp-lightning")
            .join(default_name)),
    }
}

/// Opens the books in `dir` (created if missing).
pub fn open_store(dir: &PathBuf) -> Result<Arc<EmbeddedStore>, String> {
    EmbeddedStore::open(dir)
        .map(Arc::new)
        .map_err(|e| format!("--store {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(list: &[&str]) -> Flags {
        let args: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        Flags::parse(&args, FLAGS).unwrap()
    }

    #[test]
    fn flags_override_the_role_defaults() {
        let server = options(&flags(&[]), SettlementOptions::server()).unwrap();
        assert_eq!(server.credit_limit, Some(0));
        assert_eq!(server.settle_threshold, Some(0));
        let tuned = options(
            &flags(&[
                "--credit-limit",
                "50",
                "--settle-threshold",
                "100",
                "--settle-to",
                "10",
                "--invoice-stock",
                "5",
                "--invoice-grace",
                "90",
                "--max-fee-ppm",
                "2000",
                "--max-fee-msat",
                "3000",
            ]),
            SettlementOptions::client(),
        )
        .unwrap();
        assert_eq!(tuned.credit_limit, Some(50));
        assert_eq!(tuned.settle_threshold, Some(100));
        assert_eq!(tuned.settle_to, 10);
        assert_eq!(tuned.invoice_stock, 5);
        assert_eq!(tuned.invoice_grace, std::time::Duration::from_secs(90));
        assert_eq!(
            tuned.fee_limit,
            FeeLimit {
                floor_msat: 3000,
                ppm: 2000
            }
        );
        let zero = options(
            &flags(&["--invoice-stock", "0"]),
            SettlementOptions::client(),
        );
        assert!(zero.unwrap_err().0.contains("--invoice-stock 0"));
        let bad = options(&flags(&["--settle-to", "-1"]), SettlementOptions::client());
        assert!(bad.unwrap_err().0.starts_with("--settle-to \"-1\""));
        assert_eq!(
            store_dir(&flags(&["--store", "/x/y"]), "server").unwrap(),
            PathBuf::from("/x/y")
        );
    }
}
