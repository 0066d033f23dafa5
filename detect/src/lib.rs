//! dunes-detect
