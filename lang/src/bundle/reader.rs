//! A bounds-checked reader over one section of a bundle, shared by the loaders of every
//! section: each read reports the section and where in it the bytes ran out, and counts and
//! indexes are checked against what the section and the tables can hold.

use super::{BundleError, SectionKind};

/// Reads one section; every read is bounds-checked and reports where the section ended.
pub(super) struct Reader<'a> {
    pub(super) section: &'static str,
    bytes: &'a [u8],
    /// How far the reader has read, in bytes from the start of the section.
    pub(super) pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(kind: SectionKind, bytes: &'a [u8]) -> Reader<'a> {
        Reader::named(kind.name(), bytes)
    }

    /// A reader over bytes that are not a section, named as errors should call them.
    pub(super) fn named(section: &'static str, bytes: &'a [u8]) -> Reader<'a> {
        Reader {
            section,
            bytes,
            pos: 0,
        }
    }

    pub(super) fn take(&mut self, len: usize) -> Result<&'a [u8], BundleError> {
        let end = self.pos.checked_add(len);
        let slice = end.and_then(|end| self.bytes.get(self.pos..end));
        let Some(slice) = slice else {
            return Err(BundleError::SectionEndsEarly {
                section: self.section,
                offset: self.bytes.len(),
            });
        };
        self.pos += len;
        Ok(slice)
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], BundleError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(super) fn u8(&mut self) -> Result<u8, BundleError> {
        Ok(self.array::<1>()?[0])
    }

    pub(super) fn u16(&mut self) -> Result<u16, BundleError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(super) fn u32(&mut self) -> Result<u32, BundleError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(super) fn i64(&mut self) -> Result<i64, BundleError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    pub(super) fn u64(&mut self) -> Result<u64, BundleError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Reads an entry count, refusing one that the remaining bytes cannot hold when each
    /// entry takes at least `min_entry_len` bytes.
    pub(super) fn count(&mut self, min_entry_len: usize) -> Result<u32, BundleError> {
        let count = self.u32()?;
        let remaining = self.bytes.len() - self.pos.min(self.bytes.len());
        if (count as usize).saturating_mul(min_entry_len) > remaining {
            return Err(BundleError::CountTooLarge {
                section: self.section,
                count,
            });
        }
        Ok(count)
    }

    pub(super) fn finish(&self) -> Result<(), BundleError> {
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(BundleError::SectionTrailingBytes {
                section: self.section,
                offset: self.pos,
            })
        }
    }

    pub(super) fn index(&mut self, what: &'static str, len: usize) -> Result<u32, BundleError> {
        let index = self.u32()?;
        check_index(self.section, what, index, len)?;
        Ok(index)
    }

    pub(super) fn invalid(&self, what: &'static str, value: u32) -> BundleError {
        BundleError::InvalidTag {
            section: self.section,
            what,
            value,
        }
    }
}

pub(super) fn check_index(
    section: &'static str,
    what: &'static str,
    index: u32,
    len: usize,
) -> Result<(), BundleError> {
    if (index as usize) < len {
        Ok(())
    } else {
        Err(BundleError::IndexOutOfRange {
            section,
            what,
            index,
            len,
        })
    }
}
