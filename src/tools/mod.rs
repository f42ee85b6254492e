//! The tools around the proxy: `check` (the policy in words), `loadtest` (handshake and
//! request load), `cloudflare` (the API side of AOP), `pki` (CAs, client certificates, ticket
//! keys) and `demo`. Nothing in the serving path depends on them.

pub mod check;
pub mod cloudflare;
pub mod demo;
pub mod loadgen;
pub mod pki;
