//! `LightningPlugin`: the ILP plugin of this crate, wiring the BTP transport, the packet checks and
//! the per-account balance hooks together for its two roles.

pub mod account;
pub mod packets;
