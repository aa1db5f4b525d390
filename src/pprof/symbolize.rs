//! Stacks of raw addresses to a symbolized pprof profile that carries the process's real
//! mappings, as Go's runtime writes them.
//!
//! `jemalloc_pprof` (through `pprof_util`) symbolizes in-process, inlined frames included, but
//! writes every mapping as `[0, u64::MAX)` with addresses relative to the object: enough for
//! function names, not for `go tool pprof -disasm`, which needs to find the instructions of a
//! sample in the binary. Here each mapping gets its real start, limit and file offset, and
//! each location its runtime address, so `pprof` can open the main binary (by path and build
//! id) and line samples up with `objdump`'s output.

use jemalloc_pprof::{StackProfile, WeightedStack};
use pprof::protos::Profile;

use crate::pprof::encode;

/// One sampled stack: addresses from the leaf to the root, each a return address (the
/// instruction after a call) except a leaf whose address is `precise_leaf`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Stack {
    pub addrs: Vec<usize>,
    /// Whether `addrs[0]` is the interrupted instruction itself (a CPU sample), not a return
    /// address (a heap sample's call into the allocator).
    pub precise_leaf: bool,
}

/// Symbolizes `stacks` into a profile with one sample per stack, in order, each with no value
/// yet: the caller sets sample types and values. Call off the async threads.
pub fn profile(stacks: &[Stack]) -> Result<Profile, String> {
    let mut profile = StackProfile::default();
    for stack in stacks {
        // `pprof_util` subtracts one from every address so that a return address lands in its
        // call instruction; a precise leaf is moved up by one first so that it stays itself.
        let mut addrs: Vec<usize> = stack.addrs.clone();
        if stack.precise_leaf
            && let Some(leaf) = addrs.first_mut()
        {
            *leaf = leaf.saturating_add(1);
        }
        addrs.reverse(); // root first, as StackProfile expects
        profile.push_stack(WeightedStack { addrs, weight: 0.0 }, None);
    }
    let mappings = mappings::MAPPINGS.as_deref().unwrap_or(&[]);
    for mapping in mappings {
        profile.push_mapping(mapping.clone());
    }
    let gzipped = profile.to_pprof(("", ""), ("", ""), None);
    let mut profile = encode::gunzip_profile(&gzipped)?;
    for sample in &mut profile.sample {
        sample.value.clear();
    }
    // pprof_util numbers mappings 1.. in the order they were pushed.
    for (mapping, real) in profile.mapping.iter_mut().zip(mappings) {
        mapping.memory_start = real.memory_start as u64;
        mapping.memory_limit = real.memory_end as u64;
        mapping.file_offset = real.file_offset;
        // Every address was symbolized in-process; without this, pprof would look for libc
        // and the vdso locally and warn about them.
        mapping.has_functions = true;
    }
    for location in &mut profile.location {
        if let Some(real) = location
            .mapping_id
            .checked_sub(1)
            .and_then(|i| mappings.get(i as usize))
        {
            // Back from the object-relative address pprof_util wrote to the runtime address.
            location.address = location
                .address
                .wrapping_sub(real.memory_offset as u64)
                .wrapping_add(real.memory_start as u64);
        }
    }
    Ok(profile)
}

/// Names of each sample's frames from the root to the leaf, inlined frames included.
pub fn frame_names(profile: &Profile) -> Vec<Vec<&str>> {
    use std::collections::HashMap;
    let functions: HashMap<u64, &str> = profile
        .function
        .iter()
        .map(|f| {
            let name = profile
                .string_table
                .get(f.name as usize)
                .map_or("", String::as_str);
            (f.id, name)
        })
        .collect();
    let locations: HashMap<u64, &pprof::protos::Location> =
        profile.location.iter().map(|l| (l.id, l)).collect();
    profile
        .sample
        .iter()
        .map(|sample| {
            let mut names = Vec::new();
            for id in sample.location_id.iter().rev() {
                let Some(location) = locations.get(id) else {
                    continue;
                };
                if location.line.is_empty() {
                    names.push("[unknown]");
                }
                for line in location.line.iter().rev() {
                    names.push(functions.get(&line.function_id).copied().unwrap_or("?"));
                }
            }
            names
        })
        .collect()
}
