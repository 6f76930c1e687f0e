//! Video decoding (in progress).
