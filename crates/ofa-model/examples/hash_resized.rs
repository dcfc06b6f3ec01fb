//! Prints `name size sha256` of the 480×480 resized RGB of each image file given, for comparing
//! the decoding and resize path with Pillow's on inputs the goldens do not cover.
use sha2::Digest;

fn main() {
    for path in std::env::args().skip(1) {
        let bytes = std::fs::read(&path).expect("readable file");
        match ofa_model::internal::preprocess::image::decode_rgb(&bytes, u64::MAX) {
            Ok(rgb) => {
                let px = ofa_model::internal::preprocess::resize::resize_square(&rgb, 480);
                let hex: String = sha2::Sha256::digest(&px)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                println!("{path} {}x{} {hex}", rgb.width(), rgb.height());
            }
            Err(e) => println!("{path} error {e}"),
        }
    }
}
