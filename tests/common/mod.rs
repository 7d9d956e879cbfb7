//! Helpers shared by the integration tests. Each test binary compiles all of them and uses a
//! few, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod hub;
pub mod ilp;
pub mod js;
pub mod lightning;
pub mod redis_server;
pub mod threads;
