//! originguard integration tests: real TLS handshakes over loopback, rcgen certificates, a real
//! hyper backend. One binary; one file per topic.

mod support;

mod cli;
mod cloudflare;
mod deploy;
mod fleet;
mod handshake;
mod hardening;
mod headers;
mod lifecycle;
mod loadtest;
mod operations;
mod operator;
mod policy;
mod pq;
mod properties;
mod records;
mod responses;
mod robustness;
mod streaming;
