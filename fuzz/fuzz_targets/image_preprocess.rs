//! Image decoding and preprocessing: any bytes either give a 64×64 RGB image or a specific
//! error, within the same pixel limit and resize bounds as the service.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ofa_preprocess::image::{decode_for_resize, DEFAULT_MAX_PIXELS};
use ofa_preprocess::resize::resize_square;

fuzz_target!(|data: &[u8]| {
    if let Ok(rgb) = decode_for_resize(data, DEFAULT_MAX_PIXELS, 64) {
        assert_eq!(resize_square(&rgb, 64).len(), 64 * 64 * 3);
    }
});
