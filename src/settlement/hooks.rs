//! Per-account balance hooks: where settlement plugs into the packet path.
//!
//! The plugin calls a [`SettlementHooks`] at each point of a packet's life, and when peers come,
//! go or send other sub-protocols, with the account concerned (server role: the client's account
//! name; client role: [`PEER_ACCOUNT`]):
//!
//! | when                                   | hook                    | [`Balances`] does            |
//! |----------------------------------------|-------------------------|------------------------------|
//! | a peer's Prepare arrives (after checks) | `on_incoming_prepare`   | receivable += amount, or T04 |
//! | our answer to it is a Fulfill           | `on_incoming_fulfilled` | nothing (already counted)    |
//! | our answer to it is a Reject            | `on_incoming_rejected`  | receivable −= amount         |
//! | a Prepare we sent is fulfilled          | `on_outgoing_fulfilled` | payable += amount            |
//! | a Prepare we sent is rejected           | `on_outgoing_rejected`  | nothing (T04: a hint to settle) |
//! | the user calls `send_money` (client)    | `send_money`            | refuses: nothing can pay     |
//! | a peer connects / disconnects           | `on_connected` / `on_disconnected` | nothing           |
//! | a BTP Message without `ilp` arrives     | `on_message`            | refuses (BTP Error F00)      |
//!
//! `receivable` is what the peer owes us, `payable` what we owe the peer, as in the JS reference;
//! both are signed (a peer that prefunded is owed money). [`Balances`] is the credit-only book
//! keeping of a plugin without a Lightning node; [`Settlement`](super::Settlement) implements the
//! same trait with Lightning payments and crash-safe books.

use std::collections::HashMap;
use std::fmt;

use parking_lot::Mutex;

pub use super::book::{Hold, HoldId};
use crate::btp::{OwnedEntry, ProtocolData, ProtocolDataEntry};

/// The account name the client role uses for its only peer, the server (as the JS plugin does).
pub const PEER_ACCOUNT: &str = "peer";

/// Why a hook refused an incoming Prepare; the plugin turns it into a T04 Reject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditRefused {
    /// The account that asked.
    pub account: String,
    /// What the account would have owed with this packet.
    pub would_owe: i128,
    /// The most it may owe.
    pub limit: u64,
}

impl fmt::Display for CreditRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Exceeded maximum balance: account {} would owe {} (limit {})",
            self.account, self.would_owe, self.limit
        )
    }
}

impl std::error::Error for CreditRefused {}

/// Why an incoming Prepare was refused by the settlement hooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrepareRefused {
    /// The peer would owe more than its limit: Reject T04.
    OverLimit(CreditRefused),
    /// The books cannot take the Prepare now (the store failed): Reject T00.
    Unavailable(String),
}

impl fmt::Display for PrepareRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrepareRefused::OverLimit(e) => e.fmt(f),
            PrepareRefused::Unavailable(m) => write!(f, "cannot book the packet: {m}"),
        }
    }
}

impl std::error::Error for PrepareRefused {}

impl From<CreditRefused> for PrepareRefused {
    fn from(e: CreditRefused) -> Self {
        PrepareRefused::OverLimit(e)
    }
}

/// Sends a BTP Message with these entries to the peer and returns its Response's entries.
pub type Exchange<'a> = dyn Fn(&[ProtocolDataEntry<'_>]) -> Result<Vec<OwnedEntry>, String> + 'a;

/// The settlement layer's view of the packet flow. Calls come from the transport's handler
/// threads (incoming) and from the threads that call `send_data` (outgoing), concurrently and
/// never under a lock of the plugin's: implementations keep their own locks short.
pub trait SettlementHooks: Send + Sync {
    /// A peer's Prepare of `amount` passed the packet checks. `Err` refuses it (Reject T04 or
    /// T00) and must leave the balance unchanged; `Ok` means the amount now counts against the
    /// peer, held under `hold` (the Prepare's identity and expiry) until the next two calls
    /// post or void it. Each of the three calls may be repeated with the same hold: a repeat
    /// changes nothing.
    fn on_incoming_prepare(
        &self,
        account: &str,
        amount: u64,
        hold: &Hold,
    ) -> Result<(), PrepareRefused>;
    /// Our answer to that Prepare is a Fulfill, about to go out. `Err` means it could not be
    /// booked: the plugin answers T00 instead (and calls `on_incoming_rejected`).
    fn on_incoming_fulfilled(&self, account: &str, amount: u64, hold: &Hold) -> Result<(), String> {
        let _ = (account, amount, hold);
        Ok(())
    }
    /// Our answer to that Prepare was a Reject: undo what `on_incoming_prepare` counted.
    fn on_incoming_rejected(&self, account: &str, amount: u64, hold: &Hold);
    /// A Prepare we sent to `account` was fulfilled: we owe it `amount` more.
    fn on_outgoing_fulfilled(&self, account: &str, amount: u64);
    /// A Prepare we sent to `account` was rejected with `code` (three ASCII characters).
    fn on_outgoing_rejected(&self, account: &str, amount: u64, code: &str);
    /// Pays `account` `amount` (the plugin's `send_money`). Without a settlement engine there is
    /// no way to pay, which the default says.
    fn send_money(&self, account: &str, amount: u64) -> Result<(), String> {
        let _ = (account, amount);
        Err("no settlement engine: Lightning settlement is not part of this build yet".into())
    }
    /// `account` is reachable now (server: a client authenticated; client: the connection to
    /// the server is up, again). Settlement sends its `peeringRequest` and invoices from here,
    /// with [`LightningPlugin::request`](crate::plugin::LightningPlugin::request). Runs on the plugin's
    /// event thread: hand long work to a thread of its own.
    fn on_connected(&self, account: &str) {
        let _ = account;
    }
    /// The asset scale of `account`'s ILP amounts, when the hooks decide it per account (a
    /// server tells it to the client by IL-DCP); `None`: the plugin's configured one.
    fn asset_scale(&self, account: &str) -> Option<u8> {
        let _ = account;
        None
    }
    /// Client role: the connection to the server is authenticated and IL-DCP comes next; the
    /// hooks may `exchange` messages with the server first (settlement agrees on the asset
    /// scale, which the server's IL-DCP answer then carries).
    fn on_authenticated(&self, account: &str, exchange: &Exchange<'_>) {
        let _ = (account, exchange);
    }
    /// `account`'s connection ended.
    fn on_disconnected(&self, account: &str) {
        let _ = account;
    }
    /// A BTP Message from `account` without an `ilp` entry (`peeringRequest`,
    /// `paymentRequest`...): the entries of the Response, or why not (sent as a BTP Error).
    /// Runs on a transport handler thread.
    fn on_message(
        &self,
        account: &str,
        protocol_data: &ProtocolData<'_>,
    ) -> Result<Vec<OwnedEntry>, String> {
        let _ = account;
        Err(format!(
            "no handler for sub-protocol {:?}",
            protocol_data.primary().map(|e| e.name).unwrap_or_default()
        ))
    }
}

/// One account's position, in the asset's units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Balance {
    /// What the peer owes us (fulfilled or in-flight Prepares it sent us, not yet paid);
    /// negative when it paid ahead.
    pub receivable: i128,
    /// What we owe the peer (Prepares of ours it fulfilled, not yet paid); negative when we paid
    /// ahead.
    pub payable: i128,
}

/// Balances with a credit limit: the hooks' implementation until settlement exists, and the
/// book-keeping settlement builds on. `credit_limit` is how far a peer may go into debt
/// (`receivable`) before its Prepares are refused with T04; `None` is unlimited.
#[derive(Debug, Default)]
pub struct Balances {
    credit_limit: Option<u64>,
    accounts: Mutex<HashMap<String, Balance>>,
}

impl Balances {
    /// Empty balances; peers may owe up to `credit_limit` (`None`: no limit).
    pub fn new(credit_limit: Option<u64>) -> Self {
        Balances {
            credit_limit,
            accounts: Mutex::new(HashMap::new()),
        }
    }

    /// The credit limit.
    pub fn credit_limit(&self) -> Option<u64> {
        self.credit_limit
    }

    /// The position of `account` (zero for an account never seen).
    pub fn balance(&self, account: &str) -> Balance {
        self.accounts
            .lock()
            .get(account)
            .copied()
            .unwrap_or_default()
    }

    fn update(&self, account: &str, change: impl FnOnce(&mut Balance)) {
        let mut accounts = self.accounts.lock();
        match accounts.get_mut(account) {
            Some(balance) => change(balance),
            None => {
                let mut balance = Balance::default();
                change(&mut balance);
                accounts.insert(account.to_owned(), balance);
            }
        }
    }
}

impl SettlementHooks for Balances {
    fn on_incoming_prepare(
        &self,
        account: &str,
        amount: u64,
        _hold: &Hold,
    ) -> Result<(), PrepareRefused> {
        let mut accounts = self.accounts.lock();
        let current = accounts.get(account).map_or(0, |b| b.receivable);
        let would_owe = current
            .checked_add(i128::from(amount))
            .ok_or_else(|| PrepareRefused::Unavailable("balance out of range".into()))?;
        if let Some(limit) = self.credit_limit {
            if would_owe > i128::from(limit) {
                return Err(CreditRefused {
                    account: account.to_owned(),
                    would_owe,
                    limit,
                }
                .into());
            }
        }
        match accounts.get_mut(account) {
            Some(balance) => balance.receivable = would_owe,
            None => {
                accounts.insert(
                    account.to_owned(),
                    Balance {
                        receivable: would_owe,
                        payable: 0,
                    },
                );
            }
        }
        Ok(())
    }

    fn on_incoming_rejected(&self, account: &str, amount: u64, _hold: &Hold) {
        self.update(account, |b| {
            b.receivable = b.receivable.saturating_sub(i128::from(amount))
        });
    }

    fn on_outgoing_fulfilled(&self, account: &str, amount: u64) {
        self.update(account, |b| {
            b.payable = b.payable.saturating_add(i128::from(amount))
        });
    }

    fn on_outgoing_rejected(&self, _account: &str, _amount: u64, _code: &str) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_limit_refuses_the_packet_that_would_cross_it_and_keeps_the_balance() {
        let balances = Balances::new(Some(10));
        balances
            .on_incoming_prepare("alice", 6, &Hold::new(u64::MAX))
            .unwrap();
        let PrepareRefused::OverLimit(refused) = balances
            .on_incoming_prepare("alice", 5, &Hold::new(u64::MAX))
            .unwrap_err()
        else {
            panic!("refused for another reason than the limit")
        };
        assert_eq!(refused.would_owe, 11);
        assert_eq!(refused.limit, 10);
        assert!(refused.to_string().contains("Exceeded maximum balance"));
        assert_eq!(balances.balance("alice").receivable, 6);
        balances
            .on_incoming_prepare("alice", 4, &Hold::new(u64::MAX))
            .unwrap();
        assert_eq!(balances.balance("alice").receivable, 10);
        // Another account has its own room.
        balances
            .on_incoming_prepare("bob", 10, &Hold::new(u64::MAX))
            .unwrap();
    }

    #[test]
    fn a_rejected_incoming_prepare_gives_the_credit_back() {
        let balances = Balances::new(Some(5));
        balances
            .on_incoming_prepare("alice", 5, &Hold::new(u64::MAX))
            .unwrap();
        assert!(balances
            .on_incoming_prepare("alice", 1, &Hold::new(u64::MAX))
            .is_err());
        balances.on_incoming_rejected("alice", 5, &Hold::new(u64::MAX));
        assert_eq!(balances.balance("alice").receivable, 0);
        balances
            .on_incoming_prepare("alice", 1, &Hold::new(u64::MAX))
            .unwrap();
    }

    #[test]
    fn zero_limit_refuses_everything_but_zero_and_no_limit_refuses_nothing() {
        let prefund_only = Balances::new(Some(0));
        assert!(prefund_only
            .on_incoming_prepare("a", 1, &Hold::new(u64::MAX))
            .is_err());
        prefund_only
            .on_incoming_prepare("a", 0, &Hold::new(u64::MAX))
            .unwrap();
        let unlimited = Balances::new(None);
        unlimited
            .on_incoming_prepare("a", u64::MAX, &Hold::new(u64::MAX))
            .unwrap();
        unlimited
            .on_incoming_prepare("a", u64::MAX, &Hold::new(u64::MAX))
            .unwrap();
        assert_eq!(unlimited.balance("a").receivable, 2 * i128::from(u64::MAX));
    }

    #[test]
    fn fulfilled_outgoing_packets_add_to_payable() {
        let balances = Balances::new(None);
        balances.on_outgoing_fulfilled("peer", 3);
        balances.on_outgoing_fulfilled("peer", 4);
        balances.on_outgoing_rejected("peer", 9, "T04");
        assert_eq!(
            balances.balance("peer"),
            Balance {
                receivable: 0,
                payable: 7
            }
        );
    }
}
