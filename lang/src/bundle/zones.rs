//! The `time zones` and `time windows` sections of a bundle.
//!
//! In: the windows the emitter collected from `within` expressions (each with its zone's
//! name). Out, when writing: the two sections, the first holding the rules of every zone a
//! window names as TZif data from the compiler's IANA database, so that the VM needs no time
//! zone database of its own. Out, when loading: [`ZoneEntry`]s, each TZif parsed into a zone,
//! and [`WindowEntry`]s whose zone index and fields are checked. `docs/bundle-format.md`
//! gives the layout.

use jiff::tz::TimeZone;

use super::reader::Reader;
use super::{BundleError, SectionKind};
use crate::bytecode::{self, Emitter};
use crate::time::{self, Days, Window};

/// A time zone that windows are read in: its IANA name, its rules as TZif data, and the zone
/// built from them when the bundle loaded.
#[derive(Debug, Clone)]
pub struct ZoneEntry {
    pub name: String,
    pub tzif: Vec<u8>,
    pub zone: TimeZone,
}

impl PartialEq for ZoneEntry {
    fn eq(&self, other: &ZoneEntry) -> bool {
        self.name == other.name && self.tzif == other.tzif
    }
}

/// A window of `within` and the position of its zone in the zone list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowEntry {
    pub window: Window,
    pub zone: u32,
}

/// The most bytes of TZif data one zone may hold; the largest zone of the IANA database takes
/// a few kilobytes.
pub const MAX_TZIF_LEN: usize = 1 << 16;

/// The `time zones` and `time windows` sections for the emitter's windows; both hold only
/// their zero count when the policy set has no `within`.
pub(super) fn write(emitter: &mut Emitter) -> Result<(Vec<u8>, Vec<u8>), BundleError> {
    let windows = emitter.windows().to_vec();
    let mut zone_names: Vec<&str> = Vec::new();
    let mut window_bytes = count(windows.len(), "time windows")?;
    for (window, zone) in &windows {
        let zone_idx = match zone_names.iter().position(|known| *known == zone) {
            Some(found) => found,
            None => {
                zone_names.push(zone);
                zone_names.len() - 1
            }
        };
        window_bytes.extend(bytecode::to_u32(zone_idx, "time zones")?.to_le_bytes());
        window_bytes.push(window.days().bits());
        window_bytes.extend(window.start().to_le_bytes());
        window_bytes.extend(window.end().to_le_bytes());
    }
    let mut zone_bytes = count(zone_names.len(), "time zones")?;
    for name in zone_names {
        let Some((_, tzif)) = time::lookup_zone(name) else {
            return Err(BundleError::UnknownZone {
                name: name.to_owned(),
            });
        };
        zone_bytes.extend(emitter.intern(name)?.to_le_bytes());
        zone_bytes.extend(count(tzif.len(), "bytes of one time zone")?);
        zone_bytes.extend(tzif);
    }
    Ok((zone_bytes, window_bytes))
}

fn count(len: usize, what: &'static str) -> Result<Vec<u8>, BundleError> {
    Ok(bytecode::to_u32(len, what)?.to_le_bytes().to_vec())
}

/// Reads the zones and builds each from its TZif data.
pub(super) fn read_zones(bytes: &[u8], strings: &[String]) -> Result<Vec<ZoneEntry>, BundleError> {
    let mut reader = Reader::new(SectionKind::TimeZones, bytes);
    let n_zones = reader.count(8)?;
    let mut zones = Vec::new();
    for index in 0..n_zones as usize {
        let name_idx = reader.index("string", strings.len())?;
        let name = strings.get(name_idx as usize).cloned().unwrap_or_default();
        let len = reader.u32()?;
        if len as usize > MAX_TZIF_LEN {
            return Err(reader.invalid("zone data length", len));
        }
        let tzif = reader.take(len as usize)?.to_vec();
        let zone = time::load_zone(&name, &tzif).map_err(|error| BundleError::InvalidZone {
            index,
            error: error.to_string(),
        })?;
        zones.push(ZoneEntry { name, tzif, zone });
    }
    reader.finish()?;
    Ok(zones)
}

/// Reads the windows; each names a zone of `n_zones` and holds a valid window.
pub(super) fn read_windows(bytes: &[u8], n_zones: usize) -> Result<Vec<WindowEntry>, BundleError> {
    let mut reader = Reader::new(SectionKind::TimeWindows, bytes);
    let n_windows = reader.count(9)?;
    let mut windows = Vec::new();
    for _ in 0..n_windows {
        let zone = reader.index("time zone", n_zones)?;
        let bits = reader.u8()?;
        let days = Days::from_bits(bits).ok_or_else(|| reader.invalid("days", bits.into()))?;
        let start = reader.u16()?;
        let end = reader.u16()?;
        // A stored end is never 0: `Window::new` turns an end at midnight into 1440.
        let window = Window::new(days, start, end)
            .ok()
            .filter(|window| end != 0 && window.end() == end)
            .ok_or_else(|| reader.invalid("window minutes", u32::from(start)))?;
        windows.push(WindowEntry { window, zone });
    }
    reader.finish()?;
    Ok(windows)
}
