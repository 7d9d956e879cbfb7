//! # ilp-plugin-lightning
//!
//! An Interledger (ILPv4) plugin that settles with its peers over the Lightning Network through
//! an LND node. Blocking and thread-based: no async runtime.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod btp;
pub mod encoding;
pub mod ilp;
pub mod lnd;
pub mod plugin;
pub mod settlement;
