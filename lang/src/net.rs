//! Network addresses as policies and configurations name them.

use std::net::IpAddr;

/// Whether the authority of a URL (`host`, `host:port` or `[v6]:port`) names this host:
/// `localhost`, an address in `127.0.0.0/8`, or `::1`.
pub fn is_loopback_authority(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}
