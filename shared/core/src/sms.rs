//! How carriers count an SMS: which encoding its text needs and how many segments it is
//! billed as. GSM-7 when every character is in the GSM 03.38 alphabet (its extension
//! characters take two septets: an escape and the character), else UCS-2 (UTF-16 code units).
//! A single message holds 160 septets or 70 code units; a longer one is split into segments of
//! 153 septets or 67 code units (the rest of each is the concatenation header), and carriers
//! never split an escape pair or a surrogate pair across two segments.

use serde::{Deserialize, Serialize};

/// The GSM 03.38 basic alphabet (the escape, 0x1B, left out: it only introduces the
/// extension characters).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";

/// The GSM 03.38 extension table: two septets each.
const GSM7_EXTENSION: &str = "\u{000C}^{}\\[~]|€";

/// The text encoding an SMS goes out in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SmsEncoding {
    /// The 7-bit GSM alphabet.
    #[serde(rename = "GSM-7")]
    Gsm7,
    /// UTF-16, for any text with a character outside the GSM alphabet.
    #[serde(rename = "UCS-2")]
    Ucs2,
}

/// An SMS as a carrier counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmsCount {
    /// How many segments it is sent (and billed) as.
    pub segments: u32,
    /// The encoding its text needs.
    pub encoding: SmsEncoding,
}

/// The septets each ASCII character takes in GSM-7 (0: not in the alphabet), read from the
/// alphabets once at compile time: most texts are ASCII, and a table lookup spares scanning
/// the alphabets for every character of every message serialised.
const ASCII_SEPTETS: [u8; 128] = {
    let mut table = [0u8; 128];
    // ASCII characters are the UTF-8 bytes below 0x80; the others' bytes are all above.
    let (basic, extension) = (GSM7_BASIC.as_bytes(), GSM7_EXTENSION.as_bytes());
    let mut i = 0;
    while i < extension.len() {
        if extension[i] < 0x80 {
            table[extension[i] as usize] = 2;
        }
        i += 1;
    }
    let mut i = 0;
    while i < basic.len() {
        if basic[i] < 0x80 {
            table[basic[i] as usize] = 1;
        }
        i += 1;
    }
    table
};

/// How many septets `c` takes in GSM-7, or `None` when it is not in the alphabet.
fn gsm7_septets(c: char) -> Option<usize> {
    if c.is_ascii() {
        return match ASCII_SEPTETS[c as usize] {
            0 => None,
            n => Some(usize::from(n)),
        };
    }
    if GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// Segments for units of the given sizes: one message up to `single`, else segments of
/// `part`, a unit never split across two.
fn segments(units: impl Iterator<Item = usize> + Clone, single: usize, part: usize) -> u32 {
    if units.clone().sum::<usize>() <= single {
        return 1;
    }
    let (mut count, mut used) = (1, 0);
    for size in units {
        if used + size > part {
            count += 1;
            used = 0;
        }
        used += size;
    }
    count
}

/// Counts `text` as carriers do. An empty text is one segment (the message still goes out).
pub fn count(text: &str) -> SmsCount {
    if text.chars().all(|c| gsm7_septets(c).is_some()) {
        let septets = text.chars().map(|c| gsm7_septets(c).unwrap_or(1));
        SmsCount {
            segments: segments(septets, 160, 153),
            encoding: SmsEncoding::Gsm7,
        }
    } else {
        SmsCount {
            segments: segments(text.chars().map(char::len_utf16), 70, 67),
            encoding: SmsEncoding::Ucs2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gsm(segments: u32) -> SmsCount {
        SmsCount {
            segments,
            encoding: SmsEncoding::Gsm7,
        }
    }

    fn ucs2(segments: u32) -> SmsCount {
        SmsCount {
            segments,
            encoding: SmsEncoding::Ucs2,
        }
    }

    #[test]
    fn gsm7_fits_160_then_splits_by_153() {
        assert_eq!(count(""), gsm(1));
        assert_eq!(count(&"a".repeat(160)), gsm(1));
        assert_eq!(count(&"a".repeat(161)), gsm(2));
        assert_eq!(count(&"a".repeat(306)), gsm(2));
        assert_eq!(count(&"a".repeat(307)), gsm(3));
        assert_eq!(
            count("Unit 12 arrives in 4 min @ Main & 5th; ¿Qué? Ça va: £5"),
            gsm(1)
        );
    }

    #[test]
    fn extension_characters_count_two_and_are_never_split() {
        // 80 euro signs are 160 septets: one message; one more character is two segments.
        assert_eq!(count(&"€".repeat(80)), gsm(1));
        assert_eq!(count(&format!("{}a", "€".repeat(80))), gsm(2));
        // 152 septets then an escape pair: the pair moves to the second segment whole, so
        // 152 + (2 + 151) fits two segments and one septet more needs a third.
        let text = format!("{}{{{}", "a".repeat(152), "a".repeat(151));
        assert_eq!(count(&text), gsm(2));
        let text = format!("{}{{{}", "a".repeat(152), "a".repeat(152));
        assert_eq!(count(&text), gsm(3));
    }

    #[test]
    fn anything_outside_gsm7_is_ucs2_by_70_then_67() {
        assert_eq!(count(&"é".repeat(160)), gsm(1), "é is in the GSM alphabet");
        assert_eq!(count(&"ê".repeat(70)), ucs2(1));
        assert_eq!(count(&"ê".repeat(71)), ucs2(2));
        assert_eq!(count(&"ê".repeat(134)), ucs2(2));
        assert_eq!(count(&"ê".repeat(135)), ucs2(3));
        assert_eq!(count("Help is on the way 🚑"), ucs2(1));
    }

    #[test]
    fn surrogate_pairs_count_two_units_and_are_never_split() {
        assert_eq!(count(&"🚑".repeat(35)), ucs2(1));
        assert_eq!(count(&"🚑".repeat(36)), ucs2(2));
        // 66 units then an emoji: it cannot straddle the boundary at 67.
        let text = format!("{}🚑{}", "ê".repeat(66), "ê".repeat(65));
        assert_eq!(count(&text), ucs2(2));
        let text = format!("{}🚑{}", "ê".repeat(66), "ê".repeat(66));
        assert_eq!(count(&text), ucs2(3));
    }

    #[test]
    fn encodings_serialise_as_carriers_name_them() {
        assert_eq!(
            serde_json::to_string(&SmsEncoding::Gsm7).unwrap(),
            "\"GSM-7\""
        );
        assert_eq!(
            serde_json::to_string(&SmsEncoding::Ucs2).unwrap(),
            "\"UCS-2\""
        );
    }

    #[test]
    fn the_ascii_table_agrees_with_the_alphabets() {
        for c in (0u8..0x80).map(char::from) {
            let slow = if GSM7_BASIC.contains(c) {
                Some(1)
            } else if GSM7_EXTENSION.contains(c) {
                Some(2)
            } else {
                None
            };
            assert_eq!(gsm7_septets(c), slow, "{c:?}");
        }
    }
}
