//! Country and region from the client's IP address. The address is used in
//! memory for the lookup and forgotten: it is never stored, logged or put
//! in a metric.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use axum::http::HeaderMap;
use ipnet::IpNet;
use serde::Deserialize;

/// A MaxMind-format City database (GeoLite2, GeoIP2, DB-IP City Lite), or none.
#[derive(Debug, Default)]
pub struct Geo {
    reader: Option<maxminddb::Reader<Vec<u8>>>,
}

#[derive(Debug, Deserialize)]
struct IsoCode {
    iso_code: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CityRecord {
    country: Option<IsoCode>,
    #[serde(default)]
    subdivisions: Vec<IsoCode>,
}

/// Where an address is: ISO 3166-1 country and ISO 3166-2 region codes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Place {
    pub country: Option<String>,
    pub region: Option<String>,
}

impl Geo {
    pub fn open(path: &Path) -> anyhow::Result<Geo> {
        let reader = maxminddb::Reader::open_readfile(path).map_err(|e| {
            anyhow::anyhow!("{}: not a readable MaxMind database: {e}", path.display())
        })?;
        Ok(Geo {
            reader: Some(reader),
        })
    }

    pub fn from_bytes(bytes: Vec<u8>) -> anyhow::Result<Geo> {
        let reader = maxminddb::Reader::from_source(bytes)
            .map_err(|e| anyhow::anyhow!("not a MaxMind database: {e}"))?;
        Ok(Geo {
            reader: Some(reader),
        })
    }

    /// The place of `ip`; an unknown address, or any failure, is no place.
    pub fn lookup(&self, ip: IpAddr) -> Place {
        let Some(reader) = &self.reader else {
            return Place::default();
        };
        let record: Option<CityRecord> = reader
            .lookup(canonical(ip))
            .ok()
            .and_then(|r| r.decode().ok())
            .flatten();
        let Some(record) = record else {
            return Place::default();
        };
        Place {
            country: record.country.and_then(|c| c.iso_code),
            region: record
                .subdivisions
                .into_iter()
                .next()
                .and_then(|s| s.iso_code),
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:81.2.69.142`) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client's address: the peer, or, when the peer is a trusted proxy,
/// the right-most address in `X-Forwarded-For` that is not a trusted proxy
/// itself. An untrusted peer cannot choose its own country.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(&canonical(ip)));
    let peer_ip = canonical(peer.ip());
    if !is_trusted(peer_ip) {
        return peer_ip;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    forwarded
        .into_iter()
        .rev()
        .map(canonical)
        .find(|ip| !is_trusted(*ip))
        .unwrap_or(peer_ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec![
            "10.0.0.0/8".parse().unwrap(),
            "127.0.0.1/32".parse().unwrap(),
        ];
        let proxy: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let stranger: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        assert_eq!(
            client_ip(proxy, &headers("81.2.69.142"), &trusted),
            "81.2.69.142".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(stranger, &headers("81.2.69.142"), &trusted),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
        // A client-supplied entry to the left of the proxy chain is ignored.
        assert_eq!(
            client_ip(proxy, &headers("1.2.3.4, 81.2.69.142, 10.1.1.1"), &trusted),
            "81.2.69.142".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(proxy, &HeaderMap::new(), &trusted),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:1".parse().unwrap();
        assert_eq!(
            client_ip(mapped, &headers("81.2.69.142"), &trusted),
            "81.2.69.142".parse::<IpAddr>().unwrap()
        );
    }
}
