//! A small safe wrapper over zlib's C inflate API (provided by zlib-rs's `libz-rs-sys`).
//!
//! We need the C API rather than a higher-level decoder because building and using gzip
//! checkpoints relies on `inflate(Z_BLOCK)`, `inflatePrime`, `inflateSetDictionary` and
//! `inflateGetDictionary`, which stream decoders such as `flate2`'s do not expose.

use libz_rs_sys as z;
use std::ffi::CStr;

/// Size of the deflate sliding window; every checkpoint stores this many bytes of history.
pub const WINDOW_SIZE: usize = 32768;

/// `windowBits` for a raw deflate stream (no zlib/gzip wrapper).
pub(crate) const RAW_DEFLATE: i32 = -15;
/// `windowBits` for a gzip-wrapped stream (header and trailer checked).
pub(crate) const GZIP: i32 = 15 + 16;

/// Outcome of one `inflate` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Progress was made (or more input/output space is needed).
    Ok,
    /// The end of the current deflate stream (gzip member) was reached.
    StreamEnd,
}

/// Error reported by zlib, with its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InflateError {
    pub code: i32,
    pub message: String,
}

impl std::fmt::Display for InflateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (zlib code {})", self.message, self.code)
    }
}

/// An initialised zlib inflate stream. Boxed because zlib keeps a pointer back to the
/// `z_stream` in its state and rejects calls once the struct has moved.
pub(crate) struct Inflater {
    strm: Box<z::z_stream>,
}

// SAFETY: the stream owns its state exclusively; nothing in it is tied to a thread.
unsafe impl Send for Inflater {}

impl Inflater {
    /// Creates an inflater for the given `windowBits` ([`RAW_DEFLATE`] or [`GZIP`]).
    pub fn new(window_bits: i32) -> Result<Self, InflateError> {
        let mut strm = Box::<z::z_stream>::default();
        // SAFETY: `strm` is a valid, zeroed z_stream with default allocators; the version
        // string and struct size are the ones this library was built with.
        let ret = unsafe {
            z::inflateInit2_(
                &mut *strm,
                window_bits,
                z::zlibVersion(),
                std::mem::size_of::<z::z_stream>() as i32,
            )
        };
        if ret != z::Z_OK {
            return Err(InflateError {
                code: ret,
                message: "inflateInit2 failed".into(),
            });
        }
        Ok(Self { strm })
    }

    /// Resets the stream to decode a new stream with the given `windowBits`.
    pub fn reset(&mut self, window_bits: i32) -> Result<(), InflateError> {
        // SAFETY: the stream was initialised in `new`.
        let ret = unsafe { z::inflateReset2(&mut *self.strm, window_bits) };
        self.check(ret, "inflateReset2")
    }

    /// Runs `inflate` once. Returns (input consumed, output produced, status).
    pub fn inflate(
        &mut self,
        input: &[u8],
        output: &mut [u8],
        flush: i32,
    ) -> Result<(usize, usize, Status), InflateError> {
        let avail_in = clamp_len(input.len());
        let avail_out = clamp_len(output.len());
        self.strm.next_in = input.as_ptr();
        self.strm.avail_in = avail_in;
        self.strm.next_out = output.as_mut_ptr();
        self.strm.avail_out = avail_out;
        // SAFETY: next_in/next_out point into the borrowed slices with the lengths given, and
        // both borrows outlive this call; the pointers are cleared before returning.
        let ret = unsafe { z::inflate(&mut *self.strm, flush) };
        let consumed = (avail_in - self.strm.avail_in) as usize;
        let produced = (avail_out - self.strm.avail_out) as usize;
        self.strm.next_in = std::ptr::null();
        self.strm.avail_in = 0;
        self.strm.next_out = std::ptr::null_mut();
        self.strm.avail_out = 0;
        match ret {
            z::Z_OK | z::Z_BUF_ERROR => Ok((consumed, produced, Status::Ok)),
            z::Z_STREAM_END => Ok((consumed, produced, Status::StreamEnd)),
            z::Z_NEED_DICT => Err(InflateError {
                code: ret,
                message: "stream needs a preset dictionary".into(),
            }),
            _ => Err(self.error(ret, "inflate")),
        }
    }

    /// `strm.data_type` after the last `inflate` call: unused bits in the last input byte
    /// (low 3 bits), +64 when in the last block, +128 right after a block or header boundary.
    pub fn data_type(&self) -> i32 {
        self.strm.data_type
    }

    /// Feeds `bits` (1..=7) low bits of `value` into the bit buffer before the next input.
    pub fn prime(&mut self, bits: u8, value: u8) -> Result<(), InflateError> {
        // SAFETY: the stream was initialised in `new`.
        let ret = unsafe { z::inflatePrime(&mut *self.strm, i32::from(bits), i32::from(value)) };
        self.check(ret, "inflatePrime")
    }

    /// Sets the sliding window history (only valid on a raw stream before any output).
    pub fn set_dictionary(&mut self, window: &[u8]) -> Result<(), InflateError> {
        // SAFETY: pointer and length describe the borrowed slice.
        let ret = unsafe {
            z::inflateSetDictionary(&mut *self.strm, window.as_ptr(), clamp_len(window.len()))
        };
        self.check(ret, "inflateSetDictionary")
    }

    /// Copies the current sliding window (oldest byte first) into the *end* of `window`,
    /// zero-filling the front when fewer than 32 KiB have been produced.
    pub fn window(&self, window: &mut [u8; WINDOW_SIZE]) -> Result<(), InflateError> {
        let mut len: u32 = 0;
        // SAFETY: the first call only reports the length (no copy); zlib never holds more than
        // WINDOW_SIZE bytes of history for windowBits 15, which we check before copying.
        let ret = unsafe { z::inflateGetDictionary(&*self.strm, std::ptr::null_mut(), &mut len) };
        self.check(ret, "inflateGetDictionary")?;
        let len = len as usize;
        if len > WINDOW_SIZE {
            return Err(InflateError {
                code: z::Z_STREAM_ERROR,
                message: format!("zlib reported a {len}-byte window"),
            });
        }
        let start = WINDOW_SIZE - len;
        window[..start].fill(0);
        // SAFETY: `window[start..]` has exactly `len` writable bytes.
        let ret = unsafe {
            z::inflateGetDictionary(
                &*self.strm,
                window[start..].as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        self.check(ret, "inflateGetDictionary")
    }

    fn check(&self, ret: i32, what: &str) -> Result<(), InflateError> {
        if ret == z::Z_OK {
            Ok(())
        } else {
            Err(self.error(ret, what))
        }
    }

    fn error(&self, ret: i32, what: &str) -> InflateError {
        let message = if self.strm.msg.is_null() {
            format!("{what} failed")
        } else {
            // SAFETY: zlib sets msg to a static NUL-terminated string.
            let msg = unsafe { CStr::from_ptr(self.strm.msg) };
            format!("{what}: {}", msg.to_string_lossy())
        };
        InflateError { code: ret, message }
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // SAFETY: the stream was initialised in `new` and is ended exactly once.
        unsafe {
            z::inflateEnd(&mut *self.strm);
        }
    }
}

/// zlib counts in `uInt`; callers never pass more than 4 GiB at once, but clamp to be safe.
fn clamp_len(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}
