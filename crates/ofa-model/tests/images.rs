//! Image inputs beyond the goldens: every supported container, Pillow's mode conversions,
//! and every kind of bad input giving a specific error.

mod common;

use common::*;
use image::{DynamicImage, ImageFormat, RgbImage};
use ofa_model::internal::preprocess::image::decode_rgb;
use ofa_model::OfaError;

fn astronaut() -> RgbImage {
    decode_rgb(
        &std::fs::read(golden().join("images/astronaut.png")).unwrap(),
        u64::MAX,
    )
    .unwrap()
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

#[test]
fn lossless_containers_decode_to_the_same_pixels() {
    let rgb = astronaut();
    let dynamic = DynamicImage::ImageRgb8(rgb.clone());
    for format in [
        ImageFormat::Bmp,
        ImageFormat::Tiff,
        ImageFormat::WebP,
        ImageFormat::Png,
    ] {
        let bytes = encode(&dynamic, format);
        let back = decode_rgb(&bytes, u64::MAX).unwrap_or_else(|e| panic!("{format:?}: {e}"));
        assert_eq!(back.as_raw(), rgb.as_raw(), "{format:?}");
    }
}

#[test]
fn pillow_mode_conversions() {
    // 16-bit grey: Pillow's I;16 → L clips at 255 instead of scaling.
    let grey16 = image::ImageBuffer::<image::Luma<u16>, _>::from_fn(4, 2, |x, _| {
        image::Luma([[0u16, 100, 255, 4000][x as usize]])
    });
    let out = decode_rgb(
        &encode(&DynamicImage::ImageLuma16(grey16), ImageFormat::Png),
        u64::MAX,
    )
    .unwrap();
    assert_eq!(
        &out.as_raw()[..12],
        &[0, 0, 0, 100, 100, 100, 255, 255, 255, 255, 255, 255]
    );

    // 16-bit RGB keeps the most significant byte.
    let rgb16 = image::ImageBuffer::<image::Rgb<u16>, _>::from_pixel(
        2,
        2,
        image::Rgb([0x1234, 0xABCD, 0x00FF]),
    );
    let out = decode_rgb(
        &encode(&DynamicImage::ImageRgb16(rgb16), ImageFormat::Png),
        u64::MAX,
    )
    .unwrap();
    assert_eq!(&out.as_raw()[..3], &[0x12, 0xAB, 0x00]);

    // RGBA and LA: alpha is dropped, never composited.
    let rgba = image::RgbaImage::from_pixel(3, 3, image::Rgba([10, 20, 30, 0]));
    let out = decode_rgb(
        &encode(&DynamicImage::ImageRgba8(rgba), ImageFormat::Png),
        u64::MAX,
    )
    .unwrap();
    assert!(out.pixels().all(|p| p.0 == [10, 20, 30]));
    let la = image::GrayAlphaImage::from_pixel(3, 3, image::LumaA([77, 5]));
    let out = decode_rgb(
        &encode(&DynamicImage::ImageLumaA8(la), ImageFormat::Png),
        u64::MAX,
    )
    .unwrap();
    assert!(out.pixels().all(|p| p.0 == [77, 77, 77]));
}

#[test]
fn grayscale_jpeg_replicates_the_channel() {
    let grey = DynamicImage::ImageLuma8(image::GrayImage::from_fn(16, 16, |x, y| {
        image::Luma([(x * 16 + y) as u8])
    }));
    let out = decode_rgb(&encode(&grey, ImageFormat::Jpeg), u64::MAX).unwrap();
    assert!(out.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
}

#[test]
fn exif_orientation_is_applied() {
    let case = cases()
        .iter()
        .find(|c| c["id"] == "exif_rotated_jpeg")
        .unwrap();
    let out = decode_rgb(&image_bytes(case), u64::MAX).unwrap();
    // The stored JPEG is landscape; orientation 6 turns it to portrait.
    assert_eq!(
        serde_json::json!([out.width(), out.height()]),
        case["image"]["decoded_rgb_size_wh"]
    );
    assert!(out.height() > out.width());
}

fn assert_err(bytes: &[u8], want: &str) {
    match decode_rgb(bytes, 1_000_000_000).map_err(OfaError::from) {
        Ok(_) => panic!("expected an error containing {want:?}"),
        Err(e) => {
            assert!(e.is_input_error(), "{e}");
            assert!(e.to_string().contains(want), "{e} lacks {want:?}");
        }
    }
}

#[test]
fn bad_images_give_specific_errors() {
    let jpeg = std::fs::read(golden().join("images/grace_hopper.jpg")).unwrap();
    let png = std::fs::read(golden().join("images/astronaut.png")).unwrap();
    let gif = std::fs::read(golden().join("images/no_time_for_that_tiny.gif")).unwrap();
    assert_err(&[], "empty");
    assert_err(b"this is plainly text, not an image", "unsupported format");
    assert_err(&jpeg[..jpeg.len() / 2], "truncated");
    assert_err(&png[..png.len() / 3], "truncated");
    assert_err(&gif[..20], "truncated");
    let mut broken = png.clone();
    broken[25] = 7; // IHDR colour type 7 does not exist
    assert_err(&broken, "corrupt");
    // A format the image crate knows but the service does not accept.
    let ico = encode(
        &DynamicImage::ImageRgb8(RgbImage::new(16, 16)),
        ImageFormat::Ico,
    );
    assert_err(&ico, "unsupported format");
}

#[test]
fn pixel_limit_stops_decompression_bombs_before_decoding() {
    // A 20000x20000 PNG header with almost no data: refused from the header alone.
    let img = DynamicImage::ImageLuma8(image::GrayImage::new(20_000, 20_000));
    let bytes = encode(&img, ImageFormat::Png);
    match decode_rgb(&bytes, ofa_model::DEFAULT_MAX_PIXELS).map_err(OfaError::from) {
        Err(OfaError::Input(ofa_api::BackendError::ImageTooLarge { pixels, .. })) => {
            assert_eq!(pixels, 400_000_000)
        }
        other => panic!("expected ImageTooLarge, got {other:?}"),
    }
}

#[test]
fn formats_and_modes_beyond_the_goldens_match_pillow() {
    // fixtures/pillow: made and hashed by Pillow (tools/pillow_fixtures.py).
    let dir = fixtures().join("pillow");
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let cases = expected["cases"].as_object().unwrap();
    assert!(cases.len() >= 15);
    for (name, want) in cases {
        let rgb = decode_rgb(&std::fs::read(dir.join(name)).unwrap(), u64::MAX)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            serde_json::json!([rgb.width(), rgb.height()]),
            want["size"],
            "{name}"
        );
        let resized = ofa_model::internal::preprocess::resize::resize_square(&rgb, 480);
        assert_eq!(
            sha256_hex(&resized),
            want["resized_sha256"].as_str().unwrap(),
            "{name} ({})",
            want["mode"]
        );
    }
}

fn bomb(name: &str) -> Vec<u8> {
    std::fs::read(golden().join("../bombs").join(name)).unwrap()
}

/// Peak resident memory of this process so far (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    kb * 1024
}

#[test]
fn decompression_bombs_are_refused_from_the_header_or_decoded_in_bounded_memory() {
    let m = tiny();
    let limit = ofa_model::DEFAULT_MAX_PIXELS;
    // Ruinous shapes: refused before any pixel is decoded, naming the bound they pass.
    for (name, bound) in [
        ("tall_1x100000000_1bit.png", "multiply-adds"),
        ("tall_1x3000000_grey.png", "multiply-adds"),
        ("wide_100000000x1_1bit.png", "filter weights"),
    ] {
        let t = std::time::Instant::now();
        match m.preprocess_image(&bomb(name), limit) {
            Err(OfaError::Input(ofa_api::BackendError::ImageTooCostly(msg))) => {
                assert!(msg.contains(bound), "{name}: {msg}")
            }
            other => panic!("{name}: {:?}", other.map(|p| p.len())),
        }
        assert!(
            t.elapsed().as_secs() < 2,
            "{name} was refused only after decoding"
        );
    }
    // Large but legal: decoded and resized within the memory their header promised.
    let mut promised = 0;
    let before = peak_rss();
    for name in ["square_13000x13000_1bit.png", "rgba_12000x12000.png"] {
        promised = promised.max(m.preprocess_cost(&bomb(name), limit).unwrap());
        let px = m.preprocess_image(&bomb(name), limit).unwrap();
        assert_eq!(px.len(), 480 * 480 * 3);
        assert!(
            px.iter().all(|&v| v == 0),
            "{name}: an all-zero image stays black"
        );
    }
    let grew = peak_rss().saturating_sub(before);
    // 13000² grey: 169 MB decoded + 507 MB as RGB; 12000² RGBA: 576 MB, converted in place.
    assert!(
        grew <= promised,
        "peak grew by {} MB, {} MB promised",
        grew >> 20,
        promised >> 20
    );
    assert!(promised < 800 << 20, "{} MB", promised >> 20);
    for name in ["tall_1x3000000_grey.png", "wide_100000000x1_1bit.png"] {
        assert!(matches!(
            m.preprocess_cost(&bomb(name), limit),
            Err(OfaError::Input(ofa_api::BackendError::ImageTooCostly(_)))
        ));
    }
    // Under a lower pixel limit the same files are refused by their header.
    match m.preprocess_image(&bomb("square_13000x13000_1bit.png"), 100_000_000) {
        Err(OfaError::Input(ofa_api::BackendError::ImageTooLarge { pixels, .. })) => {
            assert_eq!(pixels, 169_000_000)
        }
        other => panic!("{:?}", other.map(|p| p.len())),
    }
}

#[test]
fn rgba_converts_in_place_to_the_same_pixels() {
    let img = image::RgbaImage::from_fn(7, 5, |x, y| {
        image::Rgba([x as u8, y as u8, 9, (x * y) as u8])
    });
    let bytes = encode(&DynamicImage::ImageRgba8(img.clone()), ImageFormat::Png);
    let rgb = decode_rgb(&bytes, u64::MAX).unwrap();
    for (x, y, p) in rgb.enumerate_pixels() {
        let q = img.get_pixel(x, y);
        assert_eq!(p.0, [q[0], q[1], q[2]]);
    }
}
