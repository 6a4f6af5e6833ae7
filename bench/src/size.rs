//! How much of a WebAssembly binary is custom sections (names, producers, debug info), which
//! stripping removes, counted through nested core modules and components.

/// Section id of a custom section, in modules and components alike.
const CUSTOM: u8 = 0;
/// Component section ids that hold a whole nested core module or component.
const CORE_MODULE: u8 = 1;
const COMPONENT: u8 = 4;

/// Bytes in custom sections (ids, lengths and payloads) anywhere in `wasm`.
///
/// `None` when the binary is not well formed.
pub fn custom_section_bytes(wasm: &[u8]) -> Option<u64> {
    if wasm.get(..4)? != b"\0asm" {
        return None;
    }
    let is_component = wasm.get(6..8)? == [1, 0];
    let mut at = 8;
    let mut total = 0u64;
    while at < wasm.len() {
        let id = wasm[at];
        let (size, length_bytes) = leb128(wasm.get(at + 1..)?)?;
        let payload_start = at + 1 + length_bytes;
        let payload = wasm.get(payload_start..payload_start + size)?;
        if id == CUSTOM {
            total += (1 + length_bytes + size) as u64;
        } else if is_component && (id == CORE_MODULE || id == COMPONENT) {
            total += custom_section_bytes(payload)?;
        }
        at = payload_start + size;
    }
    Some(total)
}

fn leb128(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, byte) in bytes.iter().take(5).enumerate() {
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_sections_are_counted_inside_a_nested_module() {
        // A core module with one custom section `n` holding one byte.
        let module = [b"\0asm".as_slice(), &[1, 0, 0, 0], &[0, 3, 1, b'n', 7]].concat();
        let mut component = [b"\0asm".as_slice(), &[0x0d, 0, 1, 0]].concat();
        component.push(CORE_MODULE);
        component.push(module.len() as u8);
        component.extend_from_slice(&module);
        component.extend_from_slice(&[0, 2, 1, b'c']);

        assert_eq!(custom_section_bytes(&module), Some(5));
        assert_eq!(custom_section_bytes(&component), Some(5 + 4));
        assert_eq!(custom_section_bytes(b"nope"), None);
    }
}
