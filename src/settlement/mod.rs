//! Settlement: who owes whom, and (in a later issue) paying it over Lightning.
//!
//! For now this holds the seam between the packet path and settlement: the [`SettlementHooks`]
//! the plugin calls for every packet, connection and non-ILP message, and [`Balances`], the
//! credit-limit book-keeping the plugin uses until a Lightning settlement engine replaces or wraps
//! it. It sits below `plugin` (the plugin calls it, never the other way round) and above `btp`
//! and `lnd`.

pub mod hooks;

pub use hooks::{Balance, Balances, CreditRefused, SettlementHooks, PEER_ACCOUNT};
