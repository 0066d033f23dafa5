//! dunes-sim
