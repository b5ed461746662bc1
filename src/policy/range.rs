//! IP ranges: a fast matcher over sets of CIDR blocks, and the line between private
//! (non-global) and public address space that every allow range must stay behind.

use std::net::IpAddr;

use ipnet::IpNet;

/// A set of CIDR blocks with an O(log n) membership test.
///
/// IPv4 and IPv6 are kept apart exactly as `IpNet::contains` does: an IPv4-mapped IPv6
/// address does not match an IPv4 block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    nets: Vec<IpNet>,
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl RangeSet {
    /// Builds the matcher; blocks may overlap and come in any order.
    pub fn new(nets: &[IpNet]) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in nets {
            match net {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        Self {
            nets: nets.to_vec(),
            v4: merge(v4),
            v6: merge(v6),
        }
    }

    /// Whether `ip` is inside any block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => hit(&self.v4, u32::from(a)),
            IpAddr::V6(a) => hit(&self.v6, u128::from(a)),
        }
    }

    /// Whether every address of `net` is inside the set.
    pub fn covers(&self, net: &IpNet) -> bool {
        match net {
            IpNet::V4(n) => covered(&self.v4, u32::from(n.network()), u32::from(n.broadcast())),
            IpNet::V6(n) => covered(&self.v6, u128::from(n.network()), u128::from(n.broadcast())),
        }
    }

    /// The blocks as given.
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }

    /// The blocks as `a, b, c` for messages.
    pub fn describe(&self) -> String {
        let v: Vec<String> = self.nets.iter().map(ToString::to_string).collect();
        v.join(", ")
    }
}

/// Address space that is never globally routable and that a profile may allow: RFC 1918,
/// CGNAT (RFC 6598), link-local, loopback, IPv6 ULA (RFC 4193), IPv6 link-local and loopback.
pub fn non_global() -> &'static RangeSet {
    static SET: std::sync::OnceLock<RangeSet> = std::sync::OnceLock::new();
    SET.get_or_init(|| {
        let nets: Vec<IpNet> = NON_GLOBAL
            .iter()
            .map(|s| s.parse().expect("NON_GLOBAL holds valid CIDR literals"))
            .collect();
        RangeSet::new(&nets)
    })
}

/// Whether an address is publicly routable (outside [`non_global`]).
pub fn is_public(ip: IpAddr) -> bool {
    !non_global().contains(ip)
}

fn merge<T: Copy + Ord + num_step::Step>(mut v: Vec<(T, T)>) -> Vec<(T, T)> {
    v.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(v.len());
    for (lo, hi) in v {
        match out.last_mut() {
            Some(last) if lo <= last.1.saturating_next() => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn hit<T: Copy + Ord>(v: &[(T, T)], x: T) -> bool {
    // Index of the first interval starting after x; the candidate is the one before it.
    let i = v.partition_point(|(lo, _)| *lo <= x);
    i > 0 && x <= v[i - 1].1
}

fn covered<T: Copy + Ord>(v: &[(T, T)], lo: T, hi: T) -> bool {
    let i = v.partition_point(|(start, _)| *start <= lo);
    i > 0 && hi <= v[i - 1].1
}

/// Saturating successor for the two integer widths used above.
mod num_step {
    pub(super) trait Step {
        fn saturating_next(self) -> Self;
    }
    impl Step for u32 {
        fn saturating_next(self) -> Self {
            self.saturating_add(1)
        }
    }
    impl Step for u128 {
        fn saturating_next(self) -> Self {
            self.saturating_add(1)
        }
    }
}

const NON_GLOBAL: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "127.0.0.0/8",
    "fc00::/7",
    "fe80::/10",
    "::1/128",
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(nets: &[&str]) -> RangeSet {
        let nets: Vec<IpNet> = nets.iter().map(|s| s.parse().unwrap()).collect();
        RangeSet::new(&nets)
    }

    #[test]
    fn private_and_public_space() {
        assert!(is_public("8.8.8.8".parse().unwrap()));
        assert!(is_public("2001:db8::1".parse().unwrap()));
        assert!(!is_public("192.168.1.10".parse().unwrap()));
        assert!(!is_public("fd00::1".parse().unwrap()));
        // IPv4-mapped IPv6 is not private IPv4.
        assert!(is_public("::ffff:192.168.1.10".parse().unwrap()));
    }

    #[test]
    fn covers_and_contains() {
        let s = set(&["10.0.0.0/8", "192.168.0.0/16"]);
        assert!(s.covers(&"10.1.0.0/16".parse().unwrap()));
        assert!(!s.covers(&"0.0.0.0/0".parse().unwrap()));
        assert!(!s.covers(&"192.168.0.0/15".parse().unwrap()));
        assert!(s.contains("10.255.255.255".parse().unwrap()));
        assert!(!s.contains("11.0.0.0".parse().unwrap()));
    }

    fn arb_net() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (any::<u32>(), 0u8..=32).prop_map(|(a, p)| IpNet::new(
                std::net::Ipv4Addr::from(a).into(),
                p
            )
            .unwrap()
            .trunc()),
            (any::<u128>(), 0u8..=128).prop_map(|(a, p)| IpNet::new(
                std::net::Ipv6Addr::from(a).into(),
                p
            )
            .unwrap()
            .trunc()),
        ]
    }

    fn arb_ip(near: Vec<IpNet>) -> impl Strategy<Value = IpAddr> {
        let n = near.len();
        prop_oneof![
            any::<u32>().prop_map(|a| IpAddr::from(std::net::Ipv4Addr::from(a))),
            any::<u128>().prop_map(|a| IpAddr::from(std::net::Ipv6Addr::from(a))),
            // IPv4-mapped IPv6 addresses of random IPv4 ones.
            any::<u32>().prop_map(|a| IpAddr::from(std::net::Ipv4Addr::from(a).to_ipv6_mapped())),
            // Addresses on and next to the block edges.
            (0..n.max(1), any::<bool>(), any::<bool>()).prop_map(move |(i, top, step)| {
                let Some(net) = near.get(i) else {
                    return IpAddr::from([0u8, 0, 0, 0]);
                };
                match net {
                    IpNet::V4(v) => {
                        let x = if top {
                            u32::from(v.broadcast())
                        } else {
                            u32::from(v.network())
                        };
                        let x = match (top, step) {
                            (true, true) => x.wrapping_add(1),
                            (false, true) => x.wrapping_sub(1),
                            _ => x,
                        };
                        IpAddr::from(std::net::Ipv4Addr::from(x))
                    }
                    IpNet::V6(v) => {
                        let x = if top {
                            u128::from(v.broadcast())
                        } else {
                            u128::from(v.network())
                        };
                        let x = match (top, step) {
                            (true, true) => x.wrapping_add(1),
                            (false, true) => x.wrapping_sub(1),
                            _ => x,
                        };
                        IpAddr::from(std::net::Ipv6Addr::from(x))
                    }
                }
            }),
        ]
    }

    proptest! {
        /// The matcher agrees with a naive `IpNet::contains` loop (issue 6).
        #[test]
        fn matcher_agrees_with_naive_loop(
            (nets, ips) in proptest::collection::vec(arb_net(), 0..8).prop_flat_map(|nets| {
                let ips = proptest::collection::vec(arb_ip(nets.clone()), 1..32);
                (Just(nets), ips)
            })
        ) {
            let s = RangeSet::new(&nets);
            for ip in ips {
                let naive = nets.iter().any(|n| n.contains(&ip));
                prop_assert_eq!(s.contains(ip), naive, "{} in {:?}", ip, nets);
            }
        }
    }
}
