//! `fastcgi::params::decode_params` (and `parse_pair`) on arbitrary bytes: never panics, keeps
//! the limits, and whatever it accepts re-encodes canonically to no more bytes and decodes
//! back to the same pairs.
//!
//! Input layout: one knob byte (bit 0 = small limits), then the params block.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::fastcgi::params::{decode_params, encode_pair, parse_pair};
use protocol::Limits;

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, block)) = data.split_first() else {
        return;
    };
    let limits = if knobs & 1 == 0 {
        Limits::default()
    } else {
        Limits {
            max_params_bytes: 256,
            max_params_pairs: 8,
            ..Limits::default()
        }
    };

    if let Ok(Some((name, value, used))) = parse_pair(block) {
        assert!(name.start <= name.end && name.end == value.start);
        assert!(value.end == used && used <= block.len());
    }

    match decode_params(block.to_vec(), &limits) {
        Ok(head) => {
            assert!(block.len() <= limits.max_params_bytes);
            assert!(head.len() <= limits.max_params_pairs);
            assert!(head.params_bytes() <= block.len());
            let mut again = Vec::new();
            for (name, value) in head.iter() {
                assert!(!name.is_empty());
                encode_pair(name, value, &mut again);
            }
            // Lengths under 128 may be sent in the 4-byte form, never the other way round.
            assert!(again.len() <= block.len());
            let back = decode_params(again, &limits).expect("canonical re-encoding decodes");
            assert!(back.iter().eq(head.iter()));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
