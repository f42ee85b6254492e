//! originguard: the origin side of Cloudflare Authenticated Origin Pulls.
//!
//! ```text
//!  client (Cloudflare) ──TCP──▶ proxy::serve ── peers (allow_peers gate; proxy::proxy_protocol
//!                                   │              behind an L4 balancer), max_handshakes
//!                                   ▼ ClientHello: SNI ──▶ tls::select (policy per [[hosts]]),
//!                                   │                     tls::hello (key shares: key_exchange)
//!                               TLS handshake ──▶ tls::verify (CA, depth, CRL, purpose,
//!                                   │                          allow-lists, verified-chain cache)
//!                                   │             tls::server + tls::tickets (tickets bound to
//!                                   │                          the policy and the chain's life;
//!                                   │                          tls::coalesce sends them with the
//!                                   │                          first response)
//!                                   ▼ verified leaf ──▶ tls::identity (XFCC / RFC 9440 values)
//!                          hyper (h1 / h2) ──▶ proxy::forward (proxy::authority: one host,
//!                                   │                valid, 421 guard; proxy::headers: framing
//!                                   │                guard, protected names in every spelling,
//!                                   │                hop-by-hop, identity + X-Forwarded-*)
//!                                   │             proxy::tunnel (WebSocket), proxy::error (the
//!                                   │                one rescue point), proxy::access_log
//!                                   ▼
//!                          proxy::upstream (per policy; HTTP/1.1 pooled, HTTP/2 one shared
//!                                   connection; h2c or HTTPS with ALPN; TCP or Unix)
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
//! selection, identity, tickets and their coalescing with the first response, ClientHello key
//! shares, FIPS), [`proxy`] (accept loop and limits, PROXY protocol, activity and timeouts,
//! host parsing, header rules, forwarding, tunnels, upstreams, the rescue point, the access
//! log), [`app`] (wiring, shutdown delay),
//! [`reload`] (build-validate-swap), [`watch`] (reload on file changes), [`notify`] (systemd
//! readiness), [`admin`] and [`metrics`] (endpoints and metric names), [`audit`] (certificate
//! summaries and the warnings `serve` logs and `check` prints), [`logging`], [`names`]
//! (host-name patterns), [`peers`] (the `allow_peers` gate: networks and Cloudflare's ranges),
//! [`signal`].
//!
//! Around it: [`cli`] (the command line) and [`tools`]: `check` (the policy in words),
//! `loadgen` (`loadtest`), `cloudflare` (the API side of AOP), `pki`, `demo`.

// Most items are pub(crate); the module docs are for maintainers, who read them with
// `cargo doc --document-private-items`, where these links resolve.
#![allow(rustdoc::private_intra_doc_links)]

// The serving path.
pub mod admin;
pub mod app;
pub mod audit;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod names;
pub mod notify;
pub mod peers;
pub mod proxy;
pub mod reload;
pub mod signal;
pub mod tls;
pub mod watch;

// The command line, and the tools around the proxy.
pub mod cli;
pub mod tools;
