//! Image decoding with Pillow's semantics: EXIF orientation applied, then `convert('RGB')`
//! (alpha dropped without compositing, palettes looked up, 16-bit grey clipped), then the
//! Pillow-exact bicubic resize (`ToTensor` + `Normalize` are in `pixel_tensor`).

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

use crate::error::{PreprocessError, Result};
use ofa_api::BackendError;

pub use ofa_api::DEFAULT_MAX_PIXELS;

/// Decodes an encoded image (JPEG, PNG, GIF, WebP, BMP, TIFF) to 8-bit RGB the way
/// `ImageOps.exif_transpose(Image.open(f)).convert('RGB')` does.
pub fn decode_rgb(bytes: &[u8], max_pixels: u64) -> Result<RgbImage> {
    decode_checked(bytes, max_pixels, None)
}

/// Decodes for a `size`×`size` resize: refuses, from the header alone, an image whose resize
/// would pass the bounds of [`crate::resize::check_cost`].
pub fn decode_for_resize(bytes: &[u8], max_pixels: u64, size: usize) -> Result<RgbImage> {
    decode_checked(bytes, max_pixels, Some(size))
}

/// Peak memory, in bytes, that [`decode_for_resize`] may take for these bytes, from their header
/// alone (cheap: no pixel is decoded); the same refusals as decoding.
pub fn decode_cost(bytes: &[u8], max_pixels: u64, size: usize) -> Result<u64> {
    let (_, _, header) = open(bytes, max_pixels, Some(size))?;
    Ok(header.peak_bytes(size))
}

/// Largest decoder output per pixel allowed: RGBA at 8 bits. Deeper images are allowed up to the
/// same number of bytes, so decoding never holds more than 4 bytes per allowed pixel.
const MAX_DECODED_BYTES_PER_PIXEL: u64 = 4;

/// What the header says, before any pixel buffer exists.
struct Header {
    format: ImageFormat,
    width: u32,
    height: u32,
    color: image::ColorType,
    decoded_bytes: u64,
    orientation: Option<image::metadata::Orientation>,
}

impl Header {
    /// An upper bound on the bytes held at once: the decoder's output, a rotated copy of it,
    /// the RGB conversion (none for RGB, in place for RGBA) and the resize's buffers.
    fn peak_bytes(&self, size: usize) -> u64 {
        let px = u64::from(self.width) * u64::from(self.height);
        // libjpeg may produce CMYK (4 bytes); a GIF frame is indexed, then drawn as RGB.
        let decoded = match self.format {
            ImageFormat::Jpeg | ImageFormat::Gif => px * 4,
            _ => self.decoded_bytes,
        };
        let rotated = match self.orientation {
            None | Some(image::metadata::Orientation::NoTransforms) => 0,
            Some(_) => decoded,
        };
        let rgb = match (self.format, self.color) {
            (ImageFormat::Jpeg | ImageFormat::Gif, _) => 0,
            (_, image::ColorType::Rgb8 | image::ColorType::Rgba8) => 0,
            _ => px * 3,
        };
        let (w, h) = self.upright();
        let s = size as u64;
        let resize = u64::from(h) * s * 3
            + s * s * 3
            + crate::resize::table_bytes(w as usize, h as usize, size, size);
        decoded + rotated + rgb + resize
    }

    fn upright(&self) -> (u32, u32) {
        use image::metadata::Orientation as O;
        match self.orientation {
            Some(O::Rotate90 | O::Rotate270 | O::Rotate90FlipH | O::Rotate270FlipH) => {
                (self.height, self.width)
            }
            _ => (self.width, self.height),
        }
    }
}

/// Reads the header and makes every check that needs no pixels: format, pixel count, the
/// decoder's output size, and (for a resize to `size`) the resize bounds.
fn open(
    bytes: &[u8],
    max_pixels: u64,
    size: Option<usize>,
) -> Result<(ImageFormat, Box<dyn ImageDecoder + '_>, Header)> {
    if bytes.is_empty() {
        return Err(PreprocessError::Input(BackendError::Image(
            "empty image data".into(),
        )));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| PreprocessError::Input(BackendError::Image(e.to_string())))?;
    // The decoders' own allocations (and their metadata's) are held to the same budget.
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(MAX_DECODED_BYTES_PER_PIXEL));
    reader.limits(limits);
    let format = reader.format().ok_or_else(|| {
        PreprocessError::Input(BackendError::UnsupportedImage(
            "not a JPEG, PNG, GIF, WebP, BMP or TIFF file".into(),
        ))
    })?;
    if !matches!(
        format,
        ImageFormat::Jpeg
            | ImageFormat::Png
            | ImageFormat::Gif
            | ImageFormat::WebP
            | ImageFormat::Bmp
            | ImageFormat::Tiff
    ) {
        return Err(PreprocessError::Input(BackendError::UnsupportedImage(
            format!("{format:?}"),
        )));
    }
    let mut decoder = reader.into_decoder().map_err(map_image_error)?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(PreprocessError::Input(BackendError::ImageTooLarge {
            width,
            height,
            pixels,
            limit: max_pixels,
        }));
    }
    if pixels == 0 {
        return Err(PreprocessError::Input(BackendError::Image(format!(
            "image has no pixels ({width}x{height})"
        ))));
    }
    let budget = max_pixels.saturating_mul(MAX_DECODED_BYTES_PER_PIXEL);
    if decoder.total_bytes() > budget {
        return Err(PreprocessError::Input(BackendError::ImageTooCostly(format!(
            "a {width}x{height} image of {:?} decodes to {} bytes, more than the limit of {budget} (4 bytes per allowed pixel)",
            decoder.color_type(),
            decoder.total_bytes()
        ))));
    }
    let header = Header {
        format,
        width,
        height,
        color: decoder.color_type(),
        decoded_bytes: decoder.total_bytes(),
        orientation: decoder.orientation().ok(),
    };
    if let Some(size) = size {
        let (w, h) = header.upright();
        crate::resize::check_cost(w as usize, h as usize, size, size)
            .map_err(|m| PreprocessError::Input(BackendError::ImageTooCostly(m)))?;
    }
    Ok((format, Box::new(decoder), header))
}

fn decode_checked(bytes: &[u8], max_pixels: u64, size: Option<usize>) -> Result<RgbImage> {
    let (format, decoder, header) = open(bytes, max_pixels, size)?;
    let mut img = if format == ImageFormat::Gif {
        drop(decoder);
        gif_first_frame(bytes)?
    } else if format == ImageFormat::Jpeg {
        drop(decoder);
        jpeg_like_pillow(bytes)?
    } else {
        DynamicImage::from_decoder(decoder).map_err(map_image_error)?
    };
    if let Some(o) = header.orientation {
        img.apply_orientation(o);
    }
    Ok(to_rgb_like_pillow(img))
}

fn map_image_error(e: image::ImageError) -> PreprocessError {
    match e {
        image::ImageError::Unsupported(u) => {
            PreprocessError::Input(BackendError::UnsupportedImage(u.to_string()))
        }
        image::ImageError::Limits(l) => PreprocessError::Input(BackendError::Image(format!(
            "image exceeds decoder limits: {l}"
        ))),
        other => PreprocessError::Input(BackendError::Image(format!(
            "corrupt or truncated image: {other}"
        ))),
    }
}

/// Pillow's `convert('RGB')` for each mode the decoders produce.
fn to_rgb_like_pillow(img: DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageRgba8(rgba) => {
            // In place: the RGB bytes of pixel i never overtake the RGBA bytes still unread.
            let (w, h) = rgba.dimensions();
            let mut data = rgba.into_raw();
            let n = data.len() / 4;
            for i in 0..n {
                data.copy_within(i * 4..i * 4 + 3, i * 3);
            }
            data.truncate(n * 3);
            data.shrink_to_fit();
            RgbImage::from_raw(w, h, data).expect("buffer size matches")
        }
        DynamicImage::ImageLuma8(l) => grey_to_rgb(l.width(), l.height(), l.into_raw().into_iter()),
        DynamicImage::ImageLumaA8(la) => {
            let (w, h) = la.dimensions();
            grey_to_rgb(w, h, la.pixels().map(|p| p[0]))
        }
        // Pillow opens 16-bit grey as "I;16"; its conversion to 8 bits clips rather than scales.
        DynamicImage::ImageLuma16(l) => {
            let (w, h) = l.dimensions();
            grey_to_rgb(w, h, l.pixels().map(|p| p[0].min(255) as u8))
        }
        // 16-bit LA/RGB/RGBA are unpacked by Pillow keeping the most significant byte.
        DynamicImage::ImageLumaA16(la) => {
            let (w, h) = la.dimensions();
            grey_to_rgb(w, h, la.pixels().map(|p| (p[0] >> 8) as u8))
        }
        DynamicImage::ImageRgb16(rgb) => {
            let (w, h) = rgb.dimensions();
            let data = rgb.into_raw().into_iter().map(|v| (v >> 8) as u8).collect();
            RgbImage::from_raw(w, h, data).expect("buffer size matches")
        }
        DynamicImage::ImageRgba16(rgba) => {
            let (w, h) = rgba.dimensions();
            let data = rgba
                .pixels()
                .flat_map(|p| [(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8])
                .collect();
            RgbImage::from_raw(w, h, data).expect("buffer size matches")
        }
        other => other.to_rgb8(),
    }
}

fn grey_to_rgb(w: u32, h: u32, grey: impl Iterator<Item = u8>) -> RgbImage {
    let data = grey.flat_map(|g| [g, g, g]).collect();
    RgbImage::from_raw(w, h, data).expect("buffer size matches")
}

/// JPEG through libjpeg-turbo's decoder with Pillow's settings (ISLOW IDCT, fancy upsampling),
/// so pixels are identical to the reference's.
fn jpeg_like_pillow(bytes: &[u8]) -> Result<DynamicImage> {
    // libjpeg pads a truncated stream with a fake EOI and only warns; Pillow refuses such files
    // ("image file is truncated"), so require a real EOI after the first scan.
    let sos = bytes.windows(2).position(|w| w == [0xFF, 0xDA]);
    let eoi = bytes.windows(2).rposition(|w| w == [0xFF, 0xD9]);
    match (sos, eoi) {
        (Some(s), Some(e)) if e > s => {}
        _ => {
            return Err(PreprocessError::Input(BackendError::Image(
                "corrupt or truncated image: JPEG data ends before its end-of-image marker".into(),
            )))
        }
    }
    use mozjpeg::ColorSpace as Cs;
    // libjpeg reports fatal errors by unwinding out of its error handler; those unwinds are
    // expected and caught here. A process-wide panic hook may ask `in_libjpeg` to keep them quiet.
    IN_LIBJPEG.with(|f| f.set(true));
    let decoded = std::panic::catch_unwind(|| -> std::io::Result<DynamicImage> {
        let d = mozjpeg::Decompress::new_mem(bytes)?;
        match d.color_space() {
            Cs::JCS_GRAYSCALE => {
                let mut s = d.grayscale()?;
                let (w, h) = (s.width() as u32, s.height() as u32);
                let px: Vec<u8> = s.read_scanlines()?;
                s.finish()?;
                Ok(DynamicImage::ImageLuma8(
                    image::GrayImage::from_raw(w, h, px).ok_or_else(short)?,
                ))
            }
            Cs::JCS_CMYK | Cs::JCS_YCCK => {
                let mut s = d.to_colorspace(Cs::JCS_CMYK)?;
                let (w, h) = (s.width() as u32, s.height() as u32);
                let px: Vec<u8> = s.read_scanlines()?;
                s.finish()?;
                Ok(DynamicImage::ImageRgb8(
                    RgbImage::from_raw(w, h, cmyk_to_rgb(&px)).ok_or_else(short)?,
                ))
            }
            _ => {
                let mut s = d.rgb()?;
                let (w, h) = (s.width() as u32, s.height() as u32);
                let px: Vec<u8> = s.read_scanlines()?;
                s.finish()?;
                Ok(DynamicImage::ImageRgb8(
                    RgbImage::from_raw(w, h, px).ok_or_else(short)?,
                ))
            }
        }
    });
    IN_LIBJPEG.with(|f| f.set(false));
    match decoded {
        Ok(Ok(img)) => Ok(img),
        Ok(Err(e)) => Err(PreprocessError::Input(BackendError::Image(format!(
            "corrupt or truncated image: {e}"
        )))),
        Err(panic) => Err(PreprocessError::Input(BackendError::Image(format!(
            "corrupt or truncated image: {}",
            ofa_api::panic::panic_message(&*panic)
        )))),
    }
}

thread_local! {
    static IN_LIBJPEG: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is inside libjpeg, whose fatal errors unwind as panics that the decoder
/// catches: the binary's panic hook stays silent for those.
pub fn in_libjpeg() -> bool {
    IN_LIBJPEG.with(|f| f.get())
}

fn short() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "fewer scanlines than the header announced",
    )
}

/// Pillow reads CMYK JPEGs as Adobe-inverted (`CMYK;I`), then converts with `cmyk2rgb`.
fn cmyk_to_rgb(inverted: &[u8]) -> Vec<u8> {
    let muldiv255 = |a: u32, b: u32| {
        let t = a * b + 128;
        ((t >> 8) + t) >> 8
    };
    inverted
        .chunks_exact(4)
        .flat_map(|p| {
            let [c, m, y, k] = [255 - p[0], 255 - p[1], 255 - p[2], 255 - p[3]].map(u32::from);
            let nk = 255 - k;
            [c, m, y].map(|v| nk.saturating_sub(muldiv255(v, nk)).min(255) as u8)
        })
        .collect()
}

/// First GIF frame as Pillow shows it in mode "P": palette indices looked up with transparency
/// ignored, on a canvas of the logical screen size filled with the frame's transparent index or
/// else the background index.
fn gif_first_frame(bytes: &[u8]) -> Result<DynamicImage> {
    let mut opts = gif::DecodeOptions::new();
    opts.set_color_output(gif::ColorOutput::Indexed);
    let mut dec = opts.read_info(Cursor::new(bytes)).map_err(|e| {
        PreprocessError::Input(BackendError::Image(format!(
            "corrupt or truncated image: {e}"
        )))
    })?;
    let (sw, sh) = (u32::from(dec.width()), u32::from(dec.height()));
    let global = dec.global_palette().map(<[u8]>::to_vec);
    let background = dec.bg_color();
    let frame = dec
        .read_next_frame()
        .map_err(|e| {
            PreprocessError::Input(BackendError::Image(format!(
                "corrupt or truncated image: {e}"
            )))
        })?
        .ok_or_else(|| PreprocessError::Input(BackendError::Image("GIF has no frames".into())))?
        .clone();
    let palette = frame.palette.clone().or(global).ok_or_else(|| {
        PreprocessError::Input(BackendError::Image("GIF frame has no palette".into()))
    })?;
    let fill = frame
        .transparent
        .map(usize::from)
        .or(background)
        .unwrap_or(0);
    let lookup = |i: usize| -> [u8; 3] {
        let o = i * 3;
        if o + 2 < palette.len() {
            [palette[o], palette[o + 1], palette[o + 2]]
        } else {
            [0, 0, 0]
        }
    };
    let fill_rgb = lookup(fill);
    let mut canvas = RgbImage::from_pixel(sw.max(1), sh.max(1), image::Rgb(fill_rgb));
    let (fl, ft) = (u32::from(frame.left), u32::from(frame.top));
    let (fw, fh) = (u32::from(frame.width), u32::from(frame.height));
    for y in 0..fh {
        for x in 0..fw {
            let (cx, cy) = (fl + x, ft + y);
            if cx < canvas.width() && cy < canvas.height() {
                let idx = frame.buffer[(y * fw + x) as usize] as usize;
                canvas.put_pixel(cx, cy, image::Rgb(lookup(idx)));
            }
        }
    }
    Ok(DynamicImage::ImageRgb8(canvas))
}
