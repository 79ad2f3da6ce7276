//! Talking to backends: everything between a request ready to go and the
//! backend's bytes, and nothing of routing or of the client.
//!
//! - [`pool`]: each plain `http://` backend's keep-alive HTTP/1.1
//!   connections, lock-free, held by its live state;
//! - [`h1`]: the inline HTTP/1.1 client exchange on one of them (the hot
//!   path), and its response body decoded from the socket;
//! - [`client`]: hyper's pooled clients for TLS and HTTP/2 upstreams, one
//!   per distinct set of connection settings;
//! - [`request_body`]: the client's body on its way up, retried safely;
//! - [`probe`]: active health probes, through the same connectors as the
//!   upstream's traffic.

pub mod client;
pub mod h1;
pub mod pool;
pub mod probe;
pub mod request_body;
