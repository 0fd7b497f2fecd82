//! Country and region from the client's IP address. The address is used in
//! memory for the lookup and forgotten: it is never stored, logged or put
//! in a metric.

use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;

/// A GeoIP database that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{}not a readable MaxMind database: {source}", .path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
pub struct GeoError {
    path: Option<std::path::PathBuf>,
    source: maxminddb::MaxMindDbError,
}

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
    pub fn open(path: &Path) -> Result<Geo, GeoError> {
        let reader = maxminddb::Reader::open_readfile(path).map_err(|source| GeoError {
            path: Some(path.to_path_buf()),
            source,
        })?;
        Ok(Geo {
            reader: Some(reader),
        })
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Result<Geo, GeoError> {
        let reader = maxminddb::Reader::from_source(bytes)
            .map_err(|source| GeoError { path: None, source })?;
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
            .lookup(crate::edge::canonical(ip))
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
