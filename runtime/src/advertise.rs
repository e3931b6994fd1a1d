//! Which address a service registers: `SWITCHYARD_ADVERTISE_ADDR`, or the
//! first local address inside `SWITCHYARD_ADVERTISE_CIDR`, so a container on
//! two networks registers the one its clients reach.
//!
//! The local address is found by "connecting" a UDP socket towards the
//! network (no packet is sent) and reading which source address the kernel
//! chose. That needs no `getifaddrs` (and so no unsafe code).

use std::net::{IpAddr, SocketAddr, UdpSocket};

/// A parsed CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    pub network: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

/// Why an address could not be chosen.
#[derive(Debug, thiserror::Error)]
pub enum AdvertiseError {
    /// The CIDR is malformed.
    #[error("`{0}` is not a CIDR like 172.30.1.0/24")]
    Cidr(String),
    /// No local address lies inside it.
    #[error("no local address inside {0}")]
    NoAddress(String),
    /// The explicit address is malformed.
    #[error("`{0}` is not host:port")]
    Addr(String),
}

/// Parses `a.b.c.d/n` (or an IPv6 block).
pub fn parse_cidr(s: &str) -> Result<Cidr, AdvertiseError> {
    let bad = || AdvertiseError::Cidr(s.to_string());
    let (ip, prefix) = s.split_once('/').ok_or_else(bad)?;
    let network: IpAddr = ip.trim().parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.trim().parse().map_err(|_| bad())?;
    let max = if network.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(bad());
    }
    Ok(Cidr { network, prefix })
}

// === impl Cidr ===

impl Cidr {
    /// Whether `ip` lies inside the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }

    /// The local address the kernel uses to reach this block, if inside it.
    pub fn local_address(&self) -> Result<IpAddr, AdvertiseError> {
        let probe = match self.network {
            IpAddr::V4(n) => IpAddr::V4((u32::from(n) | 1).into()),
            IpAddr::V6(n) => IpAddr::V6((u128::from(n) | 1).into()),
        };
        let bind: SocketAddr = if probe.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let no = || AdvertiseError::NoAddress(format!("{}/{}", self.network, self.prefix));
        let socket = UdpSocket::bind(bind).map_err(|_| no())?;
        socket.connect((probe, 9)).map_err(|_| no())?;
        let local = socket.local_addr().map_err(|_| no())?.ip();
        if self.contains(local) {
            Ok(local)
        } else {
            Err(no())
        }
    }
}

/// The `host:port` to advertise: `addr` if set, else the local address in
/// `cidr` with `port`, else `fallback` (the listen address) when it is not
/// unspecified.
pub fn choose(
    addr: &str,
    cidr: &str,
    port: u16,
    fallback: SocketAddr,
) -> Result<String, AdvertiseError> {
    if !addr.is_empty() {
        if addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
        {
            return Err(AdvertiseError::Addr(addr.to_string()));
        }
        return Ok(addr.to_string());
    }
    if !cidr.is_empty() {
        let ip = parse_cidr(cidr)?.local_address()?;
        return Ok(SocketAddr::new(ip, port).to_string());
    }
    if fallback.ip().is_unspecified() {
        return Ok(SocketAddr::new([127, 0, 0, 1].into(), port).to_string());
    }
    Ok(fallback.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing_and_membership() {
        let c = parse_cidr("172.30.1.0/24").expect("cidr");
        assert!(c.contains("172.30.1.77".parse().expect("ip")));
        assert!(!c.contains("172.30.2.1".parse().expect("ip")));
        assert!(parse_cidr("172.30.1.0").is_err());
        assert!(parse_cidr("172.30.1.0/33").is_err());
        assert!(
            parse_cidr("::/0")
                .expect("v6")
                .contains("::1".parse().expect("ip"))
        );
    }

    #[test]
    fn loopback_block_finds_loopback() {
        let c = parse_cidr("127.0.0.0/8").expect("cidr");
        assert!(c.local_address().expect("local").is_loopback());
        assert_eq!(
            choose("", "127.0.0.0/8", 7010, ([0, 0, 0, 0], 7010).into()).expect("addr"),
            "127.0.0.1:7010"
        );
        assert_eq!(
            choose("b:1", "", 7010, ([0, 0, 0, 0], 7010).into()).expect("addr"),
            "b:1"
        );
        assert!(choose("b", "", 7010, ([0, 0, 0, 0], 7010).into()).is_err());
    }
}
