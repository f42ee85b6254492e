//! originguard: the origin side of Cloudflare Authenticated Origin Pulls.
//!
//! ```text
//!  client (Cloudflare) ──TCP──▶ proxy::serve ── net (allow_peers gate; proxy::proxy_protocol
//!                                   │              behind an L4 balancer), max_handshakes
//!                                   ▼ ClientHello: SNI ──▶ tls::select (policy per [[hosts]]),
//!                                   │                     tls::hello (key shares: key_exchange)
//!                               TLS handshake ──▶ tls::verify (CA, depth, CRL, purpose,
//!                                   │                          allow-lists, verified-chain cache)
//!                                   │             tls::server + tls::tickets (tickets bound to
//!                                   │                          the policy and the chain's life)
//!                                   ▼ verified leaf ──▶ tls::identity (XFCC / RFC 9440 values)
//!                          hyper (h1 / h2) ──▶ proxy::forward (proxy::authority: one host,
//!                                   │                valid, 421 guard; framing guard;
//!                                   │                proxy::headers: protected names in every
//!                                   │                spelling; identity + X-Forwarded-*)
//!                                   ▼
//!                          proxy::upstream (per policy; pooled; HTTP/1.1 or h2c; TCP or Unix)
//! ```
//!
//! A client without an acceptable certificate never completes the TLS handshake, so nothing
//! unverified reaches the backend.
//!
//! Connections are bounded all their life: `proxy::activity` (header and idle timeouts, the
//! raw-head framing check), `max_connection_age`, the client chain's expiry, and re-judging on
//! every reload; `proxy::tunnel` bounds upgraded connections.
//!
//! Serving: [`config`] (TOML to validated config), [`tls`] (certificates, verifier, policy
//! selection, identity, tickets, ClientHello key shares), [`proxy`] (accept loop and limits,
//! PROXY protocol, activity and timeouts, host parsing, header rules, forwarding, tunnels,
//! upstreams, the one error-to-status map), [`app`] (wiring, shutdown delay), [`reload`]
//! (build-validate-swap), [`watch`] (reload on file changes), [`notify`] (systemd readiness),
//! [`admin`] and [`metrics`] (endpoints and metric names), [`logging`], [`net`] (peer networks),
//! [`signal`].
//!
//! Tools around it: [`check`] (policy report and warnings), [`loadgen`] (`loadtest`),
//! [`cloudflare`] (the API side of AOP), [`pki`], [`demo`], [`cli`].

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
