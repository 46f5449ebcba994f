//! Which code a rank runs: the ELF build-id of its executable (the linker's
//! hash of the output, different for any change of code), or else a SHA-256
//! of the executable's bytes. Tasks name functions by their offset in the
//! binary, so every rank must run byte-identical code; a device/inode/mtime
//! identity means nothing across machines.

use sha2::{Digest, Sha256};

/// This process's code identity, e.g. `"build-id 5eaa…"` or
/// `"sha256 9f86…"` (computed once).
pub(crate) fn current() -> String {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| match std::fs::read("/proc/self/exe") {
        Ok(bytes) => of_executable(&bytes),
        Err(e) => format!("unreadable executable ({e})"),
    })
    .clone()
}

/// The identity of an executable's bytes.
pub(crate) fn of_executable(bytes: &[u8]) -> String {
    match build_id(bytes) {
        Some(id) => format!("build-id {}", hex(id)),
        None => format!("sha256 {}", hex(&Sha256::digest(bytes))),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// The `NT_GNU_BUILD_ID` note of a little-endian ELF64 file, found through
/// its `PT_NOTE` program headers. Every offset is bounds-checked: a
/// malformed file gives `None`.
pub(crate) fn build_id(b: &[u8]) -> Option<&[u8]> {
    const PT_NOTE: u32 = 4;
    const NT_GNU_BUILD_ID: u32 = 3;
    // ELF magic, 64-bit class, little-endian data.
    if b.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let phoff = usize::try_from(u64_at(b, 0x20)?).ok()?;
    let phentsize = usize::from(u16_at(b, 0x36)?);
    let phnum = usize::from(u16_at(b, 0x38)?);
    if phentsize < 56 {
        return None;
    }
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(b, ph)? != PT_NOTE {
            continue;
        }
        let off = usize::try_from(u64_at(b, ph.checked_add(8)?)?).ok()?;
        let size = usize::try_from(u64_at(b, ph.checked_add(32)?)?).ok()?;
        let notes = b.get(off..off.checked_add(size)?)?;
        let mut at = 0;
        while at + 12 <= notes.len() {
            let namesz = u32_at(notes, at)? as usize;
            let descsz = u32_at(notes, at + 4)? as usize;
            let kind = u32_at(notes, at + 8)?;
            let name_at = at + 12;
            let desc_at = name_at.checked_add(namesz.checked_add(3)? & !3)?;
            let end = desc_at.checked_add(descsz.checked_add(3)? & !3)?;
            let name = notes.get(name_at..name_at.checked_add(namesz)?)?;
            let desc = notes.get(desc_at..desc_at.checked_add(descsz)?)?;
            if kind == NT_GNU_BUILD_ID && name == b"GNU\0" && !desc.is_empty() {
                return Some(desc);
            }
            at = end;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_executable_has_a_build_id() {
        let exe = std::fs::read("/proc/self/exe").unwrap();
        let id = current();
        assert!(
            id.starts_with("build-id ") || id.starts_with("sha256 "),
            "{id}"
        );
        // Same bytes, same identity; one flipped byte of the id, another.
        assert_eq!(of_executable(&exe), id);
        if let Some(bid) = build_id(&exe) {
            let at = bid.as_ptr() as usize - exe.as_ptr() as usize;
            let mut other = exe.clone();
            other[at] ^= 0xff;
            assert_ne!(of_executable(&other), id);
        }
    }

    #[test]
    fn not_elf_is_hashed() {
        assert_eq!(build_id(b"#!/bin/sh\n"), None);
        let a = of_executable(b"one");
        assert!(a.starts_with("sha256 "));
        assert_ne!(a, of_executable(b"two"));
    }

    #[test]
    fn truncated_headers_give_none() {
        let exe = std::fs::read("/proc/self/exe").unwrap();
        for len in [0, 5, 6, 0x38, 64, 200] {
            let _ = build_id(&exe[..len.min(exe.len())]);
        }
        let mut bad = exe[..64].to_vec();
        bad[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(build_id(&bad), None);
    }
}
