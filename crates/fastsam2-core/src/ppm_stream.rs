//! A stream of binary PPM (`P6`) images, one after another on one reader: what
//! `ffmpeg ... -f image2pipe -vcodec ppm -` writes to a pipe, and the input of
//! `fastsam2 track --stream -`.
//!
//! Each image carries its own header (`P6`, width, height, maxval 255, separated by
//! whitespace, `#` comments allowed between fields, one whitespace byte before the
//! pixels), so no side channel is needed for the frame size.
//!
//! Hand-written rather than `image`'s PNM decoder: that decoder owns its reader for one
//! image, while a pipe needs each frame read to its exact last byte and nothing more
//! (the next frame's header follows at once), and a clean end of stream told apart from a
//! cut frame.

use std::io::{BufRead, ErrorKind};

use crate::image_io::RgbImage;

/// Largest width or height accepted (a corrupt header must not trigger a huge allocation).
pub const MAX_SIDE: u32 = 16_384;

/// Why a frame of a PPM stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PpmError {
    /// Reading the stream failed.
    #[error("PPM stream, frame {frame}: read error: {source}")]
    Io {
        /// Index of the frame being read (0-based).
        frame: usize,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The header is not a binary 8-bit RGB PPM header.
    #[error("PPM stream, frame {frame}: {detail}")]
    BadHeader {
        /// Index of the frame being read (0-based).
        frame: usize,
        /// What was wrong.
        detail: String,
    },
    /// The stream ended inside a frame.
    #[error(
        "PPM stream, frame {frame}: the stream ends {got} of {expected} pixel bytes into the frame"
    )]
    Truncated {
        /// Index of the frame being read (0-based).
        frame: usize,
        /// Bytes of pixel data read.
        got: usize,
        /// `width * height * 3`.
        expected: usize,
    },
}

/// Reads successive PPM frames from `reader`.
pub struct PpmStream<R> {
    reader: R,
    frame: usize,
}

impl<R: BufRead> PpmStream<R> {
    pub fn new(reader: R) -> Self {
        Self { reader, frame: 0 }
    }

    /// Frames read so far.
    pub fn frames_read(&self) -> usize {
        self.frame
    }

    /// The next frame, or `None` at a clean end of stream (no byte after the last frame,
    /// whitespace aside).
    pub fn next_frame(&mut self) -> Result<Option<RgbImage>, PpmError> {
        let frame = self.frame;
        let io = |source| PpmError::Io { frame, source };
        let bad = |detail: String| PpmError::BadHeader { frame, detail };
        // skip whitespace between frames; end of stream here is clean
        if !skip_space(&mut self.reader, false).map_err(io)? {
            return Ok(None);
        }
        let mut magic = [0u8; 2];
        self.reader.read_exact(&mut magic).map_err(|e| {
            if e.kind() == ErrorKind::UnexpectedEof {
                bad("the stream ends inside the header".into())
            } else {
                io(e)
            }
        })?;
        if &magic != b"P6" {
            return Err(bad(format!(
                "expected a binary PPM header (P6), found bytes {:02x} {:02x}",
                magic[0], magic[1]
            )));
        }
        let mut field = |name: &str| -> Result<u32, PpmError> {
            if !skip_space(&mut self.reader, true).map_err(io)? {
                return Err(bad(format!("the stream ends before the {name}")));
            }
            let mut v: u64 = 0;
            let mut digits = 0;
            loop {
                let buf = self.reader.fill_buf().map_err(io)?;
                let Some(&b) = buf.first() else { break };
                if !b.is_ascii_digit() {
                    break;
                }
                v = (v * 10 + u64::from(b - b'0')).min(u64::from(u32::MAX));
                digits += 1;
                self.reader.consume(1);
            }
            if digits == 0 {
                return Err(bad(format!("the {name} is not a number")));
            }
            Ok(v as u32)
        };
        let width = field("width")?;
        let height = field("height")?;
        let maxval = field("maxval")?;
        if maxval != 255 {
            return Err(bad(format!(
                "maxval {maxval}: only 8-bit PPM (maxval 255) is read; ask ffmpeg for -pix_fmt rgb24"
            )));
        }
        if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
            return Err(bad(format!(
                "frame size {width}x{height} is outside 1..={MAX_SIDE} per side"
            )));
        }
        // exactly one whitespace byte before the pixels
        let mut sep = [0u8; 1];
        match self.reader.read_exact(&mut sep) {
            Ok(()) if sep[0].is_ascii_whitespace() => {}
            Ok(()) => return Err(bad("no whitespace between the header and the pixels".into())),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                return Err(PpmError::Truncated {
                    frame,
                    got: 0,
                    expected: width as usize * height as usize * 3,
                });
            }
            Err(e) => return Err(io(e)),
        }
        let expected = width as usize * height as usize * 3;
        let mut data = vec![0u8; expected];
        let mut got = 0;
        while got < expected {
            match self.reader.read(&mut data[got..]) {
                Ok(0) => {
                    return Err(PpmError::Truncated {
                        frame,
                        got,
                        expected,
                    });
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(io(e)),
            }
        }
        self.frame += 1;
        let img = RgbImage::from_raw(width, height, data)
            .map_err(|e| bad(format!("cannot build the image: {e}")))?;
        Ok(Some(img))
    }
}

impl<R: BufRead> Iterator for PpmStream<R> {
    type Item = Result<RgbImage, PpmError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_frame().transpose()
    }
}

/// Skips ASCII whitespace (and `#` comments to the end of their line when `comments`).
/// Returns false at the end of the stream.
fn skip_space<R: BufRead>(r: &mut R, comments: bool) -> std::io::Result<bool> {
    let mut in_comment = false;
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(false);
        }
        let mut n = 0;
        for &b in buf {
            if in_comment {
                in_comment = b != b'\n' && b != b'\r';
            } else if comments && b == b'#' {
                in_comment = true;
            } else if !b.is_ascii_whitespace() {
                r.consume(n);
                return Ok(true);
            }
            n += 1;
        }
        r.consume(n);
    }
}

/// Writes `img` as one binary PPM frame (the format [`PpmStream`] reads).
pub fn write_ppm_frame(w: &mut impl std::io::Write, img: &RgbImage) -> std::io::Result<()> {
    write!(w, "P6\n{} {}\n255\n", img.width(), img.height())?;
    w.write_all(img.as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(w: u32, h: u32, seed: u8) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            [
                (x as u8).wrapping_add(seed),
                (y as u8).wrapping_mul(3),
                seed ^ (x as u8 + y as u8),
            ]
        })
        .unwrap()
    }

    #[test]
    fn reads_frames_back_to_back() {
        let (a, b) = (img(5, 3, 1), img(2, 7, 200));
        let mut bytes = Vec::new();
        write_ppm_frame(&mut bytes, &a).unwrap();
        write_ppm_frame(&mut bytes, &b).unwrap();
        // a tiny buffer, so fields and pixels straddle refills
        let mut s = PpmStream::new(std::io::BufReader::with_capacity(3, bytes.as_slice()));
        let ra = s.next_frame().unwrap().unwrap();
        assert_eq!((ra.width(), ra.height(), ra.as_raw()), (5, 3, a.as_raw()));
        let rb = s.next_frame().unwrap().unwrap();
        assert_eq!((rb.width(), rb.height(), rb.as_raw()), (2, 7, b.as_raw()));
        assert!(s.next_frame().unwrap().is_none());
        assert_eq!(s.frames_read(), 2);
    }

    #[test]
    fn header_comments_and_whitespace() {
        let mut bytes = b"\n P6 # from a camera\n# size:\n2\t1 #w h\n255\r".to_vec();
        bytes.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
        bytes.extend_from_slice(b"\n\n");
        let frames: Vec<_> = PpmStream::new(bytes.as_slice()).collect();
        assert_eq!(frames.len(), 1);
        let f = frames[0].as_ref().unwrap();
        assert_eq!((f.width(), f.height()), (2, 1));
        assert_eq!(f.as_raw(), &[1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn bad_streams_name_the_problem() {
        let err = |bytes: &[u8]| {
            let mut s = PpmStream::new(bytes);
            loop {
                match s.next_frame() {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("no error for {bytes:?}"),
                    Err(e) => return e.to_string(),
                }
            }
        };
        let mut one = Vec::new();
        write_ppm_frame(&mut one, &img(4, 4, 9)).unwrap();
        // second frame cut in its pixels
        let mut cut = one.clone();
        cut.extend_from_slice(&one[..one.len() - 5]);
        let e = err(&cut);
        assert!(
            e.contains("frame 1") && e.contains("43 of 48 pixel bytes"),
            "{e}"
        );
        assert!(err(b"P5\n2 2\n255\n....").contains("expected a binary PPM header (P6)"));
        assert!(err(b"\x89PNG\r\n").contains("found bytes 89 50"));
        assert!(err(b"P6\n2 2\n65535\n").contains("maxval 65535"));
        assert!(err(b"P6\n0 2\n255\n").contains("frame size 0x2"));
        assert!(err(b"P6\n99999 99999\n255\n").contains("outside 1..=16384"));
        assert!(err(b"P6\nx 2\n255\n").contains("width is not a number"));
        assert!(err(b"P6\n2 2").contains("ends before the maxval"));
        assert!(err(b"P6\n2 2\n255").contains("0 of 12 pixel bytes"));
        assert!(err(b"P").contains("ends inside the header"));
        // a clean end: nothing, or only whitespace
        assert!(PpmStream::new(&b""[..]).next_frame().unwrap().is_none());
        assert!(PpmStream::new(&b" \n"[..]).next_frame().unwrap().is_none());
    }
}
