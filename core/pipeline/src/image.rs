//! Image operations on uint8 `[height, width, channels]` images.
//!
//! Crop and flip are views: they move a window and toggle a mirror flag over the decoded pixels
//! without copying them. Resize reads through the view, so `crop -> flip -> resize` costs one pass
//! over the output pixels and gives exactly the bytes the unfused ops would give, because the view
//! maps each logical pixel to the same stored pixel the materialized image would hold.
//!
//! All arithmetic that reaches pixels is integer (decode uses the decoder's scalar path, resize
//! uses fixed-point weights) or elementwise IEEE float (normalize by lookup table), so the same
//! input gives the same bytes on every CPU.

use bytes::Bytes;
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use crate::limits::MAX_IMAGE_SIDE;
use crate::rng::RecordRng;
use crate::tensor::{DType, Tensor};

/// A window over stored pixels, optionally mirrored horizontally.
#[derive(Debug, Clone)]
pub struct Image {
    pixels: Bytes,
    stride_w: usize,
    channels: usize,
    x0: usize,
    y0: usize,
    width: usize,
    height: usize,
    flipped: bool,
}

impl Image {
    /// An image over contiguous HWC pixels. `pixels.len()` must be `height * width * channels`.
    pub fn new(pixels: Bytes, height: usize, width: usize, channels: usize) -> Option<Image> {
        if height.checked_mul(width)?.checked_mul(channels)? != pixels.len() || channels == 0 {
            return None;
        }
        Some(Image {
            pixels,
            stride_w: width,
            channels,
            x0: 0,
            y0: 0,
            width,
            height,
            flipped: false,
        })
    }

    pub fn height(&self) -> usize {
        self.height
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Stored column of logical column `x`.
    fn column(&self, x: usize) -> usize {
        if self.flipped {
            self.x0 + self.width - 1 - x
        } else {
            self.x0 + x
        }
    }

    /// Restricts the view to the logical window at (`x`, `y`) of size `w` x `h`.
    pub fn crop(&mut self, x: usize, y: usize, w: usize, h: usize) {
        debug_assert!(x + w <= self.width && y + h <= self.height && w > 0 && h > 0);
        let stored_x = if self.flipped {
            self.x0 + self.width - x - w
        } else {
            self.x0 + x
        };
        self.x0 = stored_x;
        self.y0 += y;
        self.width = w;
        self.height = h;
    }

    pub fn flip_horizontal(&mut self) {
        self.flipped = !self.flipped;
    }

    /// The logical pixels as a contiguous tensor (zero-copy when the view is the whole image).
    pub fn to_tensor(&self) -> Tensor {
        let shape = vec![self.height, self.width, self.channels];
        let full = self.x0 == 0
            && self.y0 == 0
            && self.width == self.stride_w
            && self.pixels.len() == self.height * self.width * self.channels;
        if full && !self.flipped {
            return Tensor {
                dtype: DType::Uint8,
                shape,
                data: self.pixels.clone(),
            };
        }
        let c = self.channels;
        let mut out = Vec::with_capacity(self.height * self.width * c);
        for y in 0..self.height {
            let row = (self.y0 + y) * self.stride_w;
            for x in 0..self.width {
                let at = (row + self.column(x)) * c;
                out.extend_from_slice(&self.pixels[at..at + c]);
            }
        }
        Tensor {
            dtype: DType::Uint8,
            shape,
            data: Bytes::from(out),
        }
    }
}

/// Decodes a JPEG to an RGB (3) or grayscale (1) image with the decoder's scalar code path.
/// The headers are read first: an image whose width x height x `channels` is over
/// `max_pixels` (the decode budget) is refused before its buffer is allocated.
pub fn decode_jpeg(data: &[u8], channels: u8, max_pixels: u64) -> Result<Image, String> {
    let colorspace = if channels == 1 {
        ColorSpace::Luma
    } else {
        ColorSpace::RGB
    };
    let options = DecoderOptions::new_safe()
        .set_use_unsafe(false)
        .set_strict_mode(true)
        .set_max_width(MAX_IMAGE_SIDE as usize)
        .set_max_height(MAX_IMAGE_SIDE as usize)
        .jpeg_set_out_colorspace(colorspace);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(data), options);
    decoder.decode_headers().map_err(|e| e.to_string())?;
    let (width, height) = decoder
        .dimensions()
        .ok_or_else(|| "no image dimensions in the headers".to_string())?;
    let values = decode_values(&decoder, width, height, channels);
    if values > max_pixels {
        return Err(format!(
            "{width}x{height}x{channels} is {values} values to decode, over the decode budget \
             of {max_pixels} (--max-decode-pixels)"
        ));
    }
    let size = decoder
        .output_buffer_size()
        .ok_or_else(|| "image too large".to_string())?;
    let mut pixels = vec![0u8; size];
    decoder
        .decode_into(&mut pixels)
        .map_err(|e| e.to_string())?;
    Image::new(Bytes::from(pixels), height, width, usize::from(channels))
        .ok_or_else(|| format!("decoder returned {size} bytes for {width}x{height}"))
}

/// What decoding holds, in values (bytes): the output, width x height x `channels`, and for a
/// progressive JPEG also its coefficient planes, kept whole until the last scan: two bytes per
/// sample of every component the file has (`components`, which may be more than the output's
/// channels, e.g. a CMYK file decoded to grayscale).
fn decode_values(
    decoder: &JpegDecoder<ZCursor<&[u8]>>,
    width: usize,
    height: usize,
    channels: u8,
) -> u64 {
    let pixels = (width as u64) * (height as u64);
    let output = pixels * u64::from(channels);
    match decoder.info() {
        Some(info) if info.sof.is_progressive() => {
            output + pixels * u64::from(info.components.max(1)) * 2
        }
        _ => output,
    }
}

/// Picks an Inception-style crop window (x, y, w, h) for an image of `width` x `height`:
/// area fraction uniform in `area`, aspect ratio log-uniform in `aspect_ratio`, up to `attempts`
/// tries; the whole image if no try fits. Uses only IEEE basic operations and the portable libm.
pub fn sample_crop(
    rng: &mut RecordRng,
    width: usize,
    height: usize,
    area: [f64; 2],
    aspect_ratio: [f64; 2],
    attempts: u32,
) -> (usize, usize, usize, usize) {
    let total = (width * height) as f64;
    let (log_lo, log_hi) = (libm::log(aspect_ratio[0]), libm::log(aspect_ratio[1]));
    for _ in 0..attempts {
        let target = total * rng.uniform(area[0], area[1]);
        let ratio = libm::exp(rng.uniform(log_lo, log_hi));
        let w = (target * ratio).sqrt().round() as usize;
        let h = (target / ratio).sqrt().round() as usize;
        if w > 0 && h > 0 && w <= width && h <= height {
            let x = rng.below_inclusive((width - w) as u64) as usize;
            let y = rng.below_inclusive((height - h) as u64) as usize;
            return (x, y, w, h);
        }
    }
    (0, 0, width, height)
}

const WEIGHT_BITS: u32 = 11;
const WEIGHT_ONE: u32 = 1 << WEIGHT_BITS;

/// For each output coordinate: the two source coordinates and the weight of the second, in
/// 1/2048ths, for bilinear sampling with half-pixel centres: `src = (dst + 0.5) * in / out - 0.5`,
/// evaluated exactly in integers.
fn axis_taps(input: usize, output: usize) -> Vec<(usize, usize, u32)> {
    let (input_i, output_i) = (input as i64, output as i64);
    (0..output_i)
        .map(|o| {
            let num = (2 * o + 1) * input_i - output_i;
            let den = 2 * output_i;
            if num <= 0 {
                return (0, 0, 0);
            }
            let i0 = (num / den) as usize;
            if i0 >= input - 1 {
                return (input - 1, input - 1, 0);
            }
            let weight = (((num % den) << WEIGHT_BITS) / den) as u32;
            (i0, i0 + 1, weight)
        })
        .collect()
}

/// Bilinear resize of the logical image to `out_h` x `out_w`, reading through the view.
pub fn resize(image: &Image, out_h: usize, out_w: usize) -> Image {
    let c = image.channels;
    let xs: Vec<(usize, usize, u32)> = axis_taps(image.width, out_w)
        .into_iter()
        .map(|(a, b, w)| (image.column(a) * c, image.column(b) * c, w))
        .collect();
    let ys = axis_taps(image.height, out_h);
    let src = &image.pixels[..];
    let row_len = image.stride_w * c;
    let mut out = vec![0u8; out_h * out_w * c];
    for (oy, &(y0, y1, wy)) in ys.iter().enumerate() {
        let top = &src[(image.y0 + y0) * row_len..(image.y0 + y0 + 1) * row_len];
        let bottom = &src[(image.y0 + y1) * row_len..(image.y0 + y1 + 1) * row_len];
        let out_row = &mut out[oy * out_w * c..(oy + 1) * out_w * c];
        for (ox, &(x0, x1, wx)) in xs.iter().enumerate() {
            for ch in 0..c {
                let t = u32::from(top[x0 + ch]) * (WEIGHT_ONE - wx) + u32::from(top[x1 + ch]) * wx;
                let b = u32::from(bottom[x0 + ch]) * (WEIGHT_ONE - wx)
                    + u32::from(bottom[x1 + ch]) * wx;
                let v = (t * (WEIGHT_ONE - wy) + b * wy + (1 << (2 * WEIGHT_BITS - 1)))
                    >> (2 * WEIGHT_BITS);
                out_row[ox * c + ch] = v as u8;
            }
        }
    }
    Image {
        pixels: Bytes::from(out),
        stride_w: out_w,
        channels: c,
        x0: 0,
        y0: 0,
        width: out_w,
        height: out_h,
        flipped: false,
    }
}

/// Per-channel lookup tables for `(x / 255 - mean) / std`.
#[derive(Debug, Clone)]
pub struct NormalizeTable {
    tables: Vec<[f32; 256]>,
}

impl NormalizeTable {
    pub fn new(mean: &[f32], std: &[f32]) -> NormalizeTable {
        let tables = mean
            .iter()
            .zip(std)
            .map(|(&m, &s)| {
                let mut t = [0f32; 256];
                for (v, slot) in t.iter_mut().enumerate() {
                    *slot = (v as f32 / 255.0 - m) / s;
                }
                t
            })
            .collect();
        NormalizeTable { tables }
    }

    /// Normalizes the logical image into a float32 tensor.
    pub fn apply(&self, image: &Image) -> Tensor {
        let pixels = image.to_tensor();
        let c = image.channels;
        let mut out = Vec::with_capacity(pixels.data.len() * 4);
        for px in pixels.data.chunks_exact(c) {
            for (v, table) in px.iter().zip(&self.tables) {
                out.extend_from_slice(&table[usize::from(*v)].to_le_bytes());
            }
        }
        Tensor {
            dtype: DType::Float32,
            shape: pixels.shape,
            data: Bytes::from(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Stream;

    fn gradient(h: usize, w: usize, c: usize) -> Image {
        let data: Vec<u8> = (0..h * w * c).map(|i| (i * 7 % 251) as u8).collect();
        Image::new(Bytes::from(data), h, w, c).unwrap()
    }

    #[test]
    fn crop_then_flip_view_equals_materialized_ops() {
        let img = gradient(9, 11, 3);
        let mut view = img.clone();
        view.crop(2, 1, 6, 5);
        view.flip_horizontal();
        view.crop(1, 2, 4, 3);
        // Materialize step by step.
        let full = img.to_tensor();
        let px = |t: &Tensor, w: usize, y: usize, x: usize, ch: usize| t.data[(y * w + x) * 3 + ch];
        let mut expected = Vec::new();
        for y in 0..3 {
            for x in 0..4 {
                // second crop at (1,2) inside the flipped 6x5 window at (2,1)
                let fx = x + 1;
                let wx = 6 - 1 - fx;
                for ch in 0..3 {
                    expected.push(px(&full, 11, 1 + 2 + y, 2 + wx, ch));
                }
            }
        }
        assert_eq!(view.to_tensor().data.as_ref(), expected.as_slice());
        // Resizing a view equals resizing the materialized view.
        let materialized = {
            let t = view.to_tensor();
            Image::new(t.data, 3, 4, 3).unwrap()
        };
        assert_eq!(
            resize(&view, 7, 5).to_tensor(),
            resize(&materialized, 7, 5).to_tensor()
        );
    }

    #[test]
    fn resize_identity_and_constant() {
        let img = gradient(6, 5, 3);
        assert_eq!(resize(&img, 6, 5).to_tensor(), img.to_tensor());
        let flat = Image::new(Bytes::from(vec![77u8; 4 * 4]), 4, 4, 1).unwrap();
        assert!(
            resize(&flat, 9, 3)
                .to_tensor()
                .data
                .iter()
                .all(|&v| v == 77)
        );
    }

    #[test]
    fn resize_halves_by_averaging_pairs() {
        // 1x4 -> 1x2 samples at 0.5 and 2.5: averages of (0,1) and (2,3).
        let img = Image::new(Bytes::from(vec![10, 20, 30, 41]), 1, 4, 1).unwrap();
        assert_eq!(resize(&img, 1, 2).to_tensor().data.as_ref(), &[15, 36]);
    }

    #[test]
    fn crops_fit_and_are_deterministic() {
        for id in 0..200u64 {
            let mut a = RecordRng::new(5, 0, id, Stream::Op(2));
            let mut b = RecordRng::new(5, 0, id, Stream::Op(2));
            let crop = sample_crop(&mut a, 96, 80, [0.08, 1.0], [0.75, 4.0 / 3.0], 10);
            assert_eq!(
                crop,
                sample_crop(&mut b, 96, 80, [0.08, 1.0], [0.75, 4.0 / 3.0], 10)
            );
            let (x, y, w, h) = crop;
            assert!(w > 0 && h > 0 && x + w <= 96 && y + h <= 80);
        }
    }

    #[test]
    fn normalize_uses_mean_and_std() {
        let img = Image::new(Bytes::from(vec![0, 255, 51]), 1, 1, 3).unwrap();
        let t = NormalizeTable::new(&[0.0, 1.0, 0.2], &[1.0, 0.5, 0.1]).apply(&img);
        let vals: Vec<f32> = t
            .data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(vals[0], 0.0);
        assert_eq!(vals[1], 0.0);
        assert!((vals[2] - 0.0).abs() < 1e-5, "{}", vals[2]);
    }

    #[test]
    fn corrupt_jpeg_is_an_error() {
        assert!(decode_jpeg(b"not a jpeg", 3, u64::MAX).is_err());
        assert!(decode_jpeg(&[0xff, 0xd8, 0xff], 3, u64::MAX).is_err());
    }
}

#[cfg(test)]
mod budget_tests {
    use super::*;

    /// A 64 x 64 RGB JPEG, baseline or progressive.
    fn jpeg(progressive: bool) -> Vec<u8> {
        let pixels: Vec<u8> = (0..64 * 64 * 3).map(|i| (i * 13 % 251) as u8).collect();
        let mut out = Vec::new();
        let mut encoder = jpeg_encoder::Encoder::new(&mut out, 90);
        encoder.set_progressive(progressive);
        encoder
            .encode(&pixels, 64, 64, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        out
    }

    #[test]
    fn a_progressive_jpeg_counts_its_coefficient_planes_against_the_budget() {
        let output = 64 * 64 * 3;
        // Baseline: the output is all the decoder holds.
        decode_jpeg(&jpeg(false), 3, output).unwrap();
        decode_jpeg(&jpeg(false), 3, output - 1).unwrap_err();
        // Progressive: two bytes per sample of each of its three components on top.
        let progressive = jpeg(true);
        let err = decode_jpeg(&progressive, 3, output).unwrap_err();
        assert!(
            err.contains("over the decode budget") && err.contains(&(output * 3).to_string()),
            "{err}"
        );
        // Decoded to grayscale, the file's three components still count.
        decode_jpeg(&progressive, 1, 64 * 64 * 6).unwrap_err();
        decode_jpeg(&progressive, 1, 64 * 64 * 7).unwrap();
        decode_jpeg(&progressive, 3, output * 3).unwrap();
    }
}
