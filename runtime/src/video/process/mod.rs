//! Video frame sampling and preprocessing (in progress).
