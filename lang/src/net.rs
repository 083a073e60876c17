//! Network addresses as policies and configurations name them.

use std::net::IpAddr;

/// Whether the authority of a URL (`host`, `host:port` or `[v6]:port`), or a bare host as a
/// configuration names one (`::1`), names this host: `localhost`, an address in
/// `127.0.0.0/8`, or `::1`.
pub fn is_loopback_authority(authority: &str) -> bool {
    if let Ok(ip) = authority.parse::<IpAddr>() {
        return ip.is_loopback();
    }
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::is_loopback_authority;

    #[test]
    fn loopback_authorities_and_bare_hosts() {
        for loopback in [
            "localhost",
            "LocalHost:80",
            "127.0.0.1",
            "127.1.2.3:5432",
            "[::1]:8080",
            "::1",
        ] {
            assert!(is_loopback_authority(loopback), "{loopback}");
        }
        for other in [
            "db.internal",
            "10.0.0.1:5432",
            "[2001:db8::1]:80",
            "2001:db8::1",
            "::",
        ] {
            assert!(!is_loopback_authority(other), "{other}");
        }
    }
}
