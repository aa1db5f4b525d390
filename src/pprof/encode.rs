//! Writing profiles the way `go tool pprof` reads them: a gzip-compressed `profile.proto`.

use std::collections::HashMap;
use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use pprof::protos::{self, Message};

/// The profile's string table: index 0 is the empty string, every other string appears once.
#[derive(Debug)]
pub struct StringTable {
    strings: Vec<String>,
    index: HashMap<String, i64>,
}

impl Default for StringTable {
    fn default() -> Self {
        StringTable {
            strings: vec![String::new()],
            index: HashMap::from([(String::new(), 0)]),
        }
    }
}

impl StringTable {
    /// A table that starts with `strings` (a profile's table, whose index 0 is "").
    pub fn from_strings(strings: Vec<String>) -> StringTable {
        if strings.is_empty() {
            return StringTable::default();
        }
        let index = strings
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as i64))
            .collect();
        StringTable { strings, index }
    }

    pub fn intern(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.strings.len() as i64;
        self.strings.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }

    pub fn value_type(&mut self, ty: &str, unit: &str) -> protos::ValueType {
        protos::ValueType {
            ty: self.intern(ty),
            unit: self.intern(unit),
            ..Default::default()
        }
    }

    pub fn into_strings(self) -> Vec<String> {
        self.strings
    }
}

/// Serialises and compresses a profile.
pub fn gzip_profile(profile: &protos::Profile) -> Result<Vec<u8>, String> {
    let bytes = profile
        .write_to_bytes()
        .map_err(|e| format!("encoding the profile: {e}"))?;
    let mut gz = GzEncoder::new(Vec::with_capacity(bytes.len() / 4), Compression::default());
    gz.write_all(&bytes)
        .and_then(|()| gz.finish())
        .map_err(|e| format!("compressing the profile: {e}"))
}

/// Decompresses and parses a profile.
pub fn gunzip_profile(gzipped: &[u8]) -> Result<protos::Profile, String> {
    let mut bytes = Vec::new();
    GzDecoder::new(gzipped)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("decompressing the profile: {e}"))?;
    protos::Profile::parse_from_bytes(&bytes).map_err(|e| format!("parsing the profile: {e}"))
}

/// Demangled name without the hash suffix, as pprof shows Rust functions.
///
/// pprof treats a function whose `system_name` equals its `name` as C++ and strips `<...>`,
/// which would erase the type in `<T as Trait>::method`; callers keep the raw symbol in
/// `system_name` so the two differ.
pub fn demangle(raw: &str) -> String {
    format!("{:#}", rustc_demangle::demangle(raw))
}

/// Frees the debug information that symbolization parsed and cached: tens of megabytes for this
/// binary, which would otherwise stay allocated and show on the memory panels of both workers
/// after their first profile. The next profile parses it again (about 100 ms).
pub fn release_symbol_cache() {
    backtrace::clear_symbol_cache();
}
