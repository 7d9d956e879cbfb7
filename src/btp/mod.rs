//! The Bilateral Transfer Protocol (RFC 23): its packets and its WebSocket transport.
