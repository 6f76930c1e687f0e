//! A directory of numbered frames (`frame_0001.png`, `12.jpg`, …): the frames in the natural
//! order of the number in each file name (so `frame_10` follows `frame_9`). Each file is read
//! with the image loader (`crate::preprocess::load_image`), which converts to RGB as
//! transformers does for images.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use image::{ImageReader, RgbImage};

use super::{
    check_indices, in_request_order, FrameMap, VideoError, VideoFormat, VideoMetadata, VideoReader,
    VideoRotation,
};
use crate::preprocess::load_image;

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

pub struct FrameDir {
    path: PathBuf,
    files: Vec<PathBuf>,
    meta: VideoMetadata,
}

impl FrameDir {
    pub fn open(dir: &Path) -> Result<Self, VideoError> {
        let io = |path: &Path, error| VideoError::Io {
            path: path.to_path_buf(),
            error,
        };
        let mut numbered: BTreeMap<u128, PathBuf> = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
            let file = entry.map_err(|e| io(dir, e))?.path();
            let is_frame = file
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
            if !is_frame || file.is_dir() {
                continue; // other files (notes, .DS_Store) are not frames
            }
            let stem = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let Some(number) = frame_number(&stem) else {
                return Err(VideoError::Malformed {
                    path: file,
                    msg: "a frame file name must contain its frame number (e.g. frame_0001.png)"
                        .into(),
                });
            };
            if let Some(other) = numbered.insert(number, file.clone()) {
                return Err(VideoError::Malformed {
                    path: dir.to_path_buf(),
                    msg: format!(
                        "{} and {} have the same frame number {number}",
                        other.display(),
                        file.display()
                    ),
                });
            }
        }
        let files: Vec<PathBuf> = numbered.into_values().collect();
        let Some(first) = files.first() else {
            return Err(VideoError::Malformed {
                path: dir.to_path_buf(),
                msg: "the directory holds no PNG/JPEG frames".into(),
            });
        };
        let (width, height) = ImageReader::open(first)
            .and_then(|r| r.with_guessed_format())
            .map_err(|e| io(first, e))?
            .into_dimensions()
            .map_err(|e| VideoError::Decode {
                path: first.clone(),
                msg: e.to_string(),
            })?;
        let meta = VideoMetadata {
            total_frames: files.len(),
            fps: None,
            width: width as usize,
            height: height as usize,
            duration_s: None,
            frame_times: None,
            format: VideoFormat::FrameDir,
            rotation: VideoRotation::default(),
        };
        Ok(FrameDir {
            path: dir.to_path_buf(),
            files,
            meta,
        })
    }
}

/// The last run of ASCII digits in a file stem (`clip2_frame_0010` → 10).
fn frame_number(stem: &str) -> Option<u128> {
    let end = stem.rfind(|c: char| c.is_ascii_digit())? + 1;
    let start = stem[..end]
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    // More than 38 digits overflows; such a name is not a frame number.
    stem[start..end].parse().ok()
}

impl VideoReader for FrameDir {
    fn metadata(&self) -> &VideoMetadata {
        &self.meta
    }

    fn read_frames_mapped(
        &mut self,
        indices: &[usize],
        map: FrameMap<'_>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<RgbImage>, VideoError> {
        check_indices(&self.path, indices, self.meta.total_frames)?;
        let mut wanted: BTreeMap<usize, Option<RgbImage>> =
            indices.iter().map(|&i| (i, None)).collect();
        let total = wanted.len();
        for (done, (&i, slot)) in wanted.iter_mut().enumerate() {
            let file = &self.files[i];
            let img = load_image(file)?;
            if (img.width() as usize, img.height() as usize) != (self.meta.width, self.meta.height)
            {
                return Err(VideoError::Malformed {
                    path: file.clone(),
                    msg: format!(
                        "frame is {}×{}, the first frame is {}×{}: all frames must have one size",
                        img.width(),
                        img.height(),
                        self.meta.width,
                        self.meta.height
                    ),
                });
            }
            *slot = Some(map(img));
            progress(done + 1, total);
        }
        Ok(in_request_order(indices, wanted))
    }
}

#[cfg(test)]
mod tests {
    use super::frame_number;

    #[test]
    fn frame_numbers() {
        assert_eq!(frame_number("frame_0001"), Some(1));
        assert_eq!(frame_number("clip2_frame_0010"), Some(10));
        assert_eq!(frame_number("12"), Some(12));
        assert_eq!(frame_number("cover"), None);
    }
}
