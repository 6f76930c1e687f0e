//! What the emulator reports. Every error is one line naming the kernel, and where it applies the
//! block, the thread and the statement path (`body[3].then[1] store out`), so a failing template
//! points at the statement to fix.

use std::fmt;

/// Where a per-thread error happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct At {
    pub kernel: String,
    pub block: [u32; 3],
    pub thread: [u32; 3],
    /// The statement path and what it was doing: `body[2].body[0] store out`.
    pub site: String,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [bx, by, bz] = self.block;
        let [tx, ty, tz] = self.thread;
        write!(
            f,
            "kernel {} block ({bx},{by},{bz}) thread ({tx},{ty},{tz}) at {}",
            self.kernel, self.site
        )
    }
}

/// Where a block-wide error (a barrier, a warp op) happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockAt {
    pub kernel: String,
    pub block: [u32; 3],
    pub site: String,
}

impl fmt::Display for BlockAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [bx, by, bz] = self.block;
        write!(
            f,
            "kernel {} block ({bx},{by},{bz}) at {}",
            self.kernel, self.site
        )
    }
}

/// Which two accesses of a race met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaceKind {
    /// Written by another thread, then written.
    WriteWrite,
    /// Written by another thread, then read.
    WriteRead,
    /// Read by another thread, then written.
    ReadWrite,
}

impl fmt::Display for RaceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RaceKind::WriteWrite => "write after another thread's write",
            RaceKind::WriteRead => "read of another thread's unsynchronised write",
            RaceKind::ReadWrite => "write over another thread's unsynchronised read",
        })
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum EmuError {
    #[error("{at}: index {index} out of bounds of {buffer} (length {len})")]
    OutOfBounds {
        at: Box<At>,
        buffer: String,
        index: i64,
        len: usize,
    },
    #[error("{at}: negative index {index} into {buffer}")]
    NegativeIndex {
        at: Box<At>,
        buffer: String,
        index: i64,
    },
    #[error("{at}: read of {buffer}[{index}], which was never written")]
    Uninitialised {
        at: Box<At>,
        buffer: String,
        index: usize,
    },
    /// `other` names the thread of the earlier access: `block (0,0,0) thread (3,0,0)`.
    #[error("{at}: race on {buffer}[{index}]: {kind} (other: {other})")]
    Race {
        at: Box<At>,
        buffer: String,
        index: usize,
        kind: RaceKind,
        other: String,
    },
    #[error("{at}: barrier reached by {active} of {threads} threads")]
    DivergentBarrier {
        at: Box<BlockAt>,
        active: u32,
        threads: u32,
    },
    #[error("{at}: warp op in warp {warp} with {active} of 32 lanes active")]
    DivergentWarpOp {
        at: Box<BlockAt>,
        warp: u32,
        active: u32,
    },
    #[error("{at}: i32 overflow in {a} {op} {b}")]
    I32Overflow {
        at: Box<At>,
        op: &'static str,
        a: i64,
        b: i64,
    },
    /// Division by zero, a shift by at least the width, or another operation C++ leaves undefined.
    #[error("{at}: undefined arithmetic: {what}")]
    UndefinedArithmetic { at: Box<At>, what: String },
    #[error("{at}: vector access of width {width} at unaligned index {index} of {buffer}")]
    Misaligned {
        at: Box<At>,
        buffer: String,
        index: i64,
        width: usize,
    },
    #[error("{at}: store into {buffer}, a read-only parameter")]
    StoreToReadOnly { at: Box<At>, buffer: String },
    #[error("kernel {kernel}: output {buffer}[{index}] was never written ({unwritten} elements unwritten)")]
    OutputNotWritten {
        kernel: String,
        buffer: String,
        index: usize,
        unwritten: usize,
    },
    #[error("kernel {kernel}: bad arguments: {reason}")]
    BadArguments { kernel: String, reason: String },
    #[error("kernel {kernel}: bad launch: {reason}")]
    BadLaunch { kernel: String, reason: String },
}
