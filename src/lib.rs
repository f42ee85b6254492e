//! originguard: the origin side of Cloudflare Authenticated Origin Pulls.
//!
//! ```text
//!  client (Cloudflare) ──TLS──▶ proxy::serve ──▶ tls (verify.rs: CA, depth, CRL)
//!                                   │                 │ verified leaf
//!                                   ▼                 ▼
//!                          hyper (h1 / h2) ──▶ proxy::forward (strip spoofable headers,
//!                                                add identity + X-Forwarded-*)
//!                                                     │
//!                                                     ▼
//!                                             proxy::upstream (pooled, TCP or Unix)
//! ```
//!
//! A client without an acceptable certificate never completes the TLS handshake, so nothing
//! unverified reaches the backend.
//!
//! Modules: [`config`] (TOML to validated config), [`tls`] (certificates, verifier, identity),
//! [`proxy`] (accept loop, forwarding, upstream, error responses), [`app`] (wiring and
//! logging), [`check`] (policy report and warnings), [`signal`], [`pki`] and [`demo`].

pub mod admin;
pub mod app;
pub mod check;
pub mod cli;
pub mod cloudflare;
pub mod config;
pub mod demo;
pub mod loadgen;
pub mod metrics;
pub mod net;
pub mod pki;
pub mod proxy;
pub mod reload;
pub mod signal;
pub mod tls;
