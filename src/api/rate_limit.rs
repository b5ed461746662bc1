//! Per-client rate limiting of `POST /api/v1/csr` (DESIGN §5): the `--rate-limit N/PERIOD`
//! value, a token bucket per client address, and how the client address is found
//! (`X-Forwarded-For` only from a `--trusted-proxy`).
//!
//! IPv6 clients are limited per /64, since one host usually owns a whole /64. The bucket map
//! is pruned periodically ([`RateLimiter::prune`]): a bucket that has filled up again says no
//! more than a fresh one would, so it is dropped.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

/// `--rate-limit`: `count` requests per `period`; `count == 0` disables limiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per period (also the burst size).
    pub count: u32,
    /// The period.
    pub period: Duration,
}

impl RateLimit {
    /// No limit.
    pub const OFF: Self = Self {
        count: 0,
        period: Duration::from_secs(60),
    };

    /// Whether requests are limited at all.
    pub fn is_enabled(self) -> bool {
        self.count > 0
    }
}

impl Default for RateLimit {
    /// One request a minute (DESIGN §6).
    fn default() -> Self {
        Self {
            count: 1,
            period: Duration::from_secs(60),
        }
    }
}

/// A `--rate-limit` value that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a rate limit: write N/s, N/min or N/h (e.g. 1/min), or 0 to disable")]
pub struct BadRateLimit(pub String);

impl FromStr for RateLimit {
    type Err = BadRateLimit;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadRateLimit(s.to_owned());
        let t = s.trim();
        if t == "0" {
            return Ok(Self::OFF);
        }
        let (count, unit) = t.split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let unit: Unit = unit.trim().parse().map_err(|()| bad())?;
        if count == 0 {
            return Ok(Self::OFF);
        }
        Ok(Self {
            count,
            period: unit.0,
        })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.is_enabled() {
            return f.write_str("0");
        }
        let unit = match self.period.as_secs() {
            1 => "s",
            3600 => "h",
            _ => "min",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

struct Unit(Duration);

impl FromStr for Unit {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let secs = match s {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3600,
            _ => return Err(()),
        };
        Ok(Self(Duration::from_secs(secs)))
    }
}

/// Token buckets per client.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// A limiter for an enabled limit.
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The limit.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes one token for `client` at `now`; `Err(seconds)` to wait when none is left.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), u64> {
        let key = bucket_key(client);
        let capacity = f64::from(self.limit.count);
        let rate = self.rate();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - bucket.tokens) / rate).ceil();
            Err((wait as u64).max(1))
        }
    }

    /// Drops buckets that have filled up again; returns how many are left.
    pub fn prune(&self, now: Instant) -> usize {
        let capacity = f64::from(self.limit.count);
        let rate = self.rate();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens + elapsed * rate < capacity
        });
        buckets.len()
    }

    fn rate(&self) -> f64 {
        f64::from(self.limit.count) / self.limit.period.as_secs_f64()
    }
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the right-most
/// `X-Forwarded-For` entry that is not itself a trusted proxy.
pub fn client_addr(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let peer_ip = canonical(peer.ip());
    if !trusted.contains(&peer_ip) {
        return peer_ip;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    // Walk from the right (the hops our proxies appended); stop at the first client address,
    // and trust nothing left of an entry that does not parse.
    for hop in hops.into_iter().rev() {
        match parse_hop(hop).map(canonical) {
            Some(ip) if trusted.contains(&ip) => continue,
            Some(ip) => return ip,
            None => break,
        }
    }
    peer_ip
}

/// One `X-Forwarded-For` entry: an address, possibly with a port as proxies write it
/// (`192.0.2.1:5678`, `[2001:db8::1]:80`); anything else is `None`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    hop.parse::<SocketAddr>().ok().map(|s| s.ip()).or_else(|| {
        // `[2001:db8::1]` without a port.
        hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
    })
}

/// IPv4-mapped IPv6 addresses are their IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The bucket of an address: itself for IPv4, its /64 for IPv6.
pub fn bucket_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rate_limits() {
        assert_eq!("1/min".parse::<RateLimit>().unwrap(), RateLimit::default());
        assert_eq!(
            "10/s".parse::<RateLimit>().unwrap(),
            RateLimit {
                count: 10,
                period: Duration::from_secs(1)
            }
        );
        assert_eq!(
            "100/h".parse::<RateLimit>().unwrap().period,
            Duration::from_secs(3600)
        );
        assert!(!"0".parse::<RateLimit>().unwrap().is_enabled());
        assert!(!"0/min".parse::<RateLimit>().unwrap().is_enabled());
        for bad in ["", "1", "x/min", "1/day", "-1/s", "1/", "/s", "1.5/s"] {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad}");
        }
        assert_eq!(RateLimit::default().to_string(), "1/min");
    }

    #[test]
    fn bucket_allows_the_burst_then_says_how_long_to_wait() {
        let limiter = RateLimiter::new("2/min".parse().unwrap());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        assert!(limiter.check(ip, t0).is_ok());
        assert!(limiter.check(ip, t0).is_ok());
        assert_eq!(limiter.check(ip, t0), Err(30));
        // Another client has its own bucket.
        assert!(limiter.check("192.0.2.2".parse().unwrap(), t0).is_ok());
        // After 30 s one token is back.
        assert!(limiter.check(ip, t0 + Duration::from_secs(30)).is_ok());
        assert!(limiter.check(ip, t0 + Duration::from_secs(31)).is_err());
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        let limiter = RateLimiter::new(RateLimit::default());
        let t0 = Instant::now();
        assert!(limiter.check("2001:db8::1".parse().unwrap(), t0).is_ok());
        assert!(limiter.check("2001:db8::2".parse().unwrap(), t0).is_err());
        assert!(limiter
            .check("2001:db8:0:1::1".parse().unwrap(), t0)
            .is_ok());
    }

    #[test]
    fn prune_drops_full_buckets_only() {
        let limiter = RateLimiter::new(RateLimit::default());
        let t0 = Instant::now();
        limiter.check("192.0.2.1".parse().unwrap(), t0).unwrap();
        assert_eq!(limiter.prune(t0 + Duration::from_secs(10)), 1);
        assert_eq!(limiter.prune(t0 + Duration::from_secs(60)), 0);
    }

    #[test]
    fn forwarded_for_is_used_only_from_a_trusted_proxy() {
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.7".parse().unwrap(),
        );
        let from_proxy = SocketAddr::new(proxy, 1234);
        let other = SocketAddr::new("192.0.2.5".parse().unwrap(), 1234);
        assert_eq!(client_addr(other, &headers, &[proxy]), other.ip());
        assert_eq!(client_addr(from_proxy, &headers, &[]), proxy);
        assert_eq!(
            client_addr(from_proxy, &headers, &[proxy]),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        let chained: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(
            client_addr(from_proxy, &headers, &[proxy, chained]),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // Issue 16: entries with a port are addresses, not garbage that falls back to the
        // proxy's own bucket.
        headers.insert(
            "x-forwarded-for",
            "203.0.113.9:5678, 198.51.100.7:443".parse().unwrap(),
        );
        assert_eq!(
            client_addr(from_proxy, &headers, &[proxy]),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        for (entry, ip) in [
            ("[2001:db8::1]:80", "2001:db8::1"),
            ("[2001:db8::2]", "2001:db8::2"),
            ("[::ffff:192.0.2.7]:1", "192.0.2.7"),
        ] {
            headers.insert("x-forwarded-for", entry.parse().unwrap());
            assert_eq!(
                client_addr(from_proxy, &headers, &[proxy]),
                ip.parse::<IpAddr>().unwrap(),
                "{entry}"
            );
        }
        headers.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(client_addr(from_proxy, &headers, &[proxy]), proxy);
    }
}
