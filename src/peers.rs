//! IP networks for `listener.allow_peers`, including Cloudflare's published ranges (embedded).

use std::fmt;
use std::net::IpAddr;

/// Cloudflare's published ranges (<https://www.cloudflare.com/ips/>), as of 2026.
const CLOUDFLARE_V4: &str = include_str!("../config/cloudflare-ips-v4.txt");
const CLOUDFLARE_V6: &str = include_str!("../config/cloudflare-ips-v6.txt");

/// An IPv4 or IPv6 network in CIDR form (`ipnet`), matching IPv4 peers that a dual-stack
/// socket shows as `::ffff:a.b.c.d` too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet(ipnet::IpNet);

impl IpNet {
    /// Parses `"203.0.113.0/24"`, `"2001:db8::/32"`, or a bare address (a /32 or /128).
    pub fn parse(text: &str) -> Result<IpNet, String> {
        let text = text.trim();
        text.parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(ipnet::IpNet::from))
            .map(IpNet)
            .map_err(|_| format!("invalid network {text:?} (expected CIDR like \"203.0.113.0/24\" or an IP address)"))
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.contains(&ip)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One `allow_peers` entry: `"cloudflare"` (every published range) or a network.
pub fn parse_peers(entry: &str) -> Result<Vec<IpNet>, String> {
    if entry == "cloudflare" {
        return Ok(cloudflare_ranges());
    }
    if let Some(path) = entry.strip_prefix("file:") {
        return read_peers(std::path::Path::new(path));
    }
    IpNet::parse(entry).map(|net| vec![net])
}

/// When the embedded Cloudflare ranges were copied from <https://www.cloudflare.com/ips/>
/// (year, month, day): `check` and startup warn once they are older than [`STALE_AFTER_DAYS`].
pub(crate) const CLOUDFLARE_RANGES_AS_OF: (i32, u8, u8) = (2026, 11, 27);
pub(crate) const STALE_AFTER_DAYS: i64 = 90;

/// A `file:` allow-list: one CIDR or address a line, `#` comments. Read at load and on every
/// reload (`originguard cloudflare ips --out FILE` keeps one current). An empty list is an
/// error: it would admit every peer.
fn read_peers(path: &std::path::Path) -> Result<Vec<IpNet>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let nets = text
        .lines()
        .enumerate()
        .map(|(i, line)| (i, line.split('#').next().unwrap_or("").trim()))
        .filter(|(_, line)| !line.is_empty())
        .map(|(i, line)| IpNet::parse(line).map_err(|e| format!("{}: line {}: {e}", path.display(), i + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    if nets.is_empty() {
        return Err(format!(
            "{}: no networks (an empty allow-list would admit every peer)",
            path.display()
        ));
    }
    Ok(nets)
}

/// Cloudflare's published IPv4 and IPv6 ranges.
pub(crate) fn cloudflare_ranges() -> Vec<IpNet> {
    CLOUDFLARE_V4
        .lines()
        .chain(CLOUDFLARE_V6.lines())
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| IpNet::parse(line).expect("embedded Cloudflare ranges are valid CIDRs (checked by tests)"))
        .collect()
}

/// Whether `ip` may connect: always when the list is empty.
pub(crate) fn allowed(nets: &[IpNet], ip: IpAddr) -> bool {
    nets.is_empty() || nets.iter().any(|net| net.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_cloudflare_ranges_parse() {
        let ranges = cloudflare_ranges();
        assert_eq!(ranges.len(), 22);
        assert!(allowed(&ranges, "173.245.48.1".parse().expect("ip")));
        assert!(allowed(&ranges, "2606:4700::1".parse().expect("ip")));
        assert!(allowed(&ranges, "::ffff:173.245.48.1".parse().expect("ip")));
        assert!(!allowed(&ranges, "127.0.0.1".parse().expect("ip")));
    }

    #[test]
    fn cidr_matching() {
        let net = IpNet::parse("203.0.113.0/24").expect("net");
        assert!(net.contains("203.0.113.255".parse().expect("ip")));
        assert!(!net.contains("203.0.114.0".parse().expect("ip")));
        assert!(IpNet::parse("0.0.0.0/0")
            .expect("any")
            .contains("8.8.8.8".parse().expect("ip")));
        assert!(IpNet::parse("::1").expect("host").contains("::1".parse().expect("ip")));
        for bad in ["", "1.2.3.4/33", "::/129", "example.com", "1.2.3/8", "10.0.0.0/x"] {
            assert!(IpNet::parse(bad).is_err(), "{bad}");
        }
    }
}
