//! A video's display rotation: phone videos are stored sideways with a display matrix that turns
//! them upright. PyAV's `to_ndarray` (and so transformers) ignores it; `--video-rotation apply`
//! turns each frame as players do.

use image::imageops;
use image::RgbImage;

/// Counter-clockwise quarter turns that bring the coded picture upright (0..=3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VideoRotation(u8);

impl VideoRotation {
    /// From a display matrix's counter-clockwise angle (`av_display_rotation_get`), to the
    /// nearest quarter turn; NaN (a degenerate matrix) is no rotation.
    pub fn from_degrees(degrees: f64) -> Self {
        if !degrees.is_finite() {
            return Self(0);
        }
        Self(((degrees / 90.0).round() as i64).rem_euclid(4) as u8)
    }

    pub fn degrees(self) -> u32 {
        u32::from(self.0) * 90
    }

    /// Whether turning swaps width and height.
    pub fn swaps_sides(self) -> bool {
        self.0 % 2 == 1
    }

    /// `frame` turned upright: `numpy.rot90(frame, k)` with k the quarter turns, which is what
    /// the ffmpeg CLI's autorotation shows (tools/golden/make_media_fixtures.py checks it).
    pub fn apply(self, frame: RgbImage) -> RgbImage {
        match self.0 {
            1 => imageops::rotate270(&frame),
            2 => imageops::rotate180(&frame),
            3 => imageops::rotate90(&frame),
            _ => frame,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::VideoRotation;
    use image::{Rgb, RgbImage};

    #[test]
    fn quarter_turns() {
        assert_eq!(VideoRotation::from_degrees(90.0).degrees(), 90);
        assert_eq!(VideoRotation::from_degrees(-90.0).degrees(), 270);
        assert_eq!(VideoRotation::from_degrees(179.6).degrees(), 180);
        assert_eq!(VideoRotation::from_degrees(f64::NAN).degrees(), 0);
        // 2x1, left red, right blue; a quarter turn counter-clockwise puts blue on top.
        let mut img = RgbImage::new(2, 1);
        img.put_pixel(0, 0, Rgb([255, 0, 0]));
        img.put_pixel(1, 0, Rgb([0, 0, 255]));
        let up = VideoRotation::from_degrees(90.0).apply(img);
        assert_eq!(up.dimensions(), (1, 2));
        assert_eq!(up.get_pixel(0, 0).0, [0, 0, 255]);
    }
}
