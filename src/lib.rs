//! originguard: the origin side of Cloudflare Authenticated Origin Pulls.
//!
//! ```text
//!  client (Cloudflare) ──TCP──▶ proxy::serve ── net (allow_peers gate)
//!                                   │
//!                                   ▼ ClientHello: SNI ──▶ tls::select (policy per [[hosts]])
//!                               TLS handshake ──▶ tls::verify (CA, depth, CRL, allow-lists,
//!                                   │                          verified-chain cache)
//!                                   ▼ verified leaf ──▶ tls::identity (XFCC / RFC 9440 values)
//!                          hyper (h1 / h2) ──▶ proxy::forward (proxy::authority: one host,
//!                                   │                valid, 421 guard; framing guard;
//!                                   │                proxy::headers: protected names in every
//!                                   │                spelling; identity + X-Forwarded-*)
//!                                   ▼
//!                          proxy::upstream (pooled; HTTP/1.1 or h2c; TCP or Unix socket)
//! ```
//!
//! A client without an acceptable certificate never completes the TLS handshake, so nothing
//! unverified reaches the backend.
//!
//! Connections are bounded all their life: `proxy::activity` (header and idle timeouts, the
//! raw-head framing check), `max_connection_age`, the client chain's expiry, and re-judging on
//! every reload; `proxy::tunnel` bounds upgraded connections.
//!
//! Modules: [`config`] (TOML to validated config), [`tls`] (certificates, verifier, policy
//! selection, identity, tickets), [`proxy`] (accept loop and limits, activity and timeouts,
//! host parsing, header rules, forwarding, tunnels, upstream, the one error-to-status map), [`app`] (wiring and logging), [`reload`] (build-validate-swap), [`admin`] and
//! [`metrics`] (endpoints and metric names), [`check`] (policy report and warnings), [`net`]
//! (peer gate), [`loadgen`] (`loadtest`), [`cloudflare`] (the API side of AOP), [`pki`],
//! [`demo`], [`signal`], [`cli`].

pub mod admin;
pub mod app;
pub mod check;
pub mod cli;
pub mod cloudflare;
pub mod config;
pub mod demo;
pub mod loadgen;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod pki;
pub mod proxy;
pub mod reload;
pub mod signal;
pub mod tls;
pub mod watch;
