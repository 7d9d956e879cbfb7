//! What the plugin needs from a Lightning node, over LND's gRPC API, and a simulated network
//! that serves that API.
