//! Settlement: who owes whom, and paying it over Lightning.
//!
//! - [`SettlementHooks`] is the seam the plugin calls for every packet, connection and non-ILP
//!   message; [`Balances`] implements it with credit limits only (a plugin without a node).
//! - [`Settlement`] implements it with Lightning: it keeps [`store`]d books per account, hands
//!   each peer invoices and pays the peer's, and reconciles every payment with the node.
//! - Two of our plugins agree, per account, to settle by keysend and in millisatoshis in the
//!   `ilpLightningSettlement` sub-protocol ([`offer`]); JS peers keep invoices and satoshis.
//!
//! The books count millisatoshis; ILP amounts are converted with the account's agreed [`Unit`].
//! The rules (the JS reference's, kept compatible; see the README's table):
//!
//! - An incoming Prepare is reserved against the peer's credit limit (T04 past it), counted as
//!   owed once our Fulfill is booked, released on a Reject.
//! - A Fulfill of ours owes the peer its amount; past `settle_threshold` (server default 0) we pay
//!   it down to `settle_to`. A T04 from the peer pays what is owed; `send_money` pays what is
//!   asked (a prefund).
//! - One Lightning payment in flight per account; what accrues meanwhile goes into the next.
//!   Routing fees are capped per payment ([`FeeLimit`]) and booked, never charged to the peer.
//! - A payment's intent is durable before LND is asked, and its amount is owed again only when
//!   LND says FAILED or it never started the payment; any other answer is tracked until final.
//! - A paid invoice, or a keysend carrying an account's token, is credited once per payment hash,
//!   however often LND replays it.
//! - A peer in satoshis is paid whole satoshis; what is owed below one stays in the books.
//!
//! It sits below `plugin` (the plugin calls it, never the other way round) and above `btp` and
//! `lnd`.

pub mod amount;
pub mod book;
mod engine;
pub mod hooks;
pub mod offer;
mod payer;
pub mod peer;
mod refiller;
pub mod status;
pub mod store;
mod watcher;

pub use amount::Unit;
pub use engine::{FeeLimit, PeerLink, Settlement, SettlementOptions, StartError};
pub use hooks::{
    Balance, Balances, CreditRefused, Exchange, PrepareRefused, SettlementHooks, PEER_ACCOUNT,
};
pub use status::{AccountStatus, Status};
#[cfg(feature = "redis")]
pub use store::RedisStore;
pub use store::{EmbeddedStore, MemoryStore, Store, StoreError};
