//! One-pass gzip checkpoint builder ("zran" style).
//!
//! [`GzipCheckpointer`] wraps the compressed layer and *is* a `Read` of the uncompressed tar
//! stream, so the tar walker and the checkpoint builder share a single pass over the blob:
//! while the walker reads, the checkpointer inflates with `Z_BLOCK`, records a checkpoint at
//! the block boundaries its [`Placement`] asks for (by default the first past every
//! `span_size` bytes of output), and hashes each span's compressed bytes as they stream by.
//!
//! A placement's *start* points need the last boundary at or before them, which is known only
//! once the next boundary is past them; so while starts lie ahead, every boundary is kept as
//! a candidate (its window and a fork of the running span hash) until the next one.

use crate::error::{Error, Result};
use crate::inflate::{Inflater, Status, GZIP, WINDOW_SIZE};
use crate::placement::{Placement, Planner};
use crate::sha256::Sha256;
use crate::zinfo::{Checkpoint, GzipZinfo};
use crate::SpanDigest;
use std::io::{self, Read};

const IN_BUF: usize = 256 * 1024;
const OUT_BUF: usize = 256 * 1024;

/// What the checkpointer learned about the layer once it was read to the end.
#[derive(Debug)]
pub struct GzipLayerIndex {
    /// Checkpoints, one per span, with the span size used.
    pub zinfo: GzipZinfo,
    /// `sha256:<hex>` of each span's compressed bytes.
    pub span_digests: Vec<SpanDigest>,
    /// Size of the compressed blob.
    pub compressed_size: u64,
    /// Size of the uncompressed tar stream.
    pub uncompressed_size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Inside a gzip member (its header, deflate data or trailer).
    InMember,
    /// A member ended; more members or the end of the blob follow.
    BetweenMembers,
    /// The whole blob has been consumed.
    Done,
}

/// Reads a gzip blob and yields its uncompressed bytes while building checkpoints.
pub struct GzipCheckpointer<R> {
    input: R,
    input_eof: bool,
    /// Zero padding after the last member was seen; only more zeros may follow.
    in_padding: bool,
    inflater: Inflater,
    state: State,
    in_buf: Vec<u8>,
    in_pos: usize,
    in_len: usize,
    out_buf: Vec<u8>,
    out_pos: usize,
    out_len: usize,
    /// Compressed bytes consumed by inflate (absolute offset in the blob).
    total_in: u64,
    /// Uncompressed bytes produced.
    total_out: u64,
    /// The most recent compressed byte consumed; a checkpoint with `bits != 0` needs it.
    last_in_byte: u8,
    span_size: u64,
    planner: Planner,
    /// The previous block boundary, while a start point may still make it a checkpoint.
    candidate: Option<Candidate>,
    checkpoints: Vec<Checkpoint>,
    span_digests: Vec<SpanDigest>,
    /// Hash of the current span's compressed bytes; `None` before checkpoint 0.
    span_hasher: Option<Sha256>,
    window: Box<[u8; WINDOW_SIZE]>,
}

/// A block boundary that becomes a checkpoint if a start point lies between it and the next.
struct Candidate {
    checkpoint: Checkpoint,
    /// The running span's hash up to this boundary: that span's digest if this is taken.
    span_so_far: Sha256,
    /// Hash of the compressed bytes since this boundary: the next span's, if this is taken.
    tail: Sha256,
}

impl<R: Read> GzipCheckpointer<R> {
    /// Starts reading `input`, a gzip blob, taking a checkpoint every `span_size` bytes of
    /// uncompressed output (at the next deflate block boundary).
    pub fn new(input: R, span_size: u64) -> Result<Self> {
        Self::with_placement(input, span_size, &Placement::Uniform)
    }

    /// Starts reading `input` with checkpoints where `placement` puts them, spans no longer
    /// than `span_size` (recorded as the zinfo's span size).
    pub fn with_placement(input: R, span_size: u64, placement: &Placement) -> Result<Self> {
        if span_size == 0 {
            return Err(Error::InvalidParameter("span size must be positive".into()));
        }
        let inflater = Inflater::new(GZIP).map_err(|e| Error::CorruptGzip {
            offset: 0,
            message: e.to_string(),
        })?;
        Ok(Self {
            input,
            input_eof: false,
            in_padding: false,
            inflater,
            state: State::InMember,
            in_buf: vec![0; IN_BUF],
            in_pos: 0,
            in_len: 0,
            out_buf: vec![0; OUT_BUF],
            out_pos: 0,
            out_len: 0,
            total_in: 0,
            total_out: 0,
            last_in_byte: 0,
            span_size,
            planner: Planner::new(placement, span_size),
            candidate: None,
            checkpoints: Vec::new(),
            span_digests: Vec::new(),
            span_hasher: None,
            window: Box::new([0; WINDOW_SIZE]),
        })
    }

    /// Reads (and discards) whatever uncompressed data is left, then returns the index.
    pub fn finish(mut self) -> Result<GzipLayerIndex> {
        while self.fill()? > 0 {
            self.out_pos = self.out_len;
        }
        let hasher = self.span_hasher.take().ok_or(Error::TruncatedGzip {
            offset: self.total_in,
        })?;
        self.span_digests.push(SpanDigest::from_hasher(hasher));
        Ok(GzipLayerIndex {
            zinfo: GzipZinfo {
                span_size: self.span_size,
                checkpoints: self.checkpoints,
            },
            span_digests: self.span_digests,
            compressed_size: self.total_in,
            uncompressed_size: self.total_out,
        })
    }

    /// Ensures unread output is available; returns how many bytes are buffered (0 at end).
    fn fill(&mut self) -> Result<usize> {
        loop {
            if self.out_pos < self.out_len {
                return Ok(self.out_len - self.out_pos);
            }
            self.out_pos = 0;
            self.out_len = 0;
            if self.state == State::Done {
                return Ok(0);
            }
            if self.in_pos == self.in_len && !self.input_eof {
                self.refill_input()?;
                continue;
            }
            match self.state {
                State::InMember => self.inflate_step()?,
                State::BetweenMembers => self.next_member()?,
                State::Done => {}
            }
        }
    }

    fn refill_input(&mut self) -> Result<()> {
        self.in_pos = 0;
        self.in_len = 0;
        loop {
            match self.input.read(&mut self.in_buf) {
                Ok(0) => {
                    self.input_eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.in_len = n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Io(e)),
            }
        }
    }

    /// Runs one `inflate(Z_BLOCK)` and records a checkpoint if it stopped at a suitable
    /// block boundary.
    fn inflate_step(&mut self) -> Result<()> {
        if self.total_in == 0 && self.in_pos == 0 && self.in_len > 0 {
            check_gzip_magic(&self.in_buf[..self.in_len])?;
        }
        let input = &self.in_buf[self.in_pos..self.in_len];
        let (consumed, produced, status) = self
            .inflater
            .inflate(
                input,
                &mut self.out_buf[self.out_len..],
                libz_rs_sys::Z_BLOCK,
            )
            .map_err(|e| Error::CorruptGzip {
                offset: self.total_in,
                message: e.message,
            })?;
        if consumed > 0 {
            let eaten = &self.in_buf[self.in_pos..self.in_pos + consumed];
            hash_input(&mut self.span_hasher, &mut self.candidate, eaten);
            self.last_in_byte = eaten[consumed - 1];
        }
        self.in_pos += consumed;
        self.total_in += consumed as u64;
        self.total_out += produced as u64;
        self.out_len += produced;

        if status == Status::StreamEnd {
            self.state = State::BetweenMembers;
            // The member's last block has no boundary after it: a start inside that block
            // still takes the candidate.
            self.take_candidate_for_starts();
            return Ok(());
        }
        let data_type = self.inflater.data_type();
        let at_block_boundary = data_type & 128 != 0 && data_type & 64 == 0;
        if at_block_boundary {
            self.at_block_boundary(data_type)?;
        }
        if consumed == 0 && produced == 0 && self.in_pos == self.in_len && self.input_eof {
            return Err(Error::TruncatedGzip {
                offset: self.total_in,
            });
        }
        Ok(())
    }

    /// Takes the checkpoints the placement wants at this boundary (and perhaps at the
    /// previous one), or keeps this one as a candidate.
    fn at_block_boundary(&mut self, data_type: i32) -> Result<()> {
        let Some(last) = self.checkpoints.last().map(|c| c.uncompressed_offset) else {
            let (checkpoint, next) = self.checkpoint_here(data_type)?;
            self.commit(checkpoint, next);
            return Ok(());
        };
        self.take_candidate_for_starts();
        let last = self
            .checkpoints
            .last()
            .map_or(last, |c| c.uncompressed_offset);
        if self.planner.wants_here(last, self.total_out) {
            let (checkpoint, next) = self.checkpoint_here(data_type)?;
            self.commit(checkpoint, next);
        } else if self.planner.wants_candidates() {
            let (checkpoint, tail) = self.checkpoint_here(data_type)?;
            if let Some(span_so_far) = self.span_hasher.clone() {
                self.candidate = Some(Candidate {
                    checkpoint,
                    span_so_far,
                    tail,
                });
            }
        }
        Ok(())
    }

    /// Makes the candidate a checkpoint if a start lies between it and here; drops it.
    fn take_candidate_for_starts(&mut self) {
        let Some(last) = self.checkpoints.last().map(|c| c.uncompressed_offset) else {
            return;
        };
        let candidate = self.candidate.take();
        let at = candidate.as_ref().map(|c| c.checkpoint.uncompressed_offset);
        if self.planner.starts_passed(last, at, self.total_out) {
            if let Some(c) = candidate {
                self.span_hasher = Some(c.span_so_far);
                self.commit(c.checkpoint, c.tail);
            }
        }
    }

    /// The checkpoint this block boundary would be, and the hash its span starts with.
    fn checkpoint_here(&mut self, data_type: i32) -> Result<(Checkpoint, Sha256)> {
        let bits = (data_type & 7) as u8;
        // zlib reports the unused bits of the last byte in the low three bits; anything in
        // bits 3..6 would mean the implementation buffered whole bytes, which would make the
        // recorded offset wrong. Refuse rather than write a bad index.
        if data_type & 0x38 != 0 {
            return Err(Error::CorruptGzip {
                offset: self.total_in,
                message: format!(
                    "inflate reported {} buffered bits at a block boundary",
                    data_type & 63
                ),
            });
        }
        self.inflater
            .window(&mut self.window)
            .map_err(|e| Error::CorruptGzip {
                offset: self.total_in,
                message: e.message,
            })?;
        let mut hasher = Sha256::new();
        if bits != 0 {
            // The span starts one byte early: that byte still holds `bits` undecoded bits.
            hasher.update([self.last_in_byte]);
        }
        let checkpoint = Checkpoint {
            compressed_offset: self.total_in,
            uncompressed_offset: self.total_out,
            bits,
            window: self.window.to_vec(),
        };
        Ok((checkpoint, hasher))
    }

    /// Ends the running span (if any) and starts the next at `checkpoint`.
    fn commit(&mut self, checkpoint: Checkpoint, next: Sha256) {
        if let Some(done) = self.span_hasher.replace(next) {
            self.span_digests.push(SpanDigest::from_hasher(done));
        }
        self.checkpoints.push(checkpoint);
    }

    /// After a member's end: start the next member, accept trailing zero padding, or stop.
    fn next_member(&mut self) -> Result<()> {
        if self.in_pos == self.in_len {
            if self.input_eof {
                self.state = State::Done;
            }
            return Ok(());
        }
        let rest = &self.in_buf[self.in_pos..self.in_len];
        if rest[0] == 0x1f && !self.in_padding {
            self.inflater.reset(GZIP).map_err(|e| Error::CorruptGzip {
                offset: self.total_in,
                message: e.message,
            })?;
            self.state = State::InMember;
            return Ok(());
        }
        // Some tools pad blobs with zeros after the last member (GNU gzip accepts this).
        // Those bytes belong to the last span.
        let zeros = rest.iter().take_while(|&&b| b == 0).count();
        if zeros == 0 {
            return Err(Error::TrailingGarbage {
                offset: self.total_in,
            });
        }
        hash_input(&mut self.span_hasher, &mut self.candidate, &rest[..zeros]);
        self.in_pos += zeros;
        self.total_in += zeros as u64;
        self.in_padding = true;
        if self.in_pos < self.in_len {
            // Non-zero data after zero padding is not a gzip member we can index.
            return Err(Error::TrailingGarbage {
                offset: self.total_in,
            });
        }
        Ok(())
    }
}

impl<R: Read> Read for GzipCheckpointer<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill().map_err(into_io)?;
        let n = available.min(buf.len());
        buf[..n].copy_from_slice(&self.out_buf[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }
}

/// Feeds compressed bytes to the running span hash and to a candidate's next-span hash.
fn hash_input(span: &mut Option<Sha256>, candidate: &mut Option<Candidate>, bytes: &[u8]) {
    if let Some(hasher) = span.as_mut() {
        hasher.update(bytes);
    }
    if let Some(c) = candidate.as_mut() {
        c.tail.update(bytes);
    }
}

/// Wraps a crate error in an `io::Error` so it survives a trip through `Read` consumers;
/// [`from_io`] unwraps it again.
pub(crate) fn into_io(e: Error) -> io::Error {
    match e {
        Error::Io(inner) => inner,
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

/// Recovers a crate error wrapped by [`into_io`].
pub(crate) fn from_io(e: io::Error) -> Error {
    if e.get_ref().is_none() {
        return Error::Io(e);
    }
    let kind = e.kind();
    match e.into_inner().map(|inner| inner.downcast::<Error>()) {
        Some(Ok(ours)) => *ours,
        Some(Err(other)) => Error::Io(io::Error::new(kind, other)),
        None => Error::Io(kind.into()),
    }
}

/// Gives a precise message when a layer declared as gzip is something else.
fn check_gzip_magic(head: &[u8]) -> Result<()> {
    if head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b {
        return Ok(());
    }
    let magic = hex::encode(&head[..head.len().min(4)]);
    let hint = if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "it is zstd-compressed; SOCI indexes gzip and uncompressed layers only"
    } else if head.len() > 262 && &head[257..262] == b"ustar" {
        "it is an uncompressed tar; declare it with an uncompressed layer media type"
    } else {
        "check the layer's media type"
    };
    Err(Error::NotGzip { magic, hint })
}
