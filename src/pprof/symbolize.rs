//! Stacks of raw addresses to a symbolized pprof profile that carries the process's real
//! mappings, as Go's runtime writes them.
//!
//! `jemalloc_pprof` (through `pprof_util`) symbolizes in-process, inlined frames included, but
//! writes every mapping as `[0, u64::MAX)`: enough for function names, not for
//! `go tool pprof -disasm`, which needs to find the instructions of a sample in the binary.
//! Here each mapping gets its file (absolute), build id, range and file offset, and each
//! location the address the binary's symbol table and `objdump` use (the ELF virtual address,
//! not the randomized one of this run), so `pprof` opens the main binary and lines samples up
//! with its instructions. [`runtime_address`] translates such an address back for
//! `/debug/pprof/symbol`.

use jemalloc_pprof::{StackProfile, WeightedStack};
use pprof::protos::Profile;

use crate::pprof::encode;

/// The page size mappings are rounded to (Linux on x86_64 and aarch64's usual 4 KiB; a larger
/// page is a multiple of it, so rounding to 4 KiB still starts each mapping on a page).
const PAGE: usize = 4096;

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
        // A zero address ends some unwound stacks; it names nothing (and pprof_util would
        // subtract one from it).
        let mut addrs: Vec<usize> = stack.addrs.iter().copied().filter(|&a| a != 0).collect();
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
    // The main binary's path as the process was started may be relative ("target/debug/..."),
    // which pprof would resolve against its own directory: name it absolutely.
    let exe = std::env::current_exe().ok();
    let mut strings = encode::StringTable::from_strings(std::mem::take(&mut profile.string_table));
    for (mapping, real) in profile.mapping.iter_mut().zip(mappings) {
        if let Some(exe) = &exe
            && real.pathname.is_relative()
            && real.pathname.file_name() == exe.file_name()
        {
            mapping.filename = strings.intern(&exe.to_string_lossy());
        }
    }
    profile.string_table = strings.into_strings();
    // pprof_util numbers mappings 1.. in the order they were pushed, and writes each address
    // relative to its object's load address: the ELF virtual address, which is what `objdump`
    // and the symbol table show. Give each mapping its range in the same space, in whole pages
    // as the kernel maps them, with its file offset: then `go tool pprof`, which compares
    // addresses with the binary's symbols as they are, and Google's pprof, which derives the
    // load address from the mapping, both find the instructions of every sample.
    for (mapping, real) in profile.mapping.iter_mut().zip(mappings) {
        let page = PAGE as u64;
        let start = real.memory_offset as u64;
        let size = (real.memory_end - real.memory_start) as u64;
        mapping.memory_start = start & !(page - 1);
        mapping.memory_limit = (start + size).next_multiple_of(page);
        mapping.file_offset = real.file_offset & !(page - 1);
        // Every address was symbolized in-process; without this, pprof would look for libc
        // and the vdso locally and warn about them.
        mapping.has_functions = true;
    }
    Ok(profile)
}

/// Each function's name by its id.
pub fn function_names(profile: &Profile) -> std::collections::HashMap<u64, &str> {
    profile
        .function
        .iter()
        .map(|f| {
            let name = profile
                .string_table
                .get(f.name as usize)
                .map_or("", String::as_str);
            (f.id, name)
        })
        .collect()
}

/// Names of each sample's frames from the root to the leaf, inlined frames included.
pub fn frame_names(profile: &Profile) -> Vec<Vec<&str>> {
    use std::collections::HashMap;
    let functions = function_names(profile);
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

/// The address in this process of `address` as profiles write it (an ELF virtual address of
/// the main binary or a library, see the module docs), or `address` itself when it is already
/// a runtime address.
pub fn runtime_address(address: u64) -> u64 {
    let mappings = mappings::MAPPINGS.as_deref().unwrap_or(&[]);
    if mappings
        .iter()
        .any(|m| (m.memory_start as u64..m.memory_end as u64).contains(&address))
    {
        return address;
    }
    // The main binary is the first object; its segments' virtual addresses start near zero,
    // far below where the kernel loads it.
    let Some(main) = mappings.first() else {
        return address;
    };
    let base = (main.memory_start - main.memory_offset) as u64;
    mappings
        .iter()
        .filter(|m| m.pathname == main.pathname)
        .find(|m| {
            (m.memory_offset as u64..(m.memory_offset + m.memory_end - m.memory_start) as u64)
                .contains(&address)
        })
        .map_or(address, |_| address + base)
}
