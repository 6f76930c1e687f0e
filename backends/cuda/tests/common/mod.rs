//! What the NVRTC test binaries share.
#![allow(dead_code)] // each test binary uses its own subset

use vl3c_cuda::nvrtc::Nvrtc;

/// NVRTC, or `None` (after saying so loudly) where the environment opts out of NVRTC tests with
/// `VL3C_SKIP_NVRTC=1`; otherwise a missing NVRTC fails the test with its one-line message.
pub fn nvrtc_or_skip() -> Option<Nvrtc> {
    match Nvrtc::load() {
        Ok(nvrtc) => Some(nvrtc),
        Err(error) if std::env::var("VL3C_SKIP_NVRTC").is_ok_and(|v| v == "1") => {
            // Straight to the file descriptor: the test harness captures `eprintln!` of passing tests.
            let line = format!("\n*** skipped: {error} ***\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            None
        }
        Err(error) => panic!("{error}"),
    }
}
