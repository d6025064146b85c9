//! Raw little-endian element bytes of weight files to f32.

/// The float element types weight files hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Element {
    F32,
    F64,
    F16,
    BF16,
}

/// `raw` little-endian elements as f32. A trailing partial element is ignored: the caller
/// compares the count with the tensor's shape and refuses the file when they differ.
pub(super) fn to_f32(raw: &[u8], element: Element) -> Vec<f32> {
    match element {
        Element::F32 => convert(raw, f32::from_le_bytes),
        Element::F64 => convert(raw, |b| f64::from_le_bytes(b) as f32),
        Element::F16 => convert(raw, |b| f16_to_f32(u16::from_le_bytes(b))),
        Element::BF16 => convert(raw, |b| {
            f32::from_bits((u16::from_le_bytes(b) as u32) << 16)
        }),
    }
}

/// Each `N`-byte element through `f` (copied into an array: no fallible conversion).
fn convert<const N: usize>(raw: &[u8], f: impl Fn([u8; N]) -> f32) -> Vec<f32> {
    raw.chunks_exact(N)
        .map(|chunk| {
            let mut bytes = [0u8; N];
            bytes.copy_from_slice(chunk);
            f(bytes)
        })
        .collect()
}

/// IEEE half → single conversion (no dependency needed for this one function).
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let bits = if exp == 0 {
        if mant == 0 {
            sign
        } else {
            // Subnormal: normalise.
            let mut e = 127 - 15 + 1;
            let mut m = mant;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((m & 0x3ff) << 13)
        }
    } else if exp == 0x1f {
        sign | 0x7f80_0000 | (mant << 13)
    } else {
        sign | ((exp + 127 - 15) << 23) | (mant << 13)
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_element_type_decodes_and_a_partial_element_is_dropped() {
        assert_eq!(to_f32(&1.5f32.to_le_bytes(), Element::F32), [1.5]);
        assert_eq!(to_f32(&(-2.25f64).to_le_bytes(), Element::F64), [-2.25]);
        // 0x3e00 = 1.5 in half precision; 0x3fc0 = 1.5 in bfloat16.
        assert_eq!(to_f32(&0x3e00u16.to_le_bytes(), Element::F16), [1.5]);
        assert_eq!(to_f32(&0x3fc0u16.to_le_bytes(), Element::BF16), [1.5]);
        assert_eq!(to_f32(&[0, 0, 0xc0, 0x3f, 7], Element::F32), [1.5]);
    }
}
