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
            country: record
                .country
                .and_then(|c| c.iso_code)
                .filter(|c| is_code(c, COUNTRY_CHARS)),
            region: record
                .subdivisions
                .into_iter()
                .next()
                .and_then(|s| s.iso_code)
                .filter(|c| is_code(c, REGION_CHARS)),
        }
    }
}

/// Longest country code: ISO 3166-1 alpha-2.
pub const COUNTRY_CHARS: usize = 2;
/// Longest region code: the part of an ISO 3166-2 code after the country.
pub const REGION_CHARS: usize = 3;

/// Whether `code` has the form of an ISO code of at most `max` characters
/// (ASCII capitals and digits). A database that says otherwise is not
/// believed: the code is stored as unknown, so what reaches storage is
/// bounded whatever file the operator gives.
fn is_code(code: &str, max: usize) -> bool {
    (1..=max).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}
