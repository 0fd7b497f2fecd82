//! Admission: what every client request passes before its handler runs,
//! in the one layer around every route (`super::outer`), on the routes
//! the table marks as client routes. It finds the client's address (one
//! proxy-trust rule), checks the address's rate limit, and refuses a body
//! declared larger than the limit; the body extractors cap what is read
//! ([`super::body`]). The address is kept in the request for the geo
//! lookup only, and is never stored, logged or put in a metric.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;

use axum::extract::connect_info::MockConnectInfo;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, header};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;

use super::body::MAX_BODY_BYTES;
use crate::config::Config;
use crate::error::ApiError;
use crate::state::AppState;

/// Token buckets per client address and per user id (in memory only).
#[derive(Debug)]
pub(crate) struct Limits {
    ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    user: Option<DefaultKeyedRateLimiter<String>>,
}

fn quota(per_second: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(per_second.saturating_mul(2)).unwrap_or(rate);
    Some(Quota::per_second(rate).allow_burst(burst))
}

fn refused(not_until: governor::NotUntil<governor::clock::QuantaInstant>) -> ApiError {
    use governor::clock::Clock;
    let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
    ApiError::TooManyRequests {
        retry_after_secs: wait.as_secs() + 1,
    }
}

impl Limits {
    pub(crate) fn new(config: &Config) -> Self {
        Limits {
            ip: quota(config.rate_limit_ip).map(RateLimiter::keyed),
            user: quota(config.rate_limit_user).map(RateLimiter::keyed),
        }
    }

    /// One request from `ip`; IPv6 addresses share the bucket of their /64
    /// (one subscriber's prefix), so a client cannot mint 2^64 buckets.
    fn check_ip(&self, ip: IpAddr) -> Result<(), ApiError> {
        match &self.ip {
            Some(limiter) => limiter.check_key(&rate_key(ip)).map_err(refused),
            None => Ok(()),
        }
    }

    /// One request carrying `user`'s events.
    pub(crate) fn check_user(&self, user: &str) -> Result<(), ApiError> {
        match &self.user {
            Some(limiter) => limiter.check_key(&user.to_string()).map_err(refused),
            None => Ok(()),
        }
    }

    /// Forgets idle buckets, so memory follows recent clients only.
    pub(crate) fn shrink(&self) {
        if let Some(l) = &self.ip {
            l.retain_recent();
        }
        if let Some(l) = &self.user {
            l.retain_recent();
        }
    }
}

/// The rate-limit key of an address: IPv4 as it is, IPv6 its /64 prefix.
pub(crate) fn rate_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:81.2.69.142`) as IPv4.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Who sent a request, as far as it can be believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Client {
    /// The client's address: the peer, or, when the peer is a trusted
    /// proxy, the right-most address in `X-Forwarded-For` that is not a
    /// trusted proxy itself.
    pub(crate) ip: IpAddr,
    /// Whether the client reached the site over https, as a trusted proxy
    /// says (`X-Forwarded-Proto`).
    pub(crate) https: bool,
}

impl Client {
    /// The one proxy-trust rule: headers count only from a trusted peer,
    /// and an untrusted peer cannot choose its own country.
    pub(crate) fn of(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> Client {
        let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(&canonical(ip)));
        let peer_ip = canonical(peer.ip());
        if !is_trusted(peer_ip) {
            return Client {
                ip: peer_ip,
                https: false,
            };
        }
        // From the right: trusted proxies are skipped; the first other
        // entry is the client, and one that does not parse ends the walk
        // (the client is then unknown, and counts as the proxy that sent it).
        let mut entries = headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.to_str().unwrap_or(""))
            .flat_map(|v| v.split(','))
            .collect::<Vec<_>>()
            .into_iter()
            .rev();
        let ip = loop {
            match entries.next().map(|e| e.trim().parse::<IpAddr>()) {
                None => break peer_ip,
                Some(Err(_)) => break peer_ip,
                Some(Ok(ip)) if is_trusted(ip) => continue,
                Some(Ok(ip)) => break canonical(ip),
            }
        };
        let https = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
        Client { ip, https }
    }
}

/// Who sent `request`, if it may go on: its address's rate limit, and a
/// body declared larger than the limit refused before it is read.
pub(crate) fn admit(app: &AppState, request: &Request) -> Result<Client, ApiError> {
    // As axum's `ConnectInfo` extractor finds it (a test's router is given
    // its peer by `MockConnectInfo`).
    let extensions = request.extensions();
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .or_else(|| extensions.get::<MockConnectInfo<SocketAddr>>().map(|m| m.0));
    let Some(peer) = peer else {
        // The service is always served with its peers' addresses; without
        // one, a request cannot be held to any address's limit.
        tracing::error!("a client request came without its peer's address");
        return Err(ApiError::Unavailable {
            retry_after_secs: 5,
        });
    };
    let client = Client::of(peer, request.headers(), &app.config.trusted_proxies);
    app.limits.check_ip(client.ip)?;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(ApiError::TooLarge(format!(
            "the body is larger than {MAX_BODY_BYTES} bytes"
        )));
    }
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        h
    }

    fn ip(peer: &str, xff: &str, trusted: &[IpNet]) -> IpAddr {
        Client::of(peer.parse().unwrap(), &headers(xff), trusted).ip
    }

    #[test]
    fn forwarded_headers_are_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec![
            "10.0.0.0/8".parse().unwrap(),
            "127.0.0.1/32".parse().unwrap(),
        ];
        let addr = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            ip("127.0.0.1:5000", "81.2.69.142", &trusted),
            addr("81.2.69.142")
        );
        assert_eq!(
            ip("192.0.2.7:5000", "81.2.69.142", &trusted),
            addr("192.0.2.7")
        );
        // A client-supplied entry to the left of the proxy chain is ignored.
        assert_eq!(
            ip("127.0.0.1:5000", "1.2.3.4, 81.2.69.142, 10.1.1.1", &trusted),
            addr("81.2.69.142")
        );
        let client = |peer: &str, headers: &HeaderMap| {
            let c = Client::of(peer.parse().unwrap(), headers, &trusted);
            (c.ip, c.https)
        };
        assert_eq!(
            client("127.0.0.1:5000", &HeaderMap::new()),
            (addr("127.0.0.1"), false)
        );
        // An IPv4-mapped peer is the same peer, for the address and for https alike.
        assert_eq!(
            client("[::ffff:127.0.0.1]:1", &headers("81.2.69.142")),
            (addr("81.2.69.142"), true)
        );
        let (_, https) = client("192.0.2.7:1", &headers("81.2.69.142"));
        assert!(!https, "an untrusted peer cannot claim https");
    }

    #[test]
    fn an_entry_that_does_not_parse_ends_the_walk() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // Behind a proxy that wrote garbage, the client cannot pick 81.2.69.142 for itself.
        assert_eq!(
            ip("10.0.0.1:5000", "81.2.69.142, garbage", &trusted),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            ip("10.0.0.1:5000", "81.2.69.142, 10.0.0.2, unknown", &trusted),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            ip("10.0.0.1:5000", "garbage, 81.2.69.142, 10.0.0.2", &trusted),
            "81.2.69.142".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn ipv6_clients_share_the_bucket_of_their_64() {
        let key = |s: &str| rate_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:81.2.69.142"), key("81.2.69.142"));
        assert_ne!(key("81.2.69.142"), key("81.2.69.143"));
    }
}
